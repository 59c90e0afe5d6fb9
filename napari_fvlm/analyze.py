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


def heatmap_info(analysis, anatomy: str, finding: str) -> dict:
    """What findings.json says about a finding's heatmap: raw and (when calibrated) calibrated values."""
    info = {"finding": finding, "anatomy": anatomy, "probability": analysis.scores[anatomy][finding]}
    scored = analysis.calibrated.get(anatomy, {}).get(finding)
    if scored is not None:
        info.update(calibrated_probability=round(scored.probability, 6), above_threshold=scored.above)
    return info


def top_finding_heatmaps(analyzer, encoded, analysis, threshold: float = FINDING_HEATMAP_THRESHOLD):
    """For each flagged finding, the map in the anatomy where it is most likely. Flagged: above
    its calibrated threshold; for an uncalibrated model, a raw probability of at least ``threshold``."""
    best: dict[str, tuple[str, float]] = {}
    for anatomy, findings in analysis.scores.items():
        for finding, raw in findings.items():
            if analysis.calibration is not None:
                scored = analysis.calibrated.get(anatomy, {}).get(finding)
                flagged, strength = (scored.above, scored.probability) if scored else (False, 0.0)
            else:
                flagged, strength = raw >= threshold, raw
            if flagged and strength > best.get(finding, ("", -1.0))[1]:
                best[finding] = (anatomy, strength)
    return {f"finding:{finding}": (analyzer.finding_heatmap(encoded, anatomy, finding),
                                   heatmap_info(analysis, anatomy, finding))
            for finding, (anatomy, _strength) in sorted(best.items())}


def summary_line(analysis) -> str:
    """The command's verdict: flagged findings of a calibrated model, or that it is uncalibrated."""
    if analysis.calibration is None:
        return "uncalibrated model: scores are raw zero-shot probabilities, useful as ranks only"
    flagged = sorted(((s.probability, a, f) for a, table in analysis.calibrated.items()
                      for f, s in table.items() if s.above), reverse=True)
    if not flagged:
        return "calibrated: no finding above its threshold"
    shown = ", ".join(f"{f} ({a.replace('_', ' ')}) {p:.2f}" for p, a, f in flagged[:5])
    more = f" and {len(flagged) - 5} more" if len(flagged) > 5 else ""
    return f"calibrated: {len(flagged)} above threshold: {shown}{more}"


def run_analyze(ct_path: str, out: str, masks: str | None = None, model: str | None = None,
                queries=(), device: str = "auto", log=print, protocol: str | None = None,
                dicom_out: str | None = None) -> dict:
    """The whole command; returns the findings document. Raises FvlmInputError for bad input.
    ``protocol`` overrides the model config's inference protocol ("reference" or "single-pass");
    ``dicom_out``: a folder for DICOM SEG and SR results (a CT read from DICOM only)."""
    from ._reader import read_volume
    from .core.inference.export import check_out_dir, write_analysis
    from .core.inference.grounding import check_query
    from .core.inference.models import load_analyzer, pick_device

    start = time.perf_counter()
    queries = [check_query(q) for q in queries]
    check_out_dir(Path(out))  # refuse before any slow work
    if dicom_out:
        from .core.dicom_export.write import DICOM_OUTPUTS
        check_out_dir(Path(dicom_out), DICOM_OUTPUTS)
    device = pick_device(device)
    pool = ThreadPoolExecutor(max_workers=1)  # the model loads while the CT and masks are read
    loading = pool.submit(load_analyzer, model, device)
    try:
        ct = read_volume(ct_path)
        if ct.is_labels:
            raise FvlmInputError(f"{ct_path} holds labels, not a CT image; pass it with --masks.")
        if dicom_out:
            from .core.dicom_export.series import require_dicom_ct
            require_dicom_ct(ct)
        if ct.source is not None and ct.source.details.get("not_ct"):
            log(f"warning: {ct_path} does not look like a CT in Hounsfield units: {ct.source.details['not_ct']}; "
                f"the scores assume a CT.")
        labels = masks_for(ct, masks, device, fast=True if masks else model_totalseg_fast(model))
        analyzer = loading.result()
    finally:
        pool.shutdown(wait=False)  # a bad CT is reported at once, not after the model has loaded
    if protocol is not None:
        analyzer.protocol = protocol
    net = analyzer.model
    encoded, analysis = analyzer.analyze(ct, labels, queries)
    heatmaps = {f"query:{i}": (g.heatmap, {"query": g.text}) for i, g in enumerate(analysis.queries)}
    heatmaps.update(top_finding_heatmaps(analyzer, encoded, analysis))
    analysis.timing_s["total"] = time.perf_counter() - start
    model_info = {"name": net.config.name, "source": str(model or "demo"), "config": net.config.to_dict()}
    model_info["protocol"] = analyzer.protocol
    write_analysis(out, ct, analysis, heatmaps, model_info, {"masks": {"source": masks or "TotalSegmentator"}})
    if dicom_out:
        from .core.dicom_export.write import write_analysis_dicom
        written = write_analysis_dicom(dicom_out, ct, labels, analysis, net.config, heatmaps, FINDING_HEATMAP_THRESHOLD)
        log(f"DICOM results written to {dicom_out}: {', '.join(p.name for p in written)}")
    log(f"analysis of {ct_path} written to {out} ({len(analysis.scores)} anatomies, "
        f"{len(heatmaps)} heatmaps, {analysis.timing_s['total']:.1f}s); {summary_line(analysis)}")
    return json.loads((Path(out) / "findings.json").read_text())
