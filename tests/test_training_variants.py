"""Experiment variants end to end on a tiny model: co-teaching, the global CLIP baseline, and
`python -m training evaluate` on the trained checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file

from napari_fvlm.core.model.checkpoint import load_checkpoint
from napari_fvlm.core.phantom.catalog import FINDINGS
from training.__main__ import main
from training.config import load_config
from training.trainer import train

pytestmark = pytest.mark.slow  # each test trains a model

TINY = "training/configs/phantom-tiny.json"


@pytest.fixture(scope="module")
def cache_dir(tiny_cache):
    return tiny_cache


def test_co_teaching_with_gradient_accumulation(tmp_path, cache_dir):
    config = load_config(TINY, [f"cache_dir={cache_dir}", f"out_dir={tmp_path}", "max_steps=2",
                                "co_teaching_alpha=0.5", "grad_accum=2"])
    run = train(config)
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    # 8 samples, 2 per micro-batch, 2 micro-batches per step: one epoch is exactly the 2 steps
    assert [r[0] for r in rows if r[3]] == ["1", "2"] and [r[0] for r in rows if r[6]] == ["2"]
    folder = run / "checkpoints" / "step-00000002"
    model, peer = load_file(folder / "model" / "model.safetensors"), load_file(folder / "peer1" / "model.safetensors")
    assert model.keys() == peer.keys()
    assert not torch.equal(model["vision.pos_embed"], peer["vision.pos_embed"])
    moments = load_file(folder / "optimizer.safetensors")
    assert any(k.startswith("models.1.") for k in moments) and any(k.startswith("models.0.") for k in moments)


def test_global_clip_run_and_evaluation_cli(tmp_path, cache_dir, capsys):
    config = load_config(TINY, [f"cache_dir={cache_dir}", f"out_dir={tmp_path}", "max_steps=2",
                                "loss=global_clip", "test_seeds=[20000, 20006]"])
    run = train(config)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 4 and rows[0].startswith("step,")
    assert load_checkpoint(run / "best").checkpoint_extra["train_config"]["train"]["loss"] == "global_clip"

    # the command in this process (`python -m training` itself starts in the two-process test)
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--model", str(run / "best"), "--split", "test", "--out", str(out),
                 "--bootstrap", "50"]) == 0, capsys.readouterr().err[-2000:]
    result = json.loads((out / "evaluation.json").read_text())
    assert result["summary"]["samples"] == 6 and result["summary"]["thresholds_from"] == "val"
    assert {s["id"] for s in result["samples"]} == {f"phantom-{s}" for s in range(20000, 20006)}
    for block in ("study", "anatomy"):
        mean = result[block]["mean"]
        assert 0.0 <= mean["accuracy"] <= 1.0 and len(mean["accuracy_ci"]) == 2
    lesions = [g for s in result["samples"] for g in s["grounding"]]
    assert result["grounding"]["lesions"] == len(lesions) > 0
    assert 0.0 <= result["grounding"]["pointing_game"] <= 1.0
    focal = [g for g in lesions if FINDINGS[g["finding"]].focal]
    assert result["grounding"]["focal_lesions"] == len(focal)
    if focal:
        assert result["grounding"]["pointing_game_focal"] == sum(g["hit"] for g in focal) / len(focal)
    assert "| **mean** |" in (out / "evaluation.md").read_text()

    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "nothing")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1 and "Traceback" not in error
