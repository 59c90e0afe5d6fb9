"""Write an analysis's DICOM results into one folder, atomically (as findings.json is written).

``anatomy_seg.dcm``: the model's anatomies found in the masks (BINARY); ``finding_regions_seg.dcm``:
where each finding map reaches its threshold (BINARY); ``finding_probabilities_seg.dcm``: the maps
(FRACTIONAL, PROBABILITY); ``findings_sr.dcm``: the findings table (TID 1500). The last three are
left out when there is nothing to put in them (no finding map; no region reaching its threshold).
"""

from __future__ import annotations

from pathlib import Path

from ..inference.export import check_out_dir, heatmap_on_ct_grid, staged_output
from ..report.table import FindingsTable
from ..volume import Volume
from .seg import anatomy_segments, build_segmentation, finding_segments
from .series import source_series

ANATOMY_SEG, REGIONS_SEG, PROBABILITY_SEG, FINDINGS_SR = (
    "anatomy_seg.dcm", "finding_regions_seg.dcm", "finding_probabilities_seg.dcm", "findings_sr.dcm")
DICOM_OUTPUTS = {ANATOMY_SEG, REGIONS_SEG, PROBABILITY_SEG, FINDINGS_SR}
SERIES_NUMBERS = {ANATOMY_SEG: 9001, REGIONS_SEG: 9002, PROBABILITY_SEG: 9003, FINDINGS_SR: 9004}


def finding_maps(heatmaps: dict, ct: Volume, uncalibrated_threshold: float) -> list[tuple]:
    """[(anatomy, finding, probabilities on the CT grid, threshold)] of the finding heatmaps among
    ``heatmaps`` ({key: (Heatmap, info)} as `write_analysis` takes them; queries are left out).
    A calibrated map's threshold is its finding's; an uncalibrated one's ``uncalibrated_threshold``."""
    out = []
    for heatmap, info in heatmaps.values():
        if "finding" in info and "anatomy" in info:
            threshold = heatmap.threshold if heatmap.threshold is not None else uncalibrated_threshold
            out.append((info["anatomy"], info["finding"], heatmap_on_ct_grid(heatmap, ct), threshold))
    return out


def dicom_results(ct: Volume, labels: Volume, table: FindingsTable, maps) -> dict:
    """{file name: highdicom object} for the analysis (see the module docstring); the anatomies are
    those the table scores."""
    series = source_series(ct)
    common = {"model_name": table.model_name}
    anatomy = build_segmentation(series, anatomy_segments(labels, table.group_set, table.scores), fractional=False,
                                 description="fVLM anatomy", series_number=SERIES_NUMBERS[ANATOMY_SEG], **common)
    objects = {ANATOMY_SEG: anatomy}
    regions = [s for s in finding_segments(maps, table.group_set, regions=True) if s.values.any()]
    if regions:
        objects[REGIONS_SEG] = build_segmentation(series, regions, fractional=False, description="fVLM finding regions",
                                                  series_number=SERIES_NUMBERS[REGIONS_SEG], **common)
    if maps:
        objects[PROBABILITY_SEG] = build_segmentation(
            series, finding_segments(maps, table.group_set, regions=False), fractional=True,
            description="fVLM finding probabilities", series_number=SERIES_NUMBERS[PROBABILITY_SEG], **common)
    from .sr import findings_report

    objects[FINDINGS_SR] = findings_report(series, table, anatomy, series_number=SERIES_NUMBERS[FINDINGS_SR])
    return objects


def write_dicom_results(out, ct: Volume, labels: Volume, table: FindingsTable, maps) -> list[Path]:
    """Write `dicom_results` into the folder ``out`` (new, empty, or an earlier DICOM output, which
    is replaced whole); returns the written paths. A folder holding other files is refused before
    the objects are built (seconds of work)."""
    check_out_dir(Path(out), DICOM_OUTPUTS)
    objects = dicom_results(ct, labels, table, maps)
    with staged_output(out, DICOM_OUTPUTS) as staging:
        for name, dataset in objects.items():
            dataset.save_as(staging / name, enforce_file_format=True)
    return [Path(out) / name for name in objects]


def write_analysis_dicom(out, ct: Volume, labels: Volume, analysis, config, heatmaps: dict,
                         uncalibrated_threshold: float) -> list[Path]:
    """`write_dicom_results` for an `Analysis` of ``ct`` (``labels`` on any grid of the same scan;
    ``heatmaps`` as `write_analysis` takes them)."""
    from ..anatomy.align import align_labels

    table = FindingsTable.from_analysis(analysis, config)
    maps = finding_maps(heatmaps, ct, uncalibrated_threshold)
    return write_dicom_results(out, ct, align_labels(ct, labels), table, maps)
