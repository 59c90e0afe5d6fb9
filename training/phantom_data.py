"""Phantom samples: synthetic CTs by seed, prepared like any CT, with labels from their ground truth.

Seeds of the train, validation and test ranges never overlap (the config refuses overlaps), so
no phantom is seen in training and then scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_fvlm.core.anatomy.catalog import AnatomyGroup, group_set
from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS
from napari_fvlm.core.inference.findings import findings_for
from napari_fvlm.core.inference.preprocess import ModelInput, prepare_for_model
from napari_fvlm.core.phantom import PlacedFinding, generate_phantom
from napari_fvlm.core.resample import resample

from .reports import decompose_report, key_class_ids

FINDING_SET = "phantom"


def finding_is_in(finding: PlacedFinding, group: AnatomyGroup) -> bool:
    """Whether a placed finding counts as a finding of an anatomy group.

    Lung findings count for the lobe their lesion lies in (and that lobe's lung); others for the
    anatomy their report sentences concern (a hiatal hernia is the esophagus's finding even
    though the herniated stomach holds its voxels).
    """
    ids = set(group.class_ids)
    if finding.anatomy.startswith("lung_") and finding.anatomy in TOTAL_CLASS_IDS:
        return TOTAL_CLASS_IDS[finding.anatomy] in ids
    return bool(key_class_ids(finding.key) & ids)


def phantom_labels(findings: list[PlacedFinding], groups) -> tuple[dict, dict]:
    """({anatomy: {finding: 0/1}} for the findings scored on each anatomy, {finding: 0/1} per study)."""
    anatomy_labels: dict[str, dict[str, int]] = {}
    for group in groups:
        scored = findings_for(group.name, FINDING_SET)
        if scored:
            anatomy_labels[group.name] = {
                f: int(any(p.name == f and finding_is_in(p, group) for p in findings)) for f in scored}
    scored_all = sorted({f for table in anatomy_labels.values() for f in table})
    study = {f: int(any(p.name == f for p in findings)) for f in scored_all}
    return anatomy_labels, study


def phantom_sample(seed: int, model_config, config) -> tuple[ModelInput, dict[str, Any], np.ndarray]:
    """(prepared input, metadata, lesion labels on the model grid) of one phantom."""
    phantom = generate_phantom(seed, config.phantom_shape, config.phantom_spacing)
    prepared = prepare_for_model(phantom.ct, phantom.anatomy, model_config)
    decomposition = decompose_report(phantom.report, model_config.anatomy_group_set,
                                     decomposer=config.decomposition)
    lesions = resample(phantom.lesions.array, phantom.lesions.affine, prepared.affine, prepared.image.shape,
                       order=0).astype(np.uint16)
    groups = [g for g in group_set(model_config.anatomy_group_set) if g.name in model_config.anatomies]
    anatomy_labels, study_labels = phantom_labels(phantom.findings, groups)
    lesion_anatomies = {
        str(p.lesion_label): [g.name for g in groups if finding_is_in(p, g)] for p in phantom.findings}
    meta = {
        "id": f"phantom-{seed}", "texts": decomposition.texts, "abnormal": decomposition.abnormal,
        "report": phantom.report, "labels": anatomy_labels, "study_labels": study_labels,
        "lesion_findings": {str(p.lesion_label): p.name for p in phantom.findings},
        "lesion_anatomies": lesion_anatomies,
    }
    return prepared, meta, lesions
