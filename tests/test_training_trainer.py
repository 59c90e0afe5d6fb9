"""The trainer: weight decay really applied, the schedule, learning on a tiny run, exact resume."""

import csv
import math

import pytest
import torch
from safetensors.torch import load_file

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.checkpoint import load_checkpoint
from training.config import load_config
from training.datasets import prepare_split
from training.distributed import Processes
from training.loader import CachedDataset
from training.optim import build_optimizer, decays, learning_rate
from training.step import TextFeatureCache, TrainModule
from training.trainer import build_models, train, validation_loss

TINY = "training/configs/phantom-tiny.json"
CPU = Processes(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def cache_dir(tiny_cache):
    config = load_config(TINY, [f"cache_dir={tiny_cache}"])
    for split in ("train", "val"):
        prepare_split(config, split)
    return tiny_cache


def _config(cache_dir, out, *overrides):
    return load_config(TINY, [f"cache_dir={cache_dir}", f"out_dir={out}", *overrides])


def test_weight_decay_is_applied_to_matrices_only(cache_dir, tmp_path):
    config = _config(cache_dir, tmp_path, "lr=0.1", "weight_decay=0.5")
    module = TrainModule(build_models(config))
    optimizer = build_optimizer(module, config)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.5 and plain["weight_decay"] == 0.0
    assert any(n.endswith("blocks.0.attn.qkv.weight") for n in decayed["names"])
    assert any(n.endswith("text.proj.weight") for n in decayed["names"])
    for name in ("vision.pos_embed", "pooling.queries", "log_temperature", "vision.norm.weight", "blocks.0.mlp.fc1.bias"):
        assert any(n.endswith(name) for n in plain["names"]), name
    assert not any(".text.model." in n for n in decayed["names"] + plain["names"])  # frozen encoder
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    for parameter in module.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        factor = 1 - 0.1 * 0.5 if decays(name, parameter) else 1.0
        assert torch.allclose(parameter.detach(), before[name] * factor, atol=1e-7), name
    shrunk = [n for n, p in module.named_parameters() if p.requires_grad and decays(n, p)]
    assert len(shrunk) > 10


def test_warmup_then_cosine_schedule():
    rates = [learning_rate(step, 1.0, 10, 110, 0.1) for step in range(111)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert rates[110] == pytest.approx(0.1) and all(a >= b for a, b in zip(rates[9:], rates[10:]))


def _train_loss(models, cache_dir, config):
    paths = prepare_split(config, "train")
    caches = [TextFeatureCache(m.text) for m in models]
    module = TrainModule(models, caches)
    return validation_loss(module, CachedDataset(paths, module.anatomies), config, CPU)


@pytest.mark.slow
def test_tiny_training_run_lowers_the_loss(cache_dir, tmp_path):
    config = _config(cache_dir, tmp_path, "epochs=15", "lr=3e-3", "checkpoint_every=0", "batch_size=4",
                     "warmup_steps=2")
    before = _train_loss(build_models(config), cache_dir, config)
    run = train(config)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    steps = [r for r in rows if r["loss"]]
    assert [int(r["step"]) for r in steps] == list(range(1, 31))  # 8 samples / 4 per batch x 15 epochs
    assert sum(1 for r in rows if r["val_loss"]) == 15  # once per epoch, on the validation split
    trained = load_checkpoint(sorted((run / "checkpoints").glob("step-*"))[-1] / "model")
    after = _train_loss([trained], cache_dir, config)
    print(f"\ntrain-set loss before {before:.3f}, after 30 steps {after:.3f}")
    assert after < before - 1.5  # about 1.4 per nat of the 15 anatomies' terms; chance stays near before
    best = load_checkpoint(run / "best")
    assert best.checkpoint_extra["val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows if r["val_loss"]), rel=1e-5)


@pytest.mark.slow
def test_resume_continues_exactly(cache_dir, tmp_path):
    args = ("epochs=2", "checkpoint_every=3", "keep_checkpoints=5")
    straight = train(_config(cache_dir, tmp_path / "a", *args))
    interrupted = _config(cache_dir, tmp_path / "b", *args)
    train(interrupted, stop_after=2)  # stops mid-epoch (4 steps per epoch)
    with pytest.raises(FvlmInputError, match="--resume"):
        train(interrupted)
    resumed = train(interrupted, resume=True)
    final = "checkpoints/step-00000008"
    for part in ("model/model.safetensors", "optimizer.safetensors"):
        a, b = load_file(straight / final / part), load_file(resumed / final / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    rows_a = list(csv.DictReader(open(straight / "metrics.csv")))
    rows_b = list(csv.DictReader(open(resumed / "metrics.csv")))
    assert [(r["step"], r["loss"], r["val_loss"]) for r in rows_a] == [(r["step"], r["loss"], r["val_loss"]) for r in rows_b]
    assert not math.isnan(float(rows_a[-1]["val_loss"]))


def test_text_cache_holds_the_encoders_own_features_whatever_the_batch(cache_dir):
    config = load_config(TINY, [f"cache_dir={cache_dir}"])
    encoder = build_models(config)[0].text.eval()
    short, long = "Cardiomegaly.", "A moderate amount of right pleural fluid is present in the lower lobe."
    cache = TextFeatureCache(encoder)
    cache.prefill([long, short])  # one chunk: the short text is padded to the long one
    alone = TextFeatureCache(encoder).features([short])
    assert torch.allclose(cache.features([short]), alone, atol=1e-5)
    with torch.no_grad():
        projected = torch.nn.functional.normalize(encoder.proj(cache.features([short, long])), dim=-1)
        assert torch.allclose(projected, encoder([short, long]), atol=1e-6)
