"""Progress and cancel plumbing for every long job (reading masks, TotalSegmentator, encoding).

A job reports ``progress(fraction, message)`` from its own thread and checks a `threading.Event`
between steps; a set event stops it with `Cancelled`, and nothing is produced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Progress = Callable[[float, str], None]


class Cancelled(Exception):
    """The caller cancelled a job; nothing was produced."""


def check_cancel(cancel: threading.Event | None, what: str = "The analysis") -> None:
    """Raise `Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled.")


def span(progress: Progress | None, low: float, high: float) -> Progress | None:
    """A progress callback for one stage that maps its 0..1 onto low..high of the whole job."""
    if progress is None:
        return None
    return lambda fraction, message: progress(low + (high - low) * float(fraction), message)
