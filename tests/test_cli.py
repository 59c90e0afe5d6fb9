"""`fvlm phantom`, `fvlm convert-official` and `fvlm download` from the command line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm.cli import main
from napari_fvlm.core.errors import FvlmInputError


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


def test_download_fetches_the_pinned_revision_of_fvlm_b(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from napari_fvlm.core.inference.models import HUB_MODELS, resolve_model_source

    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs["local_files_only"]:
            raise LocalEntryNotFoundError("not cached")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    repo_id, revision = HUB_MODELS["fvlm-b"]
    assert revision  # a pinned revision, never the moving default branch

    assert main(["download", "fvlm-b"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)
    assert calls[-1][0] == repo_id
    assert calls[-1][1]["revision"] == revision and calls[-1][1]["local_files_only"] is False

    with pytest.raises(FvlmInputError, match=f"at revision {revision} .*`fvlm download fvlm-b`"):
        resolve_model_source("fvlm-b")  # offline: the local cache, at the same revision
    assert calls[-1][1]["revision"] == revision and calls[-1][1]["local_files_only"] is True
