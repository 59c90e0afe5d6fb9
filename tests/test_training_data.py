"""Training data: configs, the sample cache, batching, phantom splits and the CT-RATE layout reader."""

import csv
import json

import numpy as np
import pytest
import torch

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.preprocess import ModelInput, prepare_for_model
from napari_fvlm.core.io.nifti import write_nifti
from napari_fvlm.core.model.pooling import token_mask
from napari_fvlm.core.phantom import generate_phantom
from training import phantom_data
from training.cache import cache_folder, read_sample, write_sample
from training.config import TRAIN_CONFIG_FILE, load_config, save_run_record
from training.ctrate import LABEL_COLUMNS, ct_rate_splits, scan_ct_rate
from training.datasets import cache_key, prepare_split
from training.loader import CachedDataset, collate, epoch_batches
from training.reports import split_sections

TINY = "training/configs/phantom-tiny.json"
SHAPE, SPACING = (64, 128, 128), (5.0, 3.0, 3.0)


def test_config_overrides_record_and_refusals(tmp_path):
    config = load_config(TINY, ["batch_size=3", "model.width=64", "loss=global_clip", "train_seeds=[0, 5]"])
    assert config.batch_size == 3 and config.loss == "global_clip" and config.train_seeds == (0, 5)
    assert config.model_config().width == 64 and config.model_config().depth == 2
    save_run_record(config, tmp_path)
    record = json.loads((tmp_path / TRAIN_CONFIG_FILE).read_text())
    assert record["train"]["batch_size"] == 3 and record["model"]["width"] == 64 and "git_commit" in record
    with pytest.raises(FvlmInputError, match="overlap"):
        load_config(TINY, ["val_seeds=[4, 12]"])
    with pytest.raises(FvlmInputError, match="Unknown training config keys"):
        load_config(TINY, ["batchsize=3"])
    with pytest.raises(FvlmInputError, match="divisible"):
        load_config(TINY, ["model.width=33"])
    with pytest.raises(FvlmInputError, match="key=value"):
        load_config(TINY, ["batch_size"])


def test_cache_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((8, 12, 10), dtype=np.float32)
    masks = {"heart": rng.random((8, 12, 10)) > 0.5, "lung_left": rng.random((8, 12, 10)) > 0.7}
    prepared = ModelInput(image, masks, np.eye(4) * 2, {"heart": True, "lung_left": False}, ["aorta"])
    lesions = np.zeros((8, 12, 10), np.uint16)
    lesions[2:4, 3:5, 1:2] = 7
    meta = {"id": "x", "texts": {}, "abnormal": {}}
    for dtype, tolerance in (("float16", 1e-3), ("uint8", 0.5 / 255 + 1e-6)):
        path = write_sample(tmp_path / f"{dtype}.npz", prepared, ["heart", "aorta", "lung_left"], meta, dtype, lesions)
        sample = read_sample(path)
        assert np.abs(sample.image - image).max() <= tolerance
        assert np.array_equal(sample.masks[0], masks["heart"]) and np.array_equal(sample.masks[2], masks["lung_left"])
        assert not sample.masks[1].any() and np.array_equal(sample.lesions, lesions)
        assert sample.meta["present"] == {"heart": True, "aorta": False, "lung_left": True}
        assert sample.meta["cut"]["heart"] is True and np.array_equal(sample.affine, prepared.affine)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(FvlmInputError, match="damaged"):
        read_sample(tmp_path / "bad.npz")


def test_epoch_batches_split_the_global_batch_between_processes():
    single = epoch_batches(20, 4, 1, 0, epoch=3, seed=1)
    ranks = [epoch_batches(20, 2, 2, r, epoch=3, seed=1) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single and len(single) == 5
    assert epoch_batches(20, 4, 1, 0, epoch=4, seed=1) != single
    assert epoch_batches(10, 4, 1, 0, 0, 0) == epoch_batches(10, 4, 1, 0, 0, 0) and len(epoch_batches(10, 4, 1, 0, 0, 0)) == 2


def test_phantom_split_is_cached_once_and_collated_with_padding(tmp_path, monkeypatch):
    config = load_config(TINY, [f"cache_dir={tmp_path}", "train_seeds=[0, 3]"])
    paths = prepare_split(config, "train")
    assert [p.stem for p in paths] == ["phantom-0", "phantom-1", "phantom-2"] and all(p.exists() for p in paths)
    monkeypatch.setattr(phantom_data, "generate_phantom", lambda *a, **k: pytest.fail("regenerated"))
    assert prepare_split(config, "train") == paths
    monkeypatch.undo()
    other = load_config(TINY, [f"cache_dir={tmp_path}", "model.spacing_zyx=[8, 6, 6]"])
    assert cache_folder(tmp_path, "phantom", cache_key(config, config.model_config())) == paths[0].parent
    assert cache_folder(tmp_path, "phantom", cache_key(other, other.model_config())) != paths[0].parent

    anatomies = config.model_config().anatomies
    dataset = CachedDataset(paths, anatomies)
    items = [dataset[0], dataset[1]]
    batch = collate(items)
    shape = np.max([item["image"].shape[1:] for item in items], axis=0)
    assert tuple(batch["images"].shape) == (2, 1, *shape) and batch["masks"].shape[1] == len(anatomies)
    z, y, x = items[0]["image"].shape[1:]
    assert torch.equal(batch["images"][0, :, :z, :y, :x], items[0]["image"])
    assert batch["images"][0, :, z:].abs().sum() == 0 and not batch["masks"][0, :, z:].any()
    sample = read_sample(paths[0])
    phantom = generate_phantom(0, SHAPE, SPACING)
    assert sample.meta["report"] == phantom.report
    for finding in phantom.findings:  # every lesion of a scored kind is labelled on its anatomies
        for anatomy in sample.meta["lesion_anatomies"][str(finding.lesion_label)]:
            table = sample.meta["labels"].get(anatomy, {})
            assert table.get(finding.name, 1) == 1
    assert sample.lesions.max() == len(phantom.findings) or not phantom.findings
    texts = batch["texts"][0]
    assert texts[anatomies.index("heart")] == sample.meta["texts"]["heart"]
    assert batch["text_ids"][0].unique().numel() == len(set(texts))

    # Token-level masks, kept in memory: the padded batch holds exactly the model's token masks.
    patch = config.model_config().patch_zyx
    tokens = CachedDataset(paths, anatomies, patch_zyx=patch, in_memory=True)
    token_batch = collate([tokens[0], tokens[1]])
    assert torch.equal(token_batch["masks"], token_mask(batch["masks"].flatten(0, 1), patch).view_as(token_batch["masks"]))
    assert torch.equal(token_batch["images"], batch["images"]) and tokens[0] is tokens[0]
    assert tokens[0]["image"].dtype == torch.float16  # a float16 cache is kept as float16, exactly
    assert token_batch["shapes"].tolist() == [list(tokens[0]["image"].shape[1:]), list(tokens[1]["image"].shape[1:])]


def _fake_ct_rate(root, seeds):
    """CT-RATE's layout made from phantoms: volumes, TotalSegmentator-style masks, CSVs."""
    reports, labels, phantoms = [], [], {}
    names = {"Lung nodule": "lung nodule", "Pleural effusion": "pleural effusion", "Emphysema": "emphysema",
             "Cardiomegaly": "cardiomegaly", "Hiatal hernia": "hiatal hernia", "Atelectasis": "atelectasis",
             "Consolidation": "consolidation", "Pericardial effusion": "pericardial effusion",
             "Arterial wall calcification": "arterial wall calcification",
             "Coronary artery wall calcification": "coronary artery calcification"}
    for index, (split, seed) in enumerate(seeds):
        phantom = generate_phantom(seed, SHAPE, SPACING)
        name = f"{split}_{index}_a_1.nii.gz"
        folder = root / "dataset" / split / f"{split}_{index}" / f"{split}_{index}_a"
        write_nifti(phantom.ct, folder / name)
        if index != 1:  # the second volume has no masks: it must be skipped
            write_nifti(phantom.anatomy, root / "masks" / name)
        findings, impression = split_sections(phantom.report)
        reports.append({"VolumeName": name, "Findings_EN": findings, "Impressions_EN": impression})
        present = {f.name for f in phantom.findings}
        labels.append({"VolumeName": name, **{c: int(names.get(c) in present) for c in LABEL_COLUMNS}})
        phantoms[name] = phantom
    for rows, file in ((reports, "reports.csv"), (labels, "labels.csv")):
        path = root / "dataset" / "tables" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return phantoms


def test_ct_rate_layout_reader_on_a_fake_tree(tmp_path):
    phantoms = _fake_ct_rate(tmp_path / "ctrate", [("train", 0), ("train", 1), ("train", 2), ("valid", 3)])
    with pytest.warns(UserWarning, match="masks"):
        volumes = scan_ct_rate(tmp_path / "ctrate")
    assert sorted(v.name for v in volumes) == ["train_0_a_1.nii.gz", "train_2_a_1.nii.gz", "valid_3_a_1.nii.gz"]
    splits = ct_rate_splits(volumes, val_fraction=0.5)
    assert [v.name for v in splits["test"]] == ["valid_3_a_1.nii.gz"]
    assert sorted(v.name for v in splits["train"] + splits["val"]) == ["train_0_a_1.nii.gz", "train_2_a_1.nii.gz"]

    overrides = [f"cache_dir={tmp_path / 'cache'}", "dataset=ct-rate", f"ct_rate_root={tmp_path / 'ctrate'}",
                 "ct_rate_val_fraction=0.0", "model_preset=fvlm-b", "model.anatomy_group_set=ct-rate",
                 'model.anatomies=["lung", "heart", "esophagus", "aorta"]', "model.dropout=0.0"]
    config = load_config(TINY, overrides)
    with pytest.warns(UserWarning):
        paths = prepare_split(config, "train")
    assert [p.stem for p in paths] == ["train_0_a_1", "train_2_a_1"]
    sample = read_sample(paths[1])
    phantom = phantoms["train_2_a_1.nii.gz"]
    expected = prepare_for_model(phantom.ct, phantom.anatomy, config.model_config())
    assert sample.image.shape == expected.image.shape and np.abs(sample.image - expected.image).max() < 1e-3
    assert np.array_equal(sample.masks[0], expected.masks["lung"])
    present = {f.name for f in phantom.findings}
    assert sample.meta["study_labels"]["emphysema"] == int("emphysema" in present)
    assert sample.meta["labels"]["heart"]["cardiomegaly"] == int("cardiomegaly" in present)
    assert "lung" in sample.meta["labels"] and sample.meta["texts"]["heart"]
    assert sample.meta["report"].startswith("FINDINGS: ")
