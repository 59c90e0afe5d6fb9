"""`fvlm phantom` and `fvlm convert-official` from the command line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from napari_fvlm.cli import main


def test_phantom_command_writes_the_documented_files(tmp_path, capsys):
    out = tmp_path / "case"
    code = main(["phantom", "--out", str(out), "--seed", "5", "--finding", "lung nodule:left",
                 "--finding", "pleural effusion:right"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["anatomy.nii.gz", "ct.nii.gz", "labels.json",
                                                     "lesions.nii.gz", "report.txt"]
    labels = json.loads((out / "labels.json").read_text())
    assert {f["name"] for f in labels["findings"]} == {"lung nodule", "pleural effusion"}
    nodule = next(f for f in labels["findings"] if f["name"] == "lung nodule")
    assert nodule["side"] == "left" and nodule["center_world_mm"][0] < 0  # RAS: left is -x
    ct, lesions = nib.load(out / "ct.nii.gz"), nib.load(out / "lesions.nii.gz")
    assert ct.get_data_dtype() == np.int16
    np.testing.assert_array_equal(ct.affine, lesions.affine)
    values = set(np.unique(np.asanyarray(lesions.dataobj)).tolist()) - {0}
    assert values == {f["lesion_label"] for f in labels["findings"]}
    report = (out / "report.txt").read_text()
    assert "IMPRESSION" in report and "nodule" in report.lower()


def test_phantom_command_refuses_unknown_findings(tmp_path, capsys):
    code = main(["phantom", "--out", str(tmp_path / "x"), "--finding", "broken leg"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "lung nodule" in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_convert_official_refuses_clearly(tmp_path, capsys):
    code = main(["convert-official", str(tmp_path / "missing.pth"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing.pth" in err
    assert not (tmp_path / "out").exists()
