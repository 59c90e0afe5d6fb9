"""NIfTI reading: world coordinates and values against nibabel, exact write-back, bad input."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.geometry import CANONICAL_AXCODES
from napari_fvlm.core.io.nifti import read_nifti, write_nifti
from napari_fvlm.core.volume import Volume

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
REAL_FILES = [
    NIBABEL_DATA / "anatomical.nii",
    NIBABEL_DATA / "standard.nii.gz",
    NIBABEL_DATA / "reoriented_anat_moved.nii",
]


def _head_ct() -> Path:
    import totalsegmentator

    return Path(totalsegmentator.__file__).parent / "resources" / "ct_brain_atlas_1mm.nii.gz"


def _check_against_nibabel(path: Path, n_points: int = 500) -> None:
    reference = nib.load(path)
    ref_data = np.asanyarray(reference.dataobj)
    volume = read_nifti(path)
    assert nib.aff2axcodes(volume.affine) == CANONICAL_AXCODES
    rng = np.random.default_rng(0)
    ijk = np.stack([rng.integers(0, s, n_points) for s in ref_data.shape[:3]], axis=1)
    world = nib.affines.apply_affine(reference.affine, ijk)
    zyx = np.rint(volume.to_voxel(world)).astype(int)
    np.testing.assert_allclose(volume.to_world(zyx), world, atol=1e-3)
    ours = volume.array[zyx[:, 0], zyx[:, 1], zyx[:, 2]]
    np.testing.assert_allclose(ours, ref_data[ijk[:, 0], ijk[:, 1], ijk[:, 2]], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_world_coordinates_match_nibabel_on_its_test_files(path):
    _check_against_nibabel(path)


def test_world_coordinates_match_nibabel_on_real_head_ct():
    path = _head_ct()
    _check_against_nibabel(path)
    volume = read_nifti(path)
    assert volume.labels is None and volume.array.min() < 0  # an image in HU, not a mask


@pytest.mark.parametrize("codes", [("R", "A", "S"), ("L", "P", "S"), ("P", "S", "R"), ("L", "I", "A")])
def test_any_stored_orientation_reads_to_the_same_canonical_volume(tmp_path, codes):
    base = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 500
    base_affine = np.diag([-1.5, -2.0, 3.0, 1.0])  # stored as L, P, S
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("L", "P", "S")),
                                           nib.orientations.axcodes2ornt(codes))
    data = nib.orientations.apply_orientation(base, ornt)
    affine = base_affine @ nib.orientations.inv_ornt_aff(ornt, base.shape)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "x.nii.gz")
    volume = read_nifti(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(volume.array, base.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, base_affine, atol=1e-6)


def test_nifti2_and_4d_series(tmp_path):
    series = NIBABEL_DATA / "example_nifti2.nii.gz"  # NIfTI-2, 4D: refused with a clear reason
    with pytest.raises(FvlmInputError, match="4D"):
        read_nifti(series)
    image = nib.load(series)
    first = nib.Nifti2Image(np.asanyarray(image.dataobj)[..., 0], image.affine)
    nib.save(first, tmp_path / "first.nii.gz")
    _check_against_nibabel(tmp_path / "first.nii.gz")


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_write_back_restores_voxel_order_and_affine_exactly(tmp_path, path):
    original = nib.load(path)
    volume = read_nifti(path)
    out = write_nifti(volume, tmp_path / "copy.nii.gz")
    copy = nib.load(out)
    np.testing.assert_array_equal(copy.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(copy.dataobj), np.asanyarray(original.dataobj))
    assert copy.shape == original.shape


def test_masks_keep_their_names_through_a_round_trip(tmp_path):
    mask = np.zeros((10, 12, 14), np.uint8)
    mask[2:5, 3:6, 4:8] = 5
    mask[6:8, 1:3, 1:3] = 200  # not a TotalSegmentator `total` id: nothing names it
    nib.save(nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "m.nii.gz")
    volume = read_nifti(tmp_path / "m.nii.gz")
    assert volume.labels == {5: "label 5", 200: "label 200"}
    assert "not TotalSegmentator `total` ids" in volume.source.details["note"]
    volume.labels = {5: "liver", 200: "tumour"}
    reread = read_nifti(write_nifti(volume, tmp_path / "named.nii.gz"))
    assert reread.labels == {5: "liver", 200: "tumour"} and reread.source.details["note"] == ""
    np.testing.assert_array_equal(reread.array, volume.array)


def test_label_names_with_xml_characters_survive_a_round_trip(tmp_path):
    mask = np.zeros((6, 6, 6), np.uint8)
    for value in (1, 2, 3, 4):
        mask[value, :2, :2] = value
    names = {1: "lung & pleura", 2: "nodule <5 mm", 3: 'ground-glass "GGO" ]]> odd', 4: "Lunge rechts: Oberlappen ü"}
    volume = read_nifti(write_nifti(Volume(mask, np.eye(4), labels=names), tmp_path / "a.nii.gz"))
    assert volume.labels == names
    assert read_nifti(write_nifti(volume, tmp_path / "b.nii.gz")).labels == names  # and a second time


def test_a_label_name_xml_cannot_hold_is_refused_before_writing(tmp_path):
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = 7
    with pytest.raises(FvlmInputError, match="label 7.*U\\+0001"):
        write_nifti(Volume(mask, np.eye(4), labels={7: "bad\x01name"}), tmp_path / "c.nii.gz")
    assert not list(tmp_path.iterdir())


def test_totalsegmentator_multilabel_names_are_read(tmp_path):
    from totalsegmentator.nifti_ext_header import save_multilabel_nifti

    mask = np.zeros((8, 8, 8), np.uint8)
    mask[1:3, 1:3, 1:3] = 10
    mask[4:6, 4:6, 4:6] = 52
    save_multilabel_nifti(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "seg.nii.gz",
                          {10: "lung_upper_lobe_left", 52: "aorta"})
    assert read_nifti(tmp_path / "seg.nii.gz").labels == {10: "lung_upper_lobe_left", 52: "aorta"}


def test_nan_and_inf_are_replaced_with_a_warning(tmp_path):
    data = np.linspace(-1000, 1000, 6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.warns(UserWarning, match="NaN/infinite"):
        volume = read_nifti(tmp_path / "nan.nii.gz")
    assert np.isfinite(volume.array).all()
    assert volume.array.max() <= 1000 and volume.array.min() >= -1000


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16) - 1000, np.eye(4)), good)
    raw = good.read_bytes()
    cases = {
        "empty": ("empty.nii.gz", b"", "empty"),
        "truncated": ("cut.nii.gz", raw[: len(raw) // 2], "truncated"),
        "renamed png": ("image.nii.gz", b"\x89PNG\r\n\x1a\n" + b"\0" * 400, "another format"),
        "renamed text": ("notes.nii", b"hello " * 100, "not a NIfTI"),
    }
    out = {}
    for key, (name, content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        out[key] = (tmp_path / name, words)
    two_d = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), two_d)
    out["2D"] = (two_d, "2D")
    four_d = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), four_d)
    out["4D"] = (four_d, "4D")
    all_nan = tmp_path / "allnan.nii"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), all_nan)
    out["all NaN"] = (all_nan, "NaN")
    return out


def test_bad_files_give_one_clear_error_and_are_not_modified(tmp_path):
    for key, (path, words) in _bad_files(tmp_path).items():
        before = (path.read_bytes(), os.stat(path).st_mtime_ns)
        with pytest.raises(FvlmInputError, match=words) as info:
            read_nifti(path)
        assert path.name in str(info.value), key
        assert "\n" not in str(info.value), key
        assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before, key


def test_unreadable_file_is_refused(tmp_path):
    with pytest.raises(FvlmInputError, match="cannot read"):
        read_nifti(tmp_path / "missing.nii.gz")


def test_gzip_fallback_gives_the_same_volume_as_isal(tmp_path, monkeypatch):
    data = np.random.default_rng(1).integers(-1000, 2000, (9, 10, 11)).astype(np.int16)
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    fast = read_nifti(path).array.copy()
    import isal.igzip

    monkeypatch.setattr(isal.igzip, "decompress", lambda raw: gzip.decompress(raw))
    np.testing.assert_array_equal(read_nifti(path).array, fast)
