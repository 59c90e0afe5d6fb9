"""`fvlm analyze`: the documented outputs, exact geometry of heatmaps, and every refusal."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm.cli import main
from napari_fvlm.core.errors import FvlmInputError

from engine_fixtures import save_random_demo_model


@pytest.fixture(scope="module")
def case(synthetic_case):
    return synthetic_case


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_analyze_writes_findings_and_heatmaps_on_the_ct_grid(case, analysed_case):
    folder, _model = case
    out = analysed_case  # `fvlm analyze` of the case with CASE_QUERIES (conftest)
    doc = json.loads((out / "findings.json").read_text())
    assert doc["anatomies"]["heart"]["findings"]["cardiomegaly"] > 0
    assert set(doc["anatomies"]) >= {"lung_left", "lung_right", "heart", "aorta", "liver"}
    assert doc["model"]["name"] == "demo" and "config" in doc["model"] and doc["timing_s"]["total"] > 0
    assert [q["text"] for q in doc["queries"]] == ["nodule in the left lower lobe", "fluid around the heart"]
    first = doc["queries"][0]
    assert first["peak_anatomy"] == "lung_lower_lobe_left" and len(first["peak_world_mm"]) == 3
    assert first["peak_world_mm"][0] < 0  # the patient's left is RAS -x
    original = nib.load(folder / "ct.nii.gz")
    for query in doc["queries"]:
        heatmap = nib.load(out / query["heatmap"])
        assert heatmap.shape == original.shape
        np.testing.assert_array_equal(heatmap.affine, original.affine)
        values = np.asanyarray(heatmap.dataobj)
        # probabilities, never rescaled: the exported map (stored in 1/255 steps) peaks at the query's peak
        assert values.min() >= 0 and 0 < values.max() <= query["peak_probability"] + 1 / 255 and values.max() <= 1.0


def test_analyze_replaces_its_own_earlier_output(case, analysed_case, tmp_path, capsys):
    folder, model = case
    out = tmp_path / "again"
    shutil.copytree(analysed_case, out)  # an earlier output, with two query maps
    earlier = [q["heatmap"] for q in json.loads((out / "findings.json").read_text())["queries"]]
    assert len(earlier) == 2 and all((out / name).is_file() for name in earlier)
    args = ["analyze", folder / "ct.nii.gz", "--masks", folder / "anatomy.nii.gz", "--model", model]
    assert _run(capsys, *args, "--out", out)[0] == 0
    assert json.loads((out / "findings.json").read_text())["queries"] == []
    assert not any((out / name).exists() for name in earlier)


def _pickle_bomb(path: Path, marker: Path) -> None:
    class Bomb:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    path.write_bytes(pickle.dumps(Bomb()))


def _bad_cases(folder: Path, model: str, tmp: Path) -> dict[str, tuple[list, str]]:
    ct, masks = folder / "ct.nii.gz", folder / "anatomy.nii.gz"
    base = ["--masks", str(masks)]
    truncated = tmp / "truncated_model"
    save_random_demo_model(truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    mismatched = tmp / "mismatched_model"
    save_random_demo_model(mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["model"]["width"] = 256
    (mismatched / "config.json").write_text(json.dumps(config))
    _pickle_bomb(tmp / "model.pth", tmp / "PWNED")
    moved = tmp / "moved_masks.nii.gz"
    image = nib.load(masks)
    shifted = image.affine.copy()
    shifted[2, 3] += 3000
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), shifted), moved)
    head = tmp / "head_masks.nii.gz"
    head_labels = np.zeros(image.shape, np.uint8)
    head_labels[5:20, 5:20, 5:20] = 90  # brain
    head_labels[5:20, 5:20, 20:25] = 91  # skull
    nib.save(nib.Nifti1Image(head_labels, image.affine), head)
    binary = tmp / "binary_mask.nii.gz"
    nib.save(nib.Nifti1Image((head_labels == 90).astype(np.uint8), image.affine), binary)
    a_file = tmp / "not_a_folder"
    a_file.write_text("x")
    return {
        "missing CT": ([str(tmp / "nope.nii.gz"), *base, "--model", model], "cannot read"),
        "pickle model": ([str(ct), *base, "--model", str(tmp / "model.pth")], "pickle"),
        "truncated weights": ([str(ct), *base, "--model", str(truncated)], "safetensors"),
        "config/weights mismatch": ([str(ct), *base, "--model", str(mismatched)], "match"),
        "masks of another scan": ([str(ct), "--masks", str(moved), "--model", model], "another scan"),
        "no model anatomies": ([str(ct), "--masks", str(head), "--model", model], "head CT"),
        "a binary mask": ([str(ct), "--masks", str(binary), "--model", model], "not taken as `total` class 1"),
        "empty query": ([str(ct), *base, "--model", model, "--query", "  "], "Type a finding"),
        "10,000-character query": ([str(ct), *base, "--model", model, "--query", "a" * 10_000], "characters"),
        "a statement of normality": ([str(ct), *base, "--model", model, "--query", "no abnormality"],
                                     "states normality"),
        "labels given as the CT": ([str(masks), *base, "--model", model], "labels"),
        "out is a file": ([str(ct), *base, "--model", model], "is a file"),
    }


def test_bad_input_gives_one_line_nonzero_exit_and_writes_nothing(case, tmp_path, capsys):
    folder, model = case
    for name, (args, words) in _bad_cases(folder, model, tmp_path).items():
        out = tmp_path / "not_a_folder" if name == "out is a file" else tmp_path / f"out_{len(name)}"
        code, stdout, err = _run(capsys, "analyze", *args, "--out", out)
        assert code != 0, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and words.lower() in lines[0].lower(), (name, err)
        assert "Traceback" not in err
        if name != "out is a file":
            assert not out.exists(), name
    assert not (tmp_path / "PWNED").exists(), "the pickle's code ran"
    assert not list(tmp_path.glob(".out_*")), "a staging folder was left behind"


@pytest.mark.slow
def test_the_command_process_writes_everything_before_its_fast_exit(case, tmp_path):
    folder, model = case
    out = tmp_path / "result"
    result = subprocess.run([sys.executable, "-m", "napari_fvlm.cli", "analyze", str(folder / "ct.nii.gz"),
                             "--masks", str(folder / "anatomy.nii.gz"), "--model", model, "--query", "nodule",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("analysis of ") and result.stdout.endswith("useful as ranks only\n")  # flushed
    doc = json.loads((out / "findings.json").read_text())
    for query in doc["queries"]:
        assert nib.load(out / query["heatmap"]).shape == nib.load(folder / "ct.nii.gz").shape


def test_the_installed_command_reports_bad_input_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "napari_fvlm.cli", "analyze", str(tmp_path / "nope.nii.gz"),
                             "--masks", str(tmp_path / "m.nii.gz"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_analyze_without_masks_on_a_gpu_machine_asks_totalsegmentator_for_its_gpu(
        case, standin_totalseg_home, tmp_path, capsys, monkeypatch):
    """torch calls the GPU "cuda", TotalSegmentator "gpu": resolved once, named right at each edge."""
    import torch

    from napari_fvlm.core.anatomy.totalseg import TotalSegmentatorProvider
    from napari_fvlm.core.inference import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, faked
    loaded, commands = [], []
    monkeypatch.setattr(models, "load_analyzer", lambda source, device, download=False, protocol=None: loaded.append(device))

    def run_worker(self, command, tmp, report, cancel):
        commands.append(command)
        raise FvlmInputError("stopped where the worker would start")

    monkeypatch.setattr(TotalSegmentatorProvider, "_run", run_worker)
    folder, model = case
    code, _out, err = _run(capsys, "analyze", folder / "ct.nii.gz", "--model", model, "--out", tmp_path / "o")
    assert code == 2 and "stopped where the worker would start" in err, err
    assert loaded == ["cuda"]
    command = commands[0]
    assert command[command.index("--device") + 1] == "gpu"


def test_analyze_warns_when_the_image_is_not_ct(case, tmp_path, capsys):
    from napari_fvlm.core.io.nifti import read_nifti, write_nifti

    folder, model = case
    ct = read_nifti(folder / "ct.nii.gz")
    write_nifti(ct, tmp_path / "mri.nii.gz", np.clip(ct.array + 1024, 0, None).astype(np.int16))  # no negatives
    code, out, err = _run(capsys, "analyze", tmp_path / "mri.nii.gz", "--masks", folder / "anatomy.nii.gz",
                          "--model", model, "--out", tmp_path / "o")
    assert code == 0, err
    assert "mri.nii.gz does not look like a CT in Hounsfield units: its values (0.." in out
