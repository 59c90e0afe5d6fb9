"""Anatomy catalog, query words, mask files and label alignment."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm.core.anatomy import (
    GROUP_SETS,
    MaskFileProvider,
    VolumeProvider,
    align_labels,
    group_masks,
    group_set,
    groups_for_class,
    lateral_groups,
    resolve_query_anatomies,
)
from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS, TOTAL_CLASSES
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.io.nifti import write_nifti
from napari_fvlm.core.resample import grid_affine
from napari_fvlm.core.volume import Volume

LOBE_IDS = {i for i, name in TOTAL_CLASSES.items() if name.startswith("lung_") and "_lobe_" in name}


def test_every_group_is_made_of_existing_classes():
    for groups in GROUP_SETS.values():
        assert len({g.name for g in groups}) == len(groups)
        for group in groups:
            assert group.class_ids and set(group.class_ids) <= set(TOTAL_CLASSES)
            if group.side is not None:  # a lateral group holds only that side's classes
                assert all(TOTAL_CLASSES[i].endswith("_" + group.side) for i in group.class_ids)


def test_ct_rate_set_is_the_reference_models():
    groups = {g.name: set(g.class_ids) for g in group_set("ct-rate")}
    assert groups == {"lung": LOBE_IDS, "heart": {TOTAL_CLASS_IDS["heart"], TOTAL_CLASS_IDS["atrial_appendage_left"]},
                      "esophagus": {TOTAL_CLASS_IDS["esophagus"]}, "aorta": {TOTAL_CLASS_IDS["aorta"]}}
    assert len(LOBE_IDS) == 5


def test_fine_set_splits_lungs_by_side_and_lobe():
    fine = {g.name: g for g in group_set("fine")}
    assert len(fine) == 15
    assert set(fine["lung_left"].class_ids) | set(fine["lung_right"].class_ids) == LOBE_IDS
    assert {TOTAL_CLASS_IDS[n] for n in fine if n.startswith("lung_") and "_lobe_" in n} == LOBE_IDS
    assert fine["lung_lower_lobe_left"].display == "left lower lobe"
    assert set(fine["kidneys"].class_ids) == {TOTAL_CLASS_IDS["kidney_left"], TOTAL_CLASS_IDS["kidney_right"]}


def test_unknown_group_set_lists_the_known_ones():
    with pytest.raises(FvlmInputError, match="ct-rate.*fine"):
        group_set("coarse")


@pytest.mark.parametrize("set_name", sorted(GROUP_SETS))
def test_group_masks_match_a_per_voxel_reading(set_name):
    rng = np.random.default_rng(3)
    labelmap = rng.integers(0, len(TOTAL_CLASSES) + 1, size=(7, 9, 11)).astype(np.uint8)
    masks = group_masks(labelmap, set_name)
    groups = group_set(set_name)
    assert list(masks) == [g.name for g in groups]
    for group in groups:
        expected = np.array([v in group.class_ids for v in labelmap.ravel()]).reshape(labelmap.shape)
        assert masks[group.name].dtype == bool and np.array_equal(masks[group.name], expected)
    ids = [id(m) for m in masks.values()]
    assert len(set(ids)) == len(ids)  # no two groups share one array


def test_group_masks_on_wide_label_types():
    labelmap = np.array([[[0, 51, 300], [11, 5, 2]]], dtype=np.int32)  # 300: not a `total` id
    masks = group_masks(labelmap, "fine")
    assert masks["heart"].sum() == 1 and masks["lung_left"].sum() == 1 and masks["kidneys"].sum() == 1
    with pytest.raises(FvlmInputError):
        group_masks(labelmap.astype(float), "fine")


def test_groups_for_class_and_sides():
    assert groups_for_class("lung_lower_lobe_left", "fine") == ["lung_left", "lung_lower_lobe_left"]
    assert groups_for_class("lung_lower_lobe_left", "ct-rate") == ["lung"]
    assert groups_for_class("kidney_right", "fine") == ["kidneys"]
    assert groups_for_class("femur_left", "ct-rate") == []
    with pytest.raises(FvlmInputError):
        groups_for_class("left lung", "fine")
    assert lateral_groups("fine", "left") == ["lung_left", "lung_upper_lobe_left", "lung_lower_lobe_left"]
    assert lateral_groups("ct-rate", "right") == []


@pytest.mark.parametrize("text, fine, ct_rate", [
    ("nodule in the left lower lobe", ["lung_lower_lobe_left"], ["lung"]),
    ("LLL consolidation", ["lung_lower_lobe_left"], ["lung"]),
    ("RML atelectasis", ["lung_middle_lobe_right"], ["lung"]),
    ("mass in the upper lobe of the right lung", ["lung_upper_lobe_right"], ["lung"]),
    ("fluid around the heart", ["heart"], ["heart"]),
    ("pericardial effusion", ["heart"], ["heart"]),
    ("cardiomegaly", ["heart"], ["heart"]),
    ("right pleural effusion", ["lung_right"], ["lung"]),
    ("pleural effusion on the left", ["lung_left"], ["lung"]),
    ("bilateral pleural effusions", ["lung_left", "lung_right"], ["lung"]),
    ("left and right lower lobes", ["lung_lower_lobe_left", "lung_lower_lobe_right"], ["lung"]),
    ("aortic wall calcification", ["aorta"], ["aorta"]),
    ("oesophageal thickening; hiatal hernia", ["esophagus"], ["esophagus"]),
    ("hepatic steatosis", ["liver"], []),
    ("right kidney cyst and left lung nodule", ["kidneys", "lung_left"], ["lung"]),
    ("lingula scarring", ["lung_upper_lobe_left"], ["lung"]),
    ("emphysema", [], []),
    ("", [], []),
])
def test_queries_name_their_anatomies(text, fine, ct_rate):
    assert resolve_query_anatomies(text, "fine") == fine
    assert resolve_query_anatomies(text, "ct-rate") == ct_rate


def _ct(shape=(20, 24, 28), spacing=(2.0, 1.5, 1.5), origin=(30.0, 40.0, -20.0)) -> Volume:
    affine = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])
    affine[:3, 3] = origin
    return Volume(np.zeros(shape, np.int16), affine)


def _some_labels(shape) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[2:8, 3:10, 4:12] = TOTAL_CLASS_IDS["liver"]
    labels[10:15, 12:20, 5:9] = TOTAL_CLASS_IDS["heart"]
    labels[5:9, 14:22, 15:25] = TOTAL_CLASS_IDS["lung_lower_lobe_left"]
    return labels


def test_multilabel_file_written_by_totalsegmentator(tmp_path):
    from totalsegmentator.nifti_ext_header import save_multilabel_nifti
    ct = _ct()
    truth = _some_labels(ct.shape)
    own_ids = {TOTAL_CLASS_IDS["liver"]: 1, TOTAL_CLASS_IDS["heart"]: 2, TOTAL_CLASS_IDS["lung_lower_lobe_left"]: 3}
    data = np.zeros_like(truth)
    for total_id, own in own_ids.items():  # a file numbered its own way, named in its header
        data[truth == total_id] = own
    data[0, 0, 0] = 4
    image = nib.Nifti1Image(np.transpose(data, (2, 1, 0)), ct.affine)
    path = tmp_path / "segmentation.nii.gz"
    save_multilabel_nifti(image, path, {own: TOTAL_CLASSES[t] for t, own in own_ids.items()} | {4: "body_fat"})
    with pytest.warns(UserWarning, match="body_fat"):
        labels = MaskFileProvider(path).segment(ct)
    assert labels.same_grid(ct) and np.array_equal(labels.array, truth)
    assert labels.labels == {t: TOTAL_CLASSES[t] for t in own_ids}


def test_unnamed_multilabel_file_is_read_as_total_ids(tmp_path):
    ct = _ct()
    truth = _some_labels(ct.shape)
    path = tmp_path / "masks.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(truth, (2, 1, 0)), ct.affine), path)
    labels = MaskFileProvider(path).segment(ct)
    assert np.array_equal(labels.array, truth) and set(labels.labels) == set(np.unique(truth)) - {0}


def test_folder_of_class_masks(tmp_path):
    ct = _ct()
    truth = _some_labels(ct.shape)
    for total_id in (TOTAL_CLASS_IDS["liver"], TOTAL_CLASS_IDS["heart"], TOTAL_CLASS_IDS["lung_lower_lobe_left"]):
        write_nifti(ct, tmp_path / f"{TOTAL_CLASSES[total_id]}.nii.gz", (truth == total_id).astype(np.uint8))
    write_nifti(ct, tmp_path / "spleen.nii.gz", np.zeros(ct.shape, np.uint8))  # written empty, as TS does
    write_nifti(ct, tmp_path / "body_trunc.nii.gz", np.ones(ct.shape, np.uint8))
    seen = []
    with pytest.warns(UserWarning, match="body_trunc.nii.gz"):
        labels = MaskFileProvider(tmp_path).segment(ct, progress=lambda f, m: seen.append(f))
    assert np.array_equal(labels.array, truth)
    assert labels.labels == {i: TOTAL_CLASSES[i] for i in set(np.unique(truth)) - {0}}
    assert seen[-1] == 1.0 and len(seen) == 5


def test_folder_without_class_masks_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no masks here")
    with pytest.raises(FvlmInputError, match="no TotalSegmentator class masks"):
        MaskFileProvider(tmp_path).segment(_ct())
    with pytest.raises(FvlmInputError, match="no such"):
        MaskFileProvider(tmp_path / "missing.nii.gz").segment(_ct())


def test_image_file_is_not_taken_for_masks(tmp_path):
    ct = _ct()
    path = tmp_path / "ct.nii.gz"
    write_nifti(ct, path, np.full(ct.shape, -1000, np.int16))
    with pytest.raises(FvlmInputError):
        MaskFileProvider(path).segment(ct)


def test_masks_from_a_twice_coarser_grid_of_the_same_scan():
    ct = _ct(shape=(20, 24, 28))
    coarse_affine, coarse_shape = grid_affine(ct.affine, ct.shape, ct.spacing * 2)
    assert coarse_shape == (10, 12, 14)
    coarse = np.random.default_rng(1).integers(0, 2, coarse_shape).astype(np.uint8) * TOTAL_CLASS_IDS["heart"]
    labels = align_labels(ct, Volume(coarse, coarse_affine, labels={TOTAL_CLASS_IDS["heart"]: "heart"}))
    # nearest neighbour between nested grids: each fine voxel takes the coarse voxel around it
    expected = coarse.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    inner = (slice(1, -1),) * 3  # the outer half coarse voxel is the shared resampler's edge case
    assert labels.same_grid(ct) and np.array_equal(labels.array[inner], expected[inner])
    assert labels.labels == {TOTAL_CLASS_IDS["heart"]: "heart"}


def test_masks_of_another_scan_are_refused():
    ct = _ct()
    mask = _some_labels(ct.shape)
    shifted = ct.affine.copy()
    shifted[:3, 3] += (0.0, 0.0, 400.0)  # 40 cm higher: another part of the body
    with pytest.raises(FvlmInputError, match="another scan"):
        align_labels(ct, Volume(mask, shifted, labels={}))
    nudged = ct.affine.copy()
    nudged[:3, 3] += (0.0, 0.0, 4.0)  # 4 mm (two slices) off: the same scan, resampled, not refused
    moved = align_labels(ct, Volume(mask, nudged, labels={}))
    assert moved.same_grid(ct)
    assert np.array_equal(moved.array[2:], mask[:-2]) and not moved.array[:2].any()


def test_masks_in_memory_are_mapped_by_name_and_aligned():
    ct = _ct()
    truth = _some_labels(ct.shape)
    own = np.zeros_like(truth)
    own[truth == TOTAL_CLASS_IDS["heart"]] = 1
    own[truth == TOTAL_CLASS_IDS["liver"]] = 2
    own[0, 0, :3] = 3
    layer = Volume(own, ct.affine, labels={1: "heart", 2: "liver", 3: "tumour"})
    with pytest.warns(UserWarning, match="tumour"):
        labels = VolumeProvider(layer).segment(ct)
    expected = np.where(np.isin(truth, [TOTAL_CLASS_IDS["heart"], TOTAL_CLASS_IDS["liver"]]), truth, 0)
    assert np.array_equal(labels.array, expected)
    assert labels.labels == {TOTAL_CLASS_IDS["heart"]: "heart", TOTAL_CLASS_IDS["liver"]: "liver"}
    unnamed = VolumeProvider(Volume(truth.astype(np.int32), ct.affine)).segment(ct)  # a plain Labels layer
    assert np.array_equal(unnamed.array, truth)
    with pytest.raises(FvlmInputError, match="negative"):
        VolumeProvider(Volume(-truth.astype(np.int16), ct.affine)).segment(ct)
