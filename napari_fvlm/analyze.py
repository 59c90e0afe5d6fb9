"""`fvlm analyze`: a CT (+ masks) -> findings.json, findings.csv and heatmaps, through the same
analysis session as the napari panel (core/inference/session.py)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


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
    from .core.inference.export import check_out_dir
    from .core.inference.grounding import check_query
    from .core.inference.models import pick_device
    from .core.inference.session import AnalysisSession, AnatomySource, export_findings, model_totalseg_fast, read_ct

    start = time.perf_counter()
    queries = [check_query(q) for q in queries]
    check_out_dir(Path(out))  # refuse before any slow work
    if dicom_out:
        from .core.dicom_export.write import DICOM_OUTPUTS
        check_out_dir(Path(dicom_out), DICOM_OUTPUTS)
    device = pick_device(device)
    session, anatomy = AnalysisSession(), AnatomySource.from_masks(masks)
    pool = ThreadPoolExecutor(max_workers=1)  # the model loads while the CT and masks are read
    loading = pool.submit(session.models.get, model, device, protocol)
    try:
        ct = read_ct(ct_path, warn=lambda message: log(f"warning: {message}"))
        if dicom_out:
            from .core.dicom_export.series import require_dicom_ct
            require_dicom_ct(ct)
        labels = session.masks(ct, anatomy, device, fast=masks is not None or model_totalseg_fast(model))
        analyzer = loading.result()
    finally:
        pool.shutdown(wait=False)  # a bad CT is reported at once, not after the model has loaded
    analysed = session.analyse(ct, labels, anatomy, analyzer, model, queries)
    total = {"total": time.perf_counter() - start}
    export_findings(out, analysed, timing_s=total)
    if dicom_out:
        from .core.inference.session import export_dicom

        written = export_dicom(dicom_out, analysed)
        log(f"DICOM results written to {dicom_out}: {', '.join(p.name for p in written)}")
    document = json.loads((Path(out) / "findings.json").read_text())
    log(f"analysis of {ct_path} written to {out} ({len(analysed.analysis.scores)} anatomies, "
        f"{len(document['queries']) + len(document['heatmaps'])} heatmaps, {total['total']:.1f}s); "
        f"{summary_line(analysed.analysis)}")
    return document
