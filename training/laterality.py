"""Left/right: do queries find the patient's correct side, whatever the file's voxel order?

For every lateral finding of held-out phantoms, the CT and its masks are written as NIfTI in
several stored orientations (the canonical LPS order, RAS, and permuted axes) and read back
through the plugin's own reader, so the whole geometry path is exercised. Two checks per case:
- sided queries: "<finding> in the left lung" vs "... right lung"; the true side must score
  higher (the query's map peak inside the named lung, the panel's anatomy ranking);
- unsided query: "<finding>" searched over every anatomy; the peak's RAS x must be on the
  patient's side of the finding (RAS x < 0 is the patient's left) relative to the body midline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ORIENTATIONS = {"LPS (canonical)": ("L", "P", "S"), "RAS": ("R", "A", "S"), "permuted PIR": ("P", "I", "R")}
SIDE_QUERY = "{finding} in the {side} lung"


def write_oriented(volume, path: Path, codes) -> Path:
    """``volume`` saved with its voxels stored in the orientation ``codes`` (same world geometry)."""
    data = np.transpose(volume.array, (2, 1, 0))  # canonical (z, y, x) -> (i, j, k) in LPS
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("L", "P", "S")),
                                                nib.orientations.axcodes2ornt(codes))
    stored = nib.orientations.apply_orientation(data, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), affine), path)
    return path


def lateral_cases(seeds) -> list:
    """(phantom, finding) pairs whose finding lies on one side, from the given phantom seeds."""
    from napari_fvlm.core.phantom import generate_phantom

    cases = []
    for seed in seeds:
        phantom = generate_phantom(seed)
        sides = {}
        for finding in phantom.findings:
            if finding.side in ("left", "right") and finding.anatomy.startswith("lung"):
                sides.setdefault(finding.name, set()).add(finding.side)
        for finding in phantom.findings:  # a finding present on both sides says nothing here
            if finding.name in sides and len(sides[finding.name]) == 1 and finding.anatomy.startswith("lung"):
                cases.append((phantom, finding))
                sides.pop(finding.name)
    return cases


def evaluate_laterality(analyzer, seeds, progress: bool = True) -> dict:
    """Share of correct sides for sided and unsided queries, per stored orientation."""
    from tqdm import tqdm

    from napari_fvlm.core.io.nifti import read_nifti

    results = {name: {"sided": [], "unsided": []} for name in ORIENTATIONS}
    cases = lateral_cases(seeds)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for phantom, finding in tqdm(cases, desc="laterality", disable=not progress, leave=False):
            midline = float(np.median(phantom.ct.to_world(np.argwhere(phantom.anatomy.array > 0)[::50])[:, 0]))
            for name, codes in ORIENTATIONS.items():
                ct = read_nifti(write_oriented(phantom.ct, folder / "ct.nii.gz", codes))
                masks = read_nifti(write_oriented(phantom.anatomy, folder / "anatomy.nii.gz", codes))
                encoded = analyzer.encode(ct, masks)
                scores = {}
                for side in ("left", "right"):
                    grounding = analyzer.ground(encoded, SIDE_QUERY.format(finding=finding.name, side=side))
                    scores[side] = dict(grounding.anatomy_scores)[f"lung_{side}"]
                results[name]["sided"].append(max(scores, key=scores.get) == finding.side)
                peak_x = analyzer.ground(encoded, finding.name).peak_world_mm[0]
                results[name]["unsided"].append(("left" if peak_x < midline else "right") == finding.side)
    summary = {"cases": len(cases)}
    for name, found in results.items():
        summary[name] = {kind: float(np.mean(values)) if values else None for kind, values in found.items()}
    return summary
