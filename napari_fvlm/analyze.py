"""`fvlm analyze`: a CT (+ masks) -> findings.json and heatmaps, with the interactive engine's code."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .core.errors import FvlmInputError

FINDING_HEATMAP_THRESHOLD = 0.5


def masks_for(ct, masks: str | None, device: str, progress=None, fast: bool = True):
    """Anatomy labels on the CT grid from a mask file/folder, or TotalSegmentator when none is given
    (``fast``: its 3 mm `total` model, else the full-resolution one)."""
    if masks:
        from .core.anatomy.providers import MaskFileProvider
        return MaskFileProvider(masks).segment(ct, progress=progress)
    from .core.anatomy.totalseg import TotalSegmentatorProvider
    return TotalSegmentatorProvider(fast=fast, device=device).segment(ct, progress=progress)


def model_totalseg_fast(model: str | None) -> bool:
    """The TotalSegmentator mode a model was trained with, read from its config (no torch)."""
    from .core.inference.models import resolve_model_source
    from .core.model.config import read_checkpoint_config

    return read_checkpoint_config(resolve_model_source(model))[0].totalseg_fast


def top_finding_heatmaps(analyzer, encoded, scores, threshold: float = FINDING_HEATMAP_THRESHOLD):
    """For each finding scored at or above ``threshold``, the map in its highest-scoring anatomy."""
    best: dict[str, tuple[str, float]] = {}
    for anatomy, findings in scores.items():
        for finding, probability in findings.items():
            if probability >= threshold and probability > best.get(finding, ("", -1.0))[1]:
                best[finding] = (anatomy, probability)
    return {f"finding:{finding}": (analyzer.finding_heatmap(encoded, anatomy, finding),
                                   {"finding": finding, "anatomy": anatomy, "probability": p})
            for finding, (anatomy, p) in sorted(best.items())}


def run_analyze(ct_path: str, out: str, masks: str | None = None, model: str | None = None,
                queries=(), device: str = "auto", log=print, protocol: str | None = None) -> dict:
    """The whole command; returns the findings document. Raises FvlmInputError for bad input.
    ``protocol`` overrides the model config's inference protocol ("reference" or "single-pass")."""
    from ._reader import read_volume
    from .core.inference.analyzer import Analyzer
    from .core.inference.export import check_out_dir, write_analysis
    from .core.inference.grounding import check_query
    from .core.inference.models import load_model, pick_device

    start = time.perf_counter()
    queries = [check_query(q) for q in queries]
    check_out_dir(Path(out))  # refuse before any slow work
    device = pick_device(device)
    pool = ThreadPoolExecutor(max_workers=1)  # the model loads while the CT and masks are read
    loading = pool.submit(load_model, model, device)
    try:
        ct = read_volume(ct_path)
        if ct.is_labels:
            raise FvlmInputError(f"{ct_path} holds labels, not a CT image; pass it with --masks.")
        labels = masks_for(ct, masks, device, fast=True if masks else model_totalseg_fast(model))
        net, folder = loading.result()
    finally:
        pool.shutdown(wait=False)  # a bad CT is reported at once, not after the model has loaded
    analyzer = Analyzer(net, protocol=protocol)
    encoded, analysis = analyzer.analyze(ct, labels, queries)
    heatmaps = {f"query:{i}": (g.heatmap, {"query": g.text}) for i, g in enumerate(analysis.queries)}
    heatmaps.update(top_finding_heatmaps(analyzer, encoded, analysis.scores))
    analysis.timing_s["total"] = time.perf_counter() - start
    model_info = {"name": net.config.name, "source": str(model or "demo"), "config": net.config.to_dict()}
    model_info["protocol"] = analyzer.protocol
    write_analysis(out, ct, analysis, heatmaps, model_info, {"masks": {"source": masks or "TotalSegmentator"}})
    log(f"analysis of {ct_path} written to {out} ({len(analysis.scores)} anatomies, "
        f"{len(heatmaps)} heatmaps, {analysis.timing_s['total']:.1f}s)")
    return json.loads((Path(out) / "findings.json").read_text())
