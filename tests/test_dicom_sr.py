"""The findings as a TID 1500 Measurement Report: built and checked by highdicom, read back through
its template parser, every group's finding, site, side, probability and Present/Absent equal to the
findings table, and its region the anatomy's segment of the anatomy SEG written beside it."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from napari_fvlm.core.dicom_export.codes import finding_code
from napari_fvlm.core.dicom_export.write import (
    ANATOMY_SEG,
    FINDINGS_SR,
    PROBABILITY_SEG,
    REGIONS_SEG,
    write_dicom_results,
)
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.calibration import Calibration, PlattMap, calibrated_scores
from napari_fvlm.core.inference.findings import findings_for
from napari_fvlm.core.io.dicom import read_dicom_series
from napari_fvlm.core.phantom import generate_phantom
from napari_fvlm.core.report.table import FindingsTable

from dicom_fixtures import SeriesGeometry, write_phantom_series

hd = pytest.importorskip("highdicom")
SCORED = ("lung_left", "lung_lower_lobe_left", "lung_right", "heart", "aorta", "liver")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    phantom = generate_phantom(4, shape=(48, 112, 112), spacing_zyx=(5.0, 3.0, 3.0), findings=["cardiomegaly"])
    folder = tmp_path_factory.mktemp("sr")
    geometry = SeriesGeometry(pixel_spacing=(3.0, 3.0), slice_offsets=[5.0 * k for k in range(48)])
    write_phantom_series(folder, phantom, geometry)
    return read_dicom_series(folder / "ct"), read_dicom_series(folder / "labels")


def table(calibrated: bool) -> FindingsTable:
    """Raw scores rising through the table; findings with a threshold of 0.3 on the raw scale,
    "emphysema" not separated by the model (never above)."""
    raw = iter(np.linspace(0.05, 0.95, 64))
    scores = {a: {f: round(float(next(raw)), 4) for f in findings_for(a, "phantom")} for a in SCORED}
    maps = {f: PlattMap(1.0, 0.0, 0.3, 10, 90, 0.5 if f == "emphysema" else 0.9)
            for a in SCORED for f in findings_for(a, "phantom")}
    calibration = Calibration({}, maps, min_auc=0.7) if calibrated else None
    return FindingsTable(scores, calibrated_scores(scores, calibration), calibrated, "fine", "demo")


def _read_groups(path):
    """The volumetric ROI groups of a written SR, parsed back through highdicom's TID 1500 classes."""
    report = hd.sr.srread(path)
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert report.VerificationFlag == "UNVERIFIED" and report.CompletionFlag == "PARTIAL"
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    parsed = hd.sr.MeasurementReport.from_sequence(report.content)
    return parsed.get_volumetric_roi_measurement_groups()


def _anatomy_segments(path) -> dict[int, str]:
    seg = hd.seg.segread(path)
    return {int(d.SegmentNumber): str(d.TrackingID).removeprefix("anatomy ") for d in seg.SegmentSequence}


@pytest.fixture(scope="module")
def written(series, tmp_path_factory) -> dict:
    """{calibrated: (folder, written paths)}: the results of each table, written once (seconds each)."""
    ct, labels = series
    folders = {calibrated: tmp_path_factory.mktemp("sr-written") / "dicom" for calibrated in (True, False)}
    return {calibrated: (folder, write_dicom_results(folder, ct, labels, table(calibrated), maps=[]))
            for calibrated, folder in folders.items()}


@pytest.mark.parametrize("calibrated", [True, False])
def test_sr_holds_the_findings_table(written, calibrated):
    findings = table(calibrated)
    folder, paths = written[calibrated]
    assert sorted(p.name for p in paths) == sorted([ANATOMY_SEG, FINDINGS_SR])
    segments = _anatomy_segments(folder / ANATOMY_SEG)
    anatomy_seg_uid = str(pydicom.dcmread(folder / ANATOMY_SEG).SOPInstanceUID)
    groups = _read_groups(folder / FINDINGS_SR)
    expected = {(a, f) for a, row in findings.scores.items() for f in row}
    assert len(groups) == len(expected)
    seen = set()
    for group in groups:
        finding, _, anatomy = group.tracking_identifier.partition(" in ")
        seen.add((anatomy, finding))
        code = finding_code(finding)
        assert (group.finding_type.value, group.finding_type.scheme_designator) == (code.value, code.scheme_designator)
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == anatomy_seg_uid
        assert segments[segment.referenced_segment_numbers[0]] == anatomy
        site = group.finding_sites[0]
        side = {"lung_left": "Left", "lung_lower_lobe_left": "Left", "lung_right": "Right"}.get(anatomy)
        assert (site.laterality.meaning if site.laterality else None) == side
        (probability,) = group.get_measurements()
        scored = findings.score(anatomy, finding)
        value = scored.probability if calibrated else findings.scores[anatomy][finding]
        assert probability.value == pytest.approx(value, abs=1e-6)
        evaluations = group.get_qualitative_evaluations()
        if calibrated:
            assert [e.value.meaning for e in evaluations] == ["Present" if scored.above else "Absent"]
        else:
            assert evaluations == []
    assert seen == expected
    if calibrated:  # the table has both kinds, and the unseparated finding is never above
        assert {s.above for row in findings.calibrated.values() for s in row.values()} == {True, False}
        assert not any(s.above for a, row in findings.calibrated.items() for f, s in row.items() if f == "emphysema")


def test_finding_maps_give_region_and_probability_segmentations(series, tmp_path):
    ct, labels = series
    heart = labels.array == 51  # TotalSegmentator `total` id of the heart
    values = np.where(heart, 0.8, 0.1).astype(np.float32)
    paths = write_dicom_results(tmp_path / "dicom", ct, labels, table(True),
                                maps=[("heart", "cardiomegaly", values, 0.5)])
    assert sorted(p.name for p in paths) == sorted([ANATOMY_SEG, REGIONS_SEG, PROBABILITY_SEG, FINDINGS_SR])
    regions = hd.seg.segread(tmp_path / "dicom" / REGIONS_SEG)
    volume = regions.get_volume(combine_segments=False)
    assert int(volume.array.sum()) == int(heart.sum())
    probabilities = hd.seg.segread(tmp_path / "dicom" / PROBABILITY_SEG)
    assert probabilities.SegmentationType == "FRACTIONAL"
    label = probabilities.get_segment_description(1).SegmentLabel
    assert label == "cardiomegaly probability, heart"


def test_an_earlier_output_is_replaced_and_a_foreign_folder_refused(series, written, tmp_path):
    ct, labels = series
    out = tmp_path / "dicom"
    shutil.copytree(written[True][0], out)  # an earlier output
    earlier = pydicom.dcmread(out / FINDINGS_SR).SOPInstanceUID
    write_dicom_results(out, ct, labels, table(False), maps=[])
    assert pydicom.dcmread(out / FINDINGS_SR).SOPInstanceUID != earlier
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FvlmInputError, match="other files"):
        write_dicom_results(out, ct, labels, table(True), maps=[])
    assert (out / "notes.txt").read_text() == "mine"
