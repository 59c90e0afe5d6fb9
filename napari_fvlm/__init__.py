"""napari-fvlm: fVLM anatomy-level CT vision-language scores, heatmaps and grounding in napari."""

from __future__ import annotations

import functools


@functools.cache
def _version() -> str:
    """The installed distribution's version; in a source tree never installed, pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-fvlm")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
        found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
        return found.group(1) if found else "0+unknown"


def __getattr__(name: str):
    # `__version__` is looked up on first use: importlib.metadata costs the `fvlm` command's start-up.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
