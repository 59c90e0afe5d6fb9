"""Exports from the panel: findings (JSON + CSV + heatmaps on the CT grid), masks, a screenshot.

No dialogs here (the panel asks for the path), so tests call these directly. Every file is
written under a temporary name and renamed into place, and never over a file the analysis read.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ..core.errors import FvlmInputError
from ..core.io.files import write_atomic
from .jobs import AnalysisResult
from .results_table import table_rows


def source_paths(result: AnalysisResult) -> list[str]:
    """Files the analysis read (the CT, the masks): exports must never replace them."""
    paths = [result.request.anatomy.path]
    for volume in (result.request.ct, result.request.anatomy.labels, result.labels):
        if volume is not None and volume.source is not None:
            paths.append(volume.source.path)
    return [p for p in paths if p]


def refuse_sources(target, sources: Iterable[str | None]) -> Path:
    """``target`` resolved; refused when it is, or (for a folder) holds, one of ``sources``."""
    target = Path(target).expanduser().resolve()
    for source in sources:
        if not source:
            continue
        source = Path(source).expanduser().resolve()
        if target == source:
            raise FvlmInputError(f"{target.name} is the file the analysis was read from; "
                                 "choose another name so the original stays untouched.")
        if target in source.parents:
            raise FvlmInputError(f"{target.name} holds {source.name}, which the analysis was read from; "
                                 "choose another folder so the original stays untouched.")
    return target


def check_findings_folder(folder, result: AnalysisResult) -> Path:
    """The resolved output folder, refused before any work when it holds a source or foreign files."""
    from ..core.inference.export import check_out_dir

    folder = refuse_sources(folder, source_paths(result))
    check_out_dir(folder)
    return folder


def findings_csv(analysis) -> str:
    """CSV text in the table's order: rank, anatomy, finding, raw and calibrated probability, the
    threshold on the calibrated scale and the flag (the last three empty when not calibrated)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "anatomy", "finding", "raw_probability", "calibrated_probability", "threshold",
                     "above_threshold"])
    for row in table_rows(analysis.scores, analysis.calibrated):
        scored = row.calibrated
        calibrated = ["", "", ""] if scored is None else [f"{scored.probability:.6f}", f"{scored.threshold:.6f}",
                                                          "yes" if scored.above else "no"]
        writer.writerow([row.rank, row.anatomy, row.finding, f"{row.raw:.6f}", *calibrated])
    return out.getvalue()


def write_findings(folder, result: AnalysisResult, queries=(), shown=()) -> Path:
    """findings.json, findings.csv and heatmaps/*.nii.gz (the CT's own grid and affine) in ``folder``.

    ``queries`` are the groundings to include; ``shown`` (anatomy, finding) pairs whose maps the user
    looked at are exported beside the maps of every flagged finding (`top_finding_heatmaps`).
    """
    from ..analyze import heatmap_info, top_finding_heatmaps
    from ..core.inference.export import write_analysis

    folder = check_findings_folder(folder, result)
    queries = list(queries)
    analysis = replace(result.analysis, queries=queries)
    heatmaps = {f"query:{i}": (g.heatmap, {"query": g.text}) for i, g in enumerate(queries)}
    heatmaps.update(top_finding_heatmaps(result.analyzer, result.encoded, analysis))
    for anatomy, finding in shown:
        key = f"finding:{finding}:{anatomy}"
        if finding in analysis.scores.get(anatomy, {}) and not any(
                info.get("finding") == finding and info.get("anatomy") == anatomy for _map, info in heatmaps.values()):
            heatmaps[key] = (result.analyzer.finding_heatmap(result.encoded, anatomy, finding),
                             heatmap_info(analysis, anatomy, finding))
    extra = {"masks": {"source": result.request.anatomy.description}}
    write_analysis(folder, result.request.ct, analysis, heatmaps, result.model_info, extra)
    write_atomic(folder / "findings.csv", findings_csv(analysis).encode())
    return folder


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

