"""Exports from the panel: findings (JSON + CSV + heatmaps on the CT grid), masks, a screenshot.

No dialogs here (the panel asks for the path), so tests call these directly. Every file is
written under a temporary name and renamed into place, and never over a file the analysis read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..core.errors import FvlmInputError
from ..core.inference.session import check_export_folder, export_findings, refuse_sources
from ..core.io.files import write_atomic
from .jobs import AnalysisResult


def source_paths(result: AnalysisResult) -> list[str]:
    """Files the analysis read (the CT, the masks): exports must never replace them."""
    return result.analysed.source_paths()


def check_findings_folder(folder, result: AnalysisResult) -> Path:
    """The resolved output folder, refused before any work when it holds a source or foreign files."""
    return check_export_folder(folder, result.analysed)


def write_findings(folder, result: AnalysisResult, queries=(), shown=()) -> Path:
    """findings.json, findings.csv and heatmaps/*.nii.gz, as `fvlm analyze` writes them, in ``folder``.

    ``queries`` are the groundings to include; ``shown`` (anatomy, finding) pairs whose maps the user
    looked at are exported beside the maps of every flagged finding.
    """
    return export_findings(folder, result.analysed, list(queries), shown)


def write_masks(path, result: AnalysisResult) -> Path:
    """The anatomy masks as NIfTI in the CT's original geometry (voxel order, affine), with names."""
    from ..core.io.nifti import write_nifti

    path = refuse_sources(path, source_paths(result))
    return write_nifti(result.labels, path)


def check_screenshot_path(path, sources: Iterable[str | None] = ()) -> Path:
    """The resolved PNG path, refused when it is a source file or not a .png name."""
    path = refuse_sources(path, sources)
    if path.suffix.lower() != ".png":
        raise FvlmInputError(f"{path.name}: screenshots are saved as PNG; end the name in .png.")
    return path


def write_png(path, image, sources: Iterable[str | None] = ()) -> Path:
    """An RGB(A) image array as a PNG file (encoding is the slow part: run it off the GUI thread)."""
    import imageio.v3 as iio

    path = check_screenshot_path(path, sources)
    return write_atomic(path, iio.imwrite("<bytes>", image, extension=".png"))

