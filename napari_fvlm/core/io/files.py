"""Writing files so that no reader ever sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once, at import


def usual_mode(path: str | Path, directory: bool = False) -> None:
    """Give a file or folder made through `tempfile` (owner-only: 0600 / 0700) the mode a plain
    ``open`` or ``mkdir`` would have given it, so published results are readable as usual."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling, then rename it over ``path`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        usual_mode(tmp)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
