"""Published files and folders get the usual permissions, not the owner-only ones of `tempfile`."""

from __future__ import annotations

import os

from napari_fvlm.core.inference.export import staged_output
from napari_fvlm.core.io.files import write_atomic


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_files_and_staged_folders_have_the_modes_open_and_mkdir_would_give(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_atomic(tmp_path / "atomic.txt", b"x")
    assert written.read_bytes() == b"x"
    assert (written.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o666 & ~_umask()
    with staged_output(tmp_path / "out") as staging:
        (staging / "findings.json").write_text("{}")
    (tmp_path / "made").mkdir()
    assert ((tmp_path / "out").stat().st_mode & 0o777) == ((tmp_path / "made").stat().st_mode & 0o777)
