"""The reference protocol (converted official weights) on a 512x512x300 chest CT, this CPU.

Ours: `Analyzer` with the model's `reference` protocol (core/inference/reference_protocol.py): one
resize of the CT, organ crops of equal shape encoded as one batch with fused attention, the 32
prompts encoded once. Baseline, measured in the same run on the same weights: a straightforward
per-organ loop as the reference evaluation is written: per organ, resize the whole CT and labels,
crop, window and pad them again, encode the organ's crop with plain (unfused) attention, and
encode the organ's prompts padded to the reference's 384 tokens. Targets: at least 1.5x faster
at float32 with the same probabilities (within 1e-4); peak memory of each (child processes). On a
CPU with native bfloat16 the text encoder's bfloat16 copy is timed too, with its largest
probability change; reference-protocol models keep float32 text when it moves scores by > 1e-3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks.timing import verdict

PADDED_TEXT_TOKENS = 384  # the reference's max_txt_len


def _model(text_folder: str):
    import dataclasses

    import torch

    from napari_fvlm.core.model import build_model, preset
    from napari_fvlm.core.model.convert_official import reference_settings

    torch.manual_seed(0)
    config = dataclasses.replace(reference_settings(preset("fvlm-b")), text_encoder=text_folder)
    model = build_model(config, pretrained_text=False, text_source=text_folder).eval()
    with torch.no_grad():  # spread the random weights so that the scores are not all 0.5
        model.pooling.queries.normal_()
        model.text.proj.weight.normal_(0, 0.2)
    return model


def _plain_attention(block, x):
    """The reference's ViT attention: qkv, einsum, softmax, einsum (no fused kernel)."""
    import torch

    batch, tokens, width = x.shape
    heads = block.attn.heads
    qkv = block.attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = (torch.einsum("bhxd,bhyd->bhxy", q, k) * (width // heads) ** -0.5).softmax(dim=-1)
    out = torch.einsum("bhxy,bhyd->bhxd", weights, v).transpose(1, 2).reshape(batch, tokens, width)
    return block.attn.proj(out)


def _baseline_scores(model, ct, labels) -> dict:
    """The straightforward per-organ loop; returns {organ: {finding: probability}}."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from napari_fvlm.core.inference.findings import findings_for
    from napari_fvlm.core.inference.preprocess import window
    from napari_fvlm.core.inference.reference_protocol import (
        MARGIN_BEFORE,
        ORGANS,
        _centre_crop,
        resize_box,
        resized_organs,
        target_shape,
    )
    from napari_fvlm.core.model.pooling import token_mask
    from napari_fvlm.core.model.vision import interpolate_position_embedding

    config, vision = model.config, model.vision
    scores = {}
    for number, organ in enumerate(ORGANS, start=1):
        shape_out = np.array(target_shape(ct, config.spacing_zyx))  # every step again, per organ
        whole = tuple(slice(0, n) for n in shape_out)
        image = window(resize_box(ct.array, shape_out, whole), config.hu_window)
        organs = resized_organs(np.asarray(labels.array), shape_out)
        where = np.argwhere(organs > 0)
        lo = np.maximum(where.min(0) - MARGIN_BEFORE, 0)  # the reference's [min - margin, max + margin)
        hi = np.minimum(where.max(0) + MARGIN_BEFORE, shape_out)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        image, organs = image[box], organs[box]
        pad = np.maximum(np.array(config.min_input_shape_zyx), organs.shape) - organs.shape
        padding = [(int(p // 2), int(p - p // 2)) for p in pad]
        image, organs = np.pad(image, padding), np.pad(organs, padding)
        inside = np.argwhere(organs == number)
        start, stop = _centre_crop(inside.min(0), inside.max(0), np.array(organs.shape))
        crop = tuple(slice(a, b) for a, b in zip(start, stop))
        extra = [(0, int(-(b - a) % p)) for a, b, p in zip(start, stop, config.patch_zyx)]
        patch_image, patch_mask = np.pad(image[crop], extra), np.pad(organs[crop] == number, extra)
        with torch.inference_mode():
            x = torch.from_numpy(patch_image)[None, None]
            grid = vision.token_grid(x.shape[2:])
            tokens = vision.patch_embed(x).flatten(2).transpose(1, 2)
            x = tokens + interpolate_position_embedding(vision.pos_embed, vision.grid_zyx, grid)
            levels = []
            for n, block in enumerate(vision.blocks, start=1):
                x = x + _plain_attention(block, x)
                x = x + block.mlp(block.norm2(x))
                if n in vision.tap_blocks:
                    levels.append(x)
            levels.append(vision.norm(x))
            mask = token_mask(torch.from_numpy(patch_mask)[None], config.patch_zyx)
            image_feature = model.pool(levels, grid, {organ: mask})[0][organ][0]
            findings = findings_for(organ, "ct-rate")
            prompts = [text for f in findings for text in config.prompts_for(f)]
            text = model.text
            batch = text.tokenizer(prompts, padding="max_length", truncation=True,
                                   max_length=PADDED_TEXT_TOKENS, return_tensors="pt")
            hidden = text.model(**batch).last_hidden_state[:, 0]
            text_features = F.normalize(text.proj(hidden), dim=-1).reshape(len(findings), 2, -1)
            logits = text_features @ image_feature / model.temperature
            scores[organ] = dict(zip(findings, logits.softmax(-1)[:, 0].tolist()))
    return scores


def _child(mode: str, text_folder: str) -> None:
    """Run in a child process: one analysis in ``mode``, its time, peak memory and scores."""
    import resource

    import torch

    from benchmarks.chest_ct import chest_ct
    from napari_fvlm.core.inference.analyzer import Analyzer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = _model(text_folder)
    ct, labels = chest_ct()
    start = time.perf_counter()
    result = {}
    if mode == "ours":
        analyzer = Analyzer(model, finding_set="ct-rate")
        encoded = analyzer.encode(ct, labels)
        result["scores"] = analyzer.scores(encoded)
    else:
        result["scores"] = _baseline_scores(model, ct, labels)
    result["seconds"] = time.perf_counter() - start
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    if mode == "ours":  # the same encoding scored with a bfloat16 text transformer
        half = Analyzer(model, finding_set="ct-rate")
        half._text_encoder = _bfloat16_copy(model.text)  # what TextEncoder.inference_copy makes
        start = time.perf_counter()
        result["bfloat16_scores"] = half.scores(encoded)
        result["bfloat16_seconds"] = time.perf_counter() - start
    print(json.dumps(result))


def _bfloat16_copy(text):
    import copy

    import torch

    clone = copy.deepcopy(text)
    clone.model.to(torch.bfloat16)
    return clone.eval()


def _run(mode: str, text_folder: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_reference", "--child", mode, text_folder],
                         capture_output=True, text=True, check=True,
                         cwd=os.path.join(os.path.dirname(__file__), ".."))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _largest_change(a: dict, b: dict) -> float:
    return max(abs(a[o][f] - b[o][f]) for o in b for f in b[o])


def main() -> None:
    import tempfile

    from benchmarks.bench_inference import bert_base_sized_text_folder
    from napari_fvlm.core.model.text import native_bfloat16_cpu

    with tempfile.TemporaryDirectory() as folder:
        text = bert_base_sized_text_folder(os.path.join(folder, "bert-base"))
        ours, baseline = _run("ours", text), _run("baseline", text)
        change = _largest_change(ours["scores"], baseline["scores"])
        ratio = baseline["seconds"] / ours["seconds"]
        print(f"(reference protocol, fvlm-b, 512x512x300: ours {ours['seconds']:.1f}s, peak "
              f"{ours['peak_gb']:.2f} GB; per-organ loop {baseline['seconds']:.1f}s, "
              f"peak {baseline['peak_gb']:.2f} GB; "
              f"largest probability difference {change:.1e})")
        print(f"reference protocol vs per-organ loop, float32: {ratio:.1f}x (target >= 1.5) "
              f"{verdict(ratio >= 1.5 and change <= 1e-4)}")
        print(f"reference protocol peak memory: {ours['peak_gb']:.2f} GB (target <= 4) "
              f"{verdict(ours['peak_gb'] <= 4)}")
        moved = _largest_change(ours["bfloat16_scores"], ours["scores"])
        where = "native" if native_bfloat16_cpu() else "emulated (this CPU has no native bfloat16)"
        kept = "so reference-protocol models keep float32 text" if moved > 1e-3 else "within 1e-3"
        print(f"(bfloat16 text, {where}: 32 prompts + scoring {ours['bfloat16_seconds']:.1f}s; largest "
              f"probability change {moved:.1e}, {kept})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        main()
