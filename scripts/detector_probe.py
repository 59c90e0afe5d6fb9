"""Can a small per-voxel detector learn the focal phantom findings on this CPU budget?

    .venv/bin/python scripts/detector_probe.py --config training/configs/phantom-anatomy.json \
        --steps 900 --pool lse --windows --out runs/detector-probe

A diagnostic, not a model the plugin uses (results: docs/model-card.md, "Limitations"). A fully
convolutional 3D network maps the prepared image to one logit map per phantom finding on a grid
of (2, 4, 4) voxels (10 x 12 x 12 mm with the demo spacing, finer than the ViT's 40 x 48 x 48 mm
tokens). Each anatomy's score for a finding is the mean of the top ``--top`` logits inside the
anatomy (multiple-instance pooling: a few abnormal places make a positive anatomy, where a mean
over the anatomy would dilute them), or with ``--pool lse`` their log-sum-exp (which also grows
with the number of abnormal places). ``--windows`` adds the image in four narrower HU windows as
input channels. It is trained with binary cross-entropy on the anatomy labels, then scored with
the same protocol as `python -m training evaluate` (thresholds from validation, pointing game on
the test lesions).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

STRIDE = (2, 4, 4)
WINDOWS = ((-1000.0, -920.0), (-700.0, -300.0), (-50.0, 100.0), (150.0, 650.0))  # emphysema,
# ground glass, soft tissue (nodule, consolidation, liver lesion), calcification
LSE_OFFSET = float(np.log(1000.0))  # a lung holds a few thousand places: start near a mean


def detector(findings: int, width: int, channels: int = 1) -> nn.Sequential:
    def block(inputs, outputs, stride=1, dilation=1):
        return [nn.Conv3d(inputs, outputs, 3, stride=stride, padding=dilation, dilation=dilation),
                nn.GroupNorm(8, outputs), nn.GELU()]

    return nn.Sequential(*block(channels, 16, (1, 2, 2)), *block(16, width, 2), *block(width, width),
                         *block(width, width, dilation=2), nn.Conv3d(width, findings, 1))


class Probe:
    """The detector plus the (anatomy, finding) pairs it is trained and scored on."""

    def __init__(self, model_config, width: int, top: int, pool: str, windows=()) -> None:
        from napari_fvlm.core.inference.findings import findings_for

        self.pairs = {a: findings_for(a, "phantom") for a in model_config.anatomies}
        self.hu_window = model_config.hu_window
        self.findings = sorted({f for fs in self.pairs.values() for f in fs})
        self.windows = windows
        self.net = detector(len(self.findings), width, 1 + len(windows))
        self.top, self.pool = top, pool

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        channels = [images - 0.5]
        low_all, high_all = self.hu_window
        hu = images * (high_all - low_all) + low_all
        for low, high in self.windows:  # HU windows of the input, as a radiologist would set
            channels.append(((hu - low) / (high - low)).clamp(0, 1) - 0.5)
        return self.net(torch.stack(channels, 1))  # (B, F, Zt, Yt, Xt)

    def token_masks(self, masks: np.ndarray) -> torch.Tensor:
        from napari_fvlm.core.model.pooling import token_mask

        return token_mask(torch.from_numpy(masks), STRIDE)  # (A, Zt, Yt, Xt)

    def pooled(self, maps: torch.Tensor, mask: torch.Tensor, finding: str) -> torch.Tensor:
        """The anatomy's score for ``finding``: its logits inside the token ``mask``, pooled."""
        inside = maps[self.findings.index(finding)][mask]
        if self.pool == "lse":  # grows with the number of abnormal places, like a count
            return torch.logsumexp(inside, 0) - LSE_OFFSET
        return inside.topk(min(self.top, inside.numel())).values.mean()


def load(paths):
    from training.cache import read_sample

    return [read_sample(p) for p in paths]


def padded(images: list[np.ndarray]) -> torch.Tensor:
    """Images of a batch zero-padded (air) at the far end to the largest shape."""
    batch = torch.zeros(len(images), *np.max([i.shape for i in images], axis=0).tolist())
    for b, image in enumerate(images):
        batch[b, :image.shape[0], :image.shape[1], :image.shape[2]] = torch.from_numpy(image)
    return batch


def loss_of(probe: Probe, samples) -> torch.Tensor:
    maps = probe.maps(padded([s.image for s in samples]))
    logits, targets = [], []
    for b, sample in enumerate(samples):
        masks = probe.token_masks(sample.masks)
        z, y, x = masks.shape[1:]
        own = maps[b, :, :z, :y, :x]
        for a, anatomy in enumerate(sample.meta["anatomies"]):
            if not sample.meta["present"][anatomy] or not masks[a].any():
                continue
            for finding in probe.pairs.get(anatomy, ()):
                logits.append(probe.pooled(own, masks[a], finding))
                targets.append(float(sample.meta["labels"][anatomy][finding]))
    return F.binary_cross_entropy_with_logits(torch.stack(logits), torch.tensor(targets))


def scorer(probe: Probe):
    """The `training.evaluate.Scorer` of the probe: anatomy scores and lesion grounding."""
    from training.evaluate import ground_lesions

    @torch.no_grad()
    def score(sample) -> dict:
        maps = probe.maps(torch.from_numpy(sample.image)[None])[0]
        masks = probe.token_masks(sample.masks)
        by_name = {a: masks[i] for i, a in enumerate(sample.meta["anatomies"])}
        scores = {}
        for anatomy, findings in probe.pairs.items():
            if sample.meta["present"][anatomy] and by_name[anatomy].any():
                scores[anatomy] = {f: float(torch.sigmoid(probe.pooled(maps, by_name[anatomy], f)))
                                   for f in findings}

        def heatmap_of(anatomy: str, finding: str) -> np.ndarray:
            heatmap = torch.sigmoid(maps[probe.findings.index(finding)]).numpy().astype(float)
            heatmap[~by_name[anatomy].numpy()] = np.nan
            return heatmap

        grounding = ground_lesions(sample, STRIDE, lambda a: int(by_name[a].sum()),
                                   lambda a, f: a in scores and f in scores[a], heatmap_of)
        return {"scores": scores, "grounding": grounding}

    return score


def main() -> None:
    from training.config import load_config
    from training.datasets import prepare_split
    from training.evaluate import run_protocol, score_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="training/configs/phantom-anatomy.json")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--pool", choices=("top", "lse"), default="top",
                        help="anatomy score: mean of the top logits, or their log-sum-exp")
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", action="store_true", help="add HU-window channels (WINDOWS)")
    parser.add_argument("--out", default="runs/detector-probe")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = load_config(args.config, [])
    train = load(prepare_split(config, "train"))
    probe = Probe(config.model_config(), args.width, args.top, args.pool,
                  WINDOWS if args.windows else ())
    optimizer = torch.optim.AdamW(probe.net.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = [train[i] for i in rng.choice(len(train), args.batch, replace=False)]
        loss = loss_of(probe, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f} {time.perf_counter() - start:.0f} s", flush=True)
    save_file(probe.net.state_dict(), out / "detector.safetensors")
    probe.net.eval()
    results = run_protocol(score_split(prepare_split(config, "val"), scorer(probe)),
                           score_split(prepare_split(config, "test"), scorer(probe)))
    (out / "evaluation.json").write_text(json.dumps(results, indent=2, default=float))
    study, grounding = results["study"], results["grounding"]
    print(f"study AUC {study['mean']['auc']:.3f}; pointing {grounding['pointing_game']:.3f}, "
          f"focal {grounding['pointing_game_focal']:.3f}; Dice {grounding['dice']:.3f}")
    for name, row in sorted(study["labels"].items()):
        print(f"  {name}: AUC {row['auc']:.3f}")
    for name, row in sorted(grounding["per_finding"].items()):
        print(f"  {name}: pointing {row['pointing_game']:.3f} ({row['lesions']} lesions)")


if __name__ == "__main__":
    main()
