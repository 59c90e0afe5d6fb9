"""CT-RATE layout reader (docs/training.md "CT-RATE").

Expected under the root: volumes ``dataset/<train|valid>/<patient>/<scan>/<VolumeName>`` (.nii.gz),
any number of CSV files - reports (VolumeName, Findings_EN, Impressions_EN) and abnormality
labels (VolumeName + the 18 label columns) are recognised by their header - and TotalSegmentator
masks ``<masks>/<VolumeName>`` (one multilabel file) or ``<masks>/<volume stem>/`` (one file per
class). CT-RATE's ``valid`` split is the test set; validation is a held-out share of the train
patients, chosen by a hash of the patient id so it never changes between runs.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_fvlm.core.anatomy.catalog import group_set
from napari_fvlm.core.anatomy.providers import MaskFileProvider
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.findings import findings_for, organ_of
from napari_fvlm.core.inference.preprocess import ModelInput, prepare_for_model
from napari_fvlm.core.io.nifti import read_nifti

from .reports import decompose_report

LABEL_COLUMNS = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)
FINDING_SET = "ct-rate"
SPLIT_FOLDERS = {"train": "train", "valid": "valid"}


@dataclass
class CtRateVolume:
    name: str  # VolumeName, e.g. train_1_a_1.nii.gz
    split: str  # CT-RATE's folder: "train" or "valid"
    patient: str
    path: Path
    masks: Path
    findings: str = ""
    impression: str = ""
    labels: dict[str, int] = field(default_factory=dict)  # column -> 0/1
    rescale: tuple[float, float] | None = None  # (slope, intercept) from the metadata CSV


def _stem(name: str) -> str:
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]


def _patient(name: str) -> str:
    parts = _stem(name).split("_")  # train_12_a_1 -> train_12
    return "_".join(parts[:2]) if len(parts) >= 2 else parts[0]


def _read_csvs(root: Path) -> tuple[dict, dict, dict]:
    """(reports, labels, rescale) by VolumeName, from every CSV under the root."""
    reports, labels, rescale = {}, {}, {}
    for path in sorted(root.rglob("*.csv")):
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = set(reader.fieldnames or ())
            if "VolumeName" not in header:
                continue
            for row in reader:
                name = row["VolumeName"].strip()
                if {"Findings_EN", "Impressions_EN"} <= header:
                    reports[name] = (row["Findings_EN"] or "", row["Impressions_EN"] or "")
                if set(LABEL_COLUMNS) <= header:
                    labels[name] = {c: int(float(row[c] or 0) > 0) for c in LABEL_COLUMNS}
                if {"RescaleSlope", "RescaleIntercept"} <= header:
                    rescale[name] = (float(row["RescaleSlope"]), float(row["RescaleIntercept"]))
    return reports, labels, rescale


def _mask_path(masks_root: Path, name: str) -> Path | None:
    for candidate in (masks_root / name, masks_root / _stem(name)):
        if candidate.exists():
            return candidate
    return None


def scan_ct_rate(root: str | Path, masks: str = "masks", metadata_rescale: bool = False) -> list[CtRateVolume]:
    """Every volume with a report, labels and masks; volumes lacking one are skipped with a warning."""
    root = Path(root)
    if not (root / "dataset").is_dir():
        raise FvlmInputError(f"'{root}' has no dataset/ folder; point ct_rate_root at the CT-RATE root.")
    reports, labels, rescale = _read_csvs(root)
    masks_root = Path(masks) if Path(masks).is_absolute() else root / masks
    volumes, skipped = [], {"report": 0, "labels": 0, "masks": 0}
    for split, folder in SPLIT_FOLDERS.items():
        for path in sorted((root / "dataset" / folder).rglob("*.nii.gz")):
            name = path.name
            mask = _mask_path(masks_root, name)
            missing = [k for k, ok in (("report", name in reports), ("labels", name in labels),
                                       ("masks", mask is not None)) if not ok]
            if missing:
                skipped[missing[0]] += 1
                continue
            findings, impression = reports[name]
            volumes.append(CtRateVolume(name, split, _patient(name), path, mask, findings, impression,
                                        labels[name], rescale.get(name) if metadata_rescale else None))
    if any(skipped.values()):
        warnings.warn("CT-RATE: skipped volumes without " + ", ".join(f"{k} ({v})" for k, v in skipped.items() if v)
                      + ".", UserWarning, stacklevel=2)
    if not volumes:
        raise FvlmInputError(f"No usable CT-RATE volume under '{root}' (each needs a report row, a labels "
                             f"row and masks in '{masks_root}').")
    return volumes


def _held_out(patient: str, fraction: float) -> bool:
    digest = hashlib.sha256(patient.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < fraction


def ct_rate_splits(volumes: list[CtRateVolume], val_fraction: float, limit: int = 0) -> dict[str, list]:
    """{"train", "val", "test"}: val = hashed share of train patients, test = CT-RATE's valid."""
    splits = {"train": [], "val": [], "test": []}
    for volume in volumes:
        if volume.split == "valid":
            splits["test"].append(volume)
        else:
            splits["val" if _held_out(volume.patient, val_fraction) else "train"].append(volume)
    return {k: v[:limit] if limit else v for k, v in splits.items()}


def ct_rate_labels(labels: dict[str, int], groups) -> tuple[dict, dict]:
    """({anatomy: {finding: 0/1}} where an anatomy is a whole organ, {finding: 0/1} per study).

    CT-RATE labels are per study; they become anatomy labels only for a group that is its whole
    organ (the 'ct-rate' set's lung), never for a lobe or one side.
    """
    study = {column.lower(): value for column, value in labels.items()}
    scored = {f for g in groups for f in findings_for(g.name, FINDING_SET)}
    study = {f: v for f, v in study.items() if f in scored}
    anatomy = {g.name: {f: study[f] for f in findings_for(g.name, FINDING_SET) if f in study}
               for g in groups if organ_of(g.name) == g.name}
    return {k: v for k, v in anatomy.items() if v}, study


def ct_rate_sample(volume: CtRateVolume, model_config, config) -> tuple[ModelInput, dict[str, Any], None]:
    """(prepared input, metadata, no lesions) of one CT-RATE volume."""
    ct = read_nifti(volume.path)
    if volume.rescale is not None:
        slope, intercept = volume.rescale
        ct = ct.with_array((ct.array.astype(np.float32) * slope + intercept).astype(np.float32))
    labels = MaskFileProvider(volume.masks).segment(ct)
    prepared = prepare_for_model(ct, labels, model_config)
    decomposition = decompose_report(volume.findings, model_config.anatomy_group_set,
                                     impression=volume.impression, decomposer=config.decomposition)
    groups = [g for g in group_set(model_config.anatomy_group_set) if g.name in model_config.anatomies]
    anatomy_labels, study_labels = ct_rate_labels(volume.labels, groups)
    report = f"FINDINGS: {volume.findings}\n\nIMPRESSION: {volume.impression}\n"
    meta = {"id": _stem(volume.name), "texts": decomposition.texts, "abnormal": decomposition.abnormal,
            "report": report, "labels": anatomy_labels, "study_labels": study_labels,
            "lesion_findings": {}, "lesion_anatomies": {}}
    return prepared, meta, None
