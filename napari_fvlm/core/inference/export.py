"""Writing an analysis: findings.json, findings.csv and heatmaps as NIfTI on the CT's own grid and affine.

Everything is written into a temporary sibling folder first and moved into place at the end,
so a failure or a cancel never leaves half an output folder.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import FvlmInputError
from ..io.files import usual_mode
from ..io.nifti import write_nifti
from ..resample import resample
from ..volume import Volume
from .analyzer import Analysis
from .calibration import CALIBRATION_FILE, VERSION
from .grounding import Heatmap
from .ranking import findings_csv

RESEARCH_NOTICE = "Research use only; not for diagnosis."
OUTPUT_NAMES = {"findings.json", "findings.csv", "heatmaps"}


HEATMAP_LEVELS = 255  # heatmaps in [0, 1] are stored as uint8 with scale factor 1/255
HEATMAP_WRITERS = 2


def heatmap_on_ct_grid(heatmap: Heatmap, ct: Volume) -> np.ndarray:
    """The token-resolution heatmap resampled (trilinear) onto the CT's voxel grid."""
    return resample(heatmap.values, heatmap.affine, ct.affine, ct.shape, order=1, cval=0.0)


def write_heatmap(heatmap: Heatmap, ct: Volume, path) -> Path:
    """A heatmap as NIfTI on the CT's own grid and affine (uint8, scale factor 1/255)."""
    values = np.clip(heatmap_on_ct_grid(heatmap, ct), 0.0, 1.0) * HEATMAP_LEVELS
    return write_nifti(ct, path, np.rint(values).astype(np.uint8), slope=1.0 / HEATMAP_LEVELS)


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of a finding or query."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return cleaned[:limit].rstrip("_") or "query"


def anatomy_entry(raw: dict[str, float], calibrated: dict) -> dict:
    """One anatomy of findings.json: raw probabilities under "findings" (as before calibration
    existed), calibrated values with thresholds and flags under "calibrated"."""
    entry = {"findings": raw}
    if calibrated:
        entry["calibrated"] = {f: score.to_dict() for f, score in calibrated.items()}
    return entry


def calibration_summary(calibration) -> dict:
    """The findings.json "calibration" block: whether the model is calibrated, and on what."""
    if calibration is None:
        return {"status": "uncalibrated"}
    return {"status": "calibrated", "file": CALIBRATION_FILE, "version": VERSION, "method": "platt",
            "threshold_rule": "roc-corner", "fitted_on": calibration.fitted_on}


def findings_document(analysis: Analysis, heatmap_files: dict[str, dict], model_info: dict,
                      ct: Volume, extra: dict | None = None) -> dict:
    """The findings.json content (documented in docs/findings-json.md)."""
    return {
        "notice": RESEARCH_NOTICE,
        "anatomies": {a: anatomy_entry(f, analysis.calibrated.get(a, {})) for a, f in analysis.scores.items()},
        "calibration": calibration_summary(analysis.calibration),
        "absent_anatomies": analysis.absent,
        "queries": [
            {"text": g.text, "peak_world_mm": g.peak_world_mm, "peak_anatomy": g.peak_anatomy,
             "heatmap": heatmap_files.get(f"query:{i}", {}).get("file"),
             "searched_anatomies": g.searched, "peak_probability": round(g.peak_probability, 6),
             "calibrated": g.heatmap.calibrated, "threshold": g.heatmap.threshold,
             "anatomy_ranking": [{"anatomy": a, "peak_probability": s} for a, s in g.anatomy_scores]}
            for i, g in enumerate(analysis.queries)
        ],
        "heatmaps": [info for key, info in heatmap_files.items() if not key.startswith("query:")],
        "model": model_info,
        "ct": {"path": ct.source.path if ct.source else None, "shape_zyx": list(ct.shape),
               "spacing_zyx": [round(float(s), 6) for s in ct.spacing],
               "affine_ras": np.asarray(ct.source.affine if ct.source else ct.affine).tolist()},
        "timing_s": {k: round(float(v), 4) for k, v in analysis.timing_s.items()},
        **(extra or {}),
    }


def check_out_dir(out: Path, outputs=OUTPUT_NAMES) -> None:
    """Refuse a file, or a folder holding anything but ``outputs`` (an earlier output is replaced)."""
    if out.exists() and not out.is_dir():
        raise FvlmInputError(f"{out} exists and is a file; give a folder for the results.")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in outputs]
        if foreign:
            raise FvlmInputError(f"{out} holds other files ({', '.join(sorted(foreign)[:3])}); "
                                 "give an empty or new folder so nothing of yours is overwritten.")


@contextmanager
def staged_output(out: str | Path, outputs=OUTPUT_NAMES):
    """A temporary sibling folder to fill; it replaces ``out`` whole when the block ends without an
    error, and is removed otherwise (so no half output is ever left)."""
    out = Path(out)
    check_out_dir(out, outputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        usual_mode(staging, directory=True)
        yield staging
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def write_analysis(out: str | Path, ct: Volume, analysis: Analysis, heatmaps: dict[str, tuple[Heatmap, dict]],
                   model_info: dict, extra: dict | None = None) -> Path:
    """Write findings.json, findings.csv and heatmaps/*.nii.gz into ``out`` atomically; returns ``out``.

    ``heatmaps`` maps a key ("query:<i>" or any finding key) to (heatmap, description fields).
    """
    out = Path(out)
    with staged_output(out) as staging:
        (staging / "heatmaps").mkdir()
        files: dict[str, dict] = {}
        for key, (heatmap, info) in heatmaps.items():
            name = f"heatmaps/{slug(heatmap.name)}.nii.gz"
            while any(f["file"] == name for f in files.values()):
                name = name.replace(".nii.gz", "_.nii.gz")
            files[key] = {"file": name, **info}
        # Resampling and deflating release the GIL: two threads write about twice as fast.
        with ThreadPoolExecutor(max_workers=HEATMAP_WRITERS) as pool:
            list(pool.map(lambda key: write_heatmap(heatmaps[key][0], ct, staging / files[key]["file"]), files))
        document = findings_document(analysis, files, model_info, ct, extra)
        (staging / "findings.json").write_text(json.dumps(document, indent=2))
        (staging / "findings.csv").write_bytes(findings_csv(analysis).encode())
    return out
