"""Exports from the panel: findings (JSON + CSV + heatmaps on the CT grid), masks, DICOM SEG + SR,
the report draft as text, a screenshot.

No dialogs here (the panel asks for the path), so tests call these directly. Every file is
written under a temporary name and renamed into place, and never over a file the analysis read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..core.errors import FvlmInputError
from ..core.inference.session import (
    check_dicom_folder,
    check_export_folder,
    export_dicom,
    export_findings,
    refuse_sources,
)
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


def check_dicom_source(result: AnalysisResult) -> None:
    """Refuse, before asking for a folder, a CT that did not come from a DICOM series."""
    from ..core.dicom_export.series import require_dicom_ct

    require_dicom_ct(result.analysed.ct)


def check_dicom(folder, result: AnalysisResult) -> Path:
    """The resolved DICOM output folder, refused before any work (see `check_dicom_folder`)."""
    return check_dicom_folder(folder, result.analysed)


def write_dicom(folder, result: AnalysisResult, shown=()) -> list[Path]:
    """DICOM SEG + SR referencing the CT's source series, as `fvlm analyze --dicom-out` writes them;
    ``shown`` maps are exported beside the flagged findings' maps, as in `write_findings`."""
    return export_dicom(folder, result.analysed, shown)


def check_file_path(path, suffix: str, kind: str, sources: Iterable[str | None] = ()) -> Path:
    """The resolved path of a ``kind`` file, refused when it is a source file or does not end in ``suffix``."""
    path = refuse_sources(path, sources)
    if path.suffix.lower() != suffix:
        raise FvlmInputError(f"{path.name}: {kind} are saved as {suffix[1:].upper()}; end the name in {suffix}.")
    return path


def check_screenshot_path(path, sources: Iterable[str | None] = ()) -> Path:
    return check_file_path(path, ".png", "screenshots", sources)


def write_png(path, image, sources: Iterable[str | None] = ()) -> Path:
    """An RGB(A) image array as a PNG file (encoding is the slow part: run it off the GUI thread)."""
    import imageio.v3 as iio

    path = check_screenshot_path(path, sources)
    return write_atomic(path, iio.imwrite("<bytes>", image, extension=".png"))


def check_report_path(path, sources: Iterable[str | None] = ()) -> Path:
    return check_file_path(path, ".txt", "report drafts", sources)


def write_report(path, text: str, sources: Iterable[str | None] = ()) -> Path:
    """The report draft as the user left it, headed by the research-use notice, as a .txt file."""
    from ..core.report.draft import with_notice

    return write_atomic(check_report_path(path, sources), with_notice(text).encode("utf-8"))
