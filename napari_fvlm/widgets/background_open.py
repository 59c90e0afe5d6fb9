"""Open a CT (NIfTI file or DICOM folder) without freezing the window.

napari calls readers on the GUI thread, so a 512 x 512 x 300 file dropped on the viewer holds it
for the whole read (about a second, more on a busy CPU). Here the file is read and decoded in a
worker; only adding the finished layer happens on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable


def read_layer_data(path: str) -> list[tuple]:
    """The layer data tuples for ``path`` (runs in the worker; bad input raises FvlmInputError)."""
    from .._layers import layer_name, volume_layer_data
    from ..core.io.read import read_volume

    return [volume_layer_data(read_volume(str(path)), layer_name(path))]


def open_in_background(viewer, path, done: Callable[[list], None] | None = None,
                       refused: Callable[[str], None] | None = None):
    """Read ``path`` in a worker, then add its layers to ``viewer``; returns the started worker.

    ``done(layers)`` gets the added layers; ``refused(message)`` a one-line reason (bad input).
    """
    from napari.qt.threading import create_worker

    from ..core.errors import FvlmInputError

    def body():
        try:
            return read_layer_data(path)
        except FvlmInputError as err:
            return str(err)

    def add(outcome) -> None:
        if isinstance(outcome, str):
            if refused is not None:
                refused(outcome)
            return
        layers = [getattr(viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in outcome]
        if done is not None:
            done(layers)

    worker = create_worker(body, _start_thread=False)
    worker.returned.connect(add)
    worker.start()
    return worker
