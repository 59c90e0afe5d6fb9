"""`fvlm analyze --dicom-out`, `fvlm report` and `fvlm compare` end to end, with the demo weights on
a phantom written as a DICOM series."""

from __future__ import annotations

import pydicom
import pytest

from napari_fvlm.cli import main
from napari_fvlm.core.dicom_export.write import ANATOMY_SEG, FINDINGS_SR
from napari_fvlm.core.io.dicom import read_dicom_series
from napari_fvlm.core.io.nifti import write_nifti
from napari_fvlm.core.phantom import generate_phantom, write_phantom

from dicom_fixtures import SeriesGeometry, write_phantom_series

pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """(folder, exit code, captured output) of `fvlm analyze` of a DICOM phantom with --dicom-out."""
    folder = tmp_path_factory.mktemp("dicom-cli")
    phantom = generate_phantom(5, shape=(48, 112, 112), spacing_zyx=(5.0, 3.0, 3.0), findings=["cardiomegaly"])
    geometry = SeriesGeometry(pixel_spacing=(3.0, 3.0), slice_offsets=[5.0 * k for k in range(48)])
    write_phantom_series(folder, phantom, geometry)
    write_nifti(read_dicom_series(folder / "labels"), folder / "anatomy.nii.gz")
    return folder


def _analyze(folder, capsys, ct, *extra):
    code = main(["analyze", str(ct), "--masks", str(folder / "anatomy.nii.gz"), "--model", "demo",
                 "--device", "cpu", "--out", str(folder / "out"), *extra])
    return code, capsys.readouterr()


def test_analyze_writes_dicom_results_referencing_the_series(analysed, capsys):
    code, captured = _analyze(analysed, capsys, analysed / "ct", "--dicom-out", str(analysed / "dicom"))
    assert code == 0, captured.err
    assert "DICOM results written" in captured.out
    names = {p.name for p in (analysed / "dicom").iterdir()}
    assert {ANATOMY_SEG, FINDINGS_SR} <= names
    seg = pydicom.dcmread(analysed / "dicom" / ANATOMY_SEG)
    ct_series = pydicom.dcmread(next((analysed / "ct").iterdir()), stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == ct_series.FrameOfReferenceUID
    assert seg.StudyInstanceUID == ct_series.StudyInstanceUID

    assert main(["report", str(analysed / "out")]) == 0
    draft = capsys.readouterr().out
    assert draft.startswith("Research use only") and "Heart:" in draft
    assert main(["compare", str(analysed / "out"), str(analysed / "out" / "findings.json")]) == 0
    table = capsys.readouterr().out
    assert " new " not in table and "resolved" not in table


def test_dicom_out_for_a_nifti_ct_is_refused_before_any_work(tmp_path, capsys):
    write_phantom(generate_phantom(5, shape=(48, 112, 112), spacing_zyx=(5.0, 3.0, 3.0), findings=[]), tmp_path)
    code = main(["analyze", str(tmp_path / "ct.nii.gz"), "--masks", str(tmp_path / "anatomy.nii.gz"),
                 "--out", str(tmp_path / "out"), "--dicom-out", str(tmp_path / "dicom")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "DICOM series" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "dicom").exists()


def test_report_of_a_missing_analysis_is_one_clear_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "No findings.json" in capsys.readouterr().err
