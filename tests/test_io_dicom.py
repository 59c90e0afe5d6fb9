"""DICOM series reading: world positions and HU straight from the tags, series choice, bad input."""

from __future__ import annotations

import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import HTJ2KLossless, JPEG2000Lossless, JPEG2000MCLossless, MRImageStorage, generate_uid

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.io.dicom import is_dicom_folder, list_dicom_series, read_dicom_series
from napari_fvlm.core.volume import Volume

from dicom_fixtures import (
    SeriesGeometry,
    random_hu,
    read_back_world_hu,
    rotated_cosines,
    snapshot,
    write_ct_series,
    write_non_image_files,
)

TILT = np.radians(15.0)
GEOMETRIES = {  # name: (geometry, words the reader's note must hold, "" for a silent read)
    "axial_head_first_supine": (SeriesGeometry(slice_offsets=[2.5 * k for k in range(7)]), ""),
    "oblique": (SeriesGeometry((10.0, -30.5, 55.25), *rotated_cosines((20, -15, 30)), (0.75, 0.9),
                               [1.25 * k for k in range(7)]), ""),
    "reversed_slice_order": (SeriesGeometry(slice_offsets=[-3.0 * k for k in range(7)]), ""),
    "coronal": (SeriesGeometry(row_cosine=(1, 0, 0), col_cosine=(0, 0, -1),
                               slice_offsets=[2.0 * k for k in range(7)]), ""),
    "gantry_tilt": (SeriesGeometry(slice_offsets=[2.0 * k for k in range(7)],
                                   direction=(0.0, np.sin(TILT), np.cos(TILT))), "Gantry tilt of 15.00"),
}


@contextmanager
def unchanged(folder: Path):
    """Fail if the reader modified, added or removed anything in ``folder``."""
    before = snapshot(folder)
    yield
    assert snapshot(folder) == before


@contextmanager
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def assert_matches_dicom(volume: Volume, paths: list[Path]) -> None:
    """Every pixel of every file sits at a voxel centre of ``volume`` holding its HU, one to one."""
    world, hu = read_back_world_hu(paths)
    voxel = volume.to_voxel(world)
    index = np.rint(voxel).astype(int)
    assert np.abs(voxel - index).max() < 1e-3
    assert (index >= 0).all() and (index < volume.shape).all()
    assert len(np.unique(index, axis=0)) == len(world) == volume.array.size
    np.testing.assert_array_equal(volume.array[tuple(index.T)], hu)
    np.testing.assert_allclose(volume.to_world(index), world, atol=1e-3)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_every_voxel_lands_at_its_dicom_position_with_its_hu(tmp_path, name):
    geometry, note_words = GEOMETRIES[name]
    folder = tmp_path / "series"
    paths = write_ct_series(folder, random_hu((7, 6, 5), seed=3), geometry, seed=4)
    with unchanged(folder):
        if note_words:
            with pytest.warns(UserWarning, match=note_words):
                volume = read_dicom_series(folder)
        else:
            with no_warnings():
                volume = read_dicom_series(folder)
    assert volume.array.dtype == np.int16 and volume.array.flags.c_contiguous
    assert_matches_dicom(volume, paths)
    assert nib.aff2axcodes(volume.affine) == ("L", "P", "S")  # canonical voxel order
    # the file's own voxel order, kept for writers, describes the same voxels
    source = volume.source
    file_order = source.reorientation.to_source(volume.array).transpose(2, 1, 0)
    assert_matches_dicom(Volume(np.ascontiguousarray(file_order), source.affine), paths)
    details = source.details
    assert source.format == "dicom" and source.path == str(folder)
    assert details["series_uid"] == pydicom.dcmread(paths[0]).SeriesInstanceUID
    assert details["modality"] == "CT" and details["patient_id"] == "PHANTOM-001"
    assert details["description"] == "synthetic CT"
    assert (note_words in details["note"]) if note_words else details["note"] == ""


def test_pydicom_ct_small_single_slice(tmp_path):
    source_file = Path(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(source_file, folder / "CT_small.dcm")
    ds = pydicom.dcmread(source_file)
    with unchanged(folder), pytest.warns(UserWarning, match="SliceThickness"):
        volume = read_dicom_series(folder)
    assert volume.shape == (1, ds.Rows, ds.Columns)
    ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * col_spacing, iop[3:] * row_spacing
    lps[:3, 2] = np.cross(iop[:3], iop[3:]) * float(ds.SliceThickness)  # a single slice: its thickness
    lps[:3, 3] = ipp
    assert volume.source.reorientation.is_identity  # an axial slice is already canonical
    np.testing.assert_allclose(volume.affine, np.diag([-1, -1, 1, 1]) @ lps, atol=1e-6)
    expected_hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[0], expected_hu)
    assert_matches_dicom(volume, [folder / "CT_small.dcm"])
    assert volume.source.details["patient_id"] == str(ds.PatientID)


def _several_series(folder: Path) -> dict[str, list[Path]]:
    """A small CT, a larger CT in a sub-folder, a still larger MR, and non-image files."""
    series = {
        "small": write_ct_series(folder, random_hu((4, 6, 5), 1), SeriesGeometry(), seed=1,
                                 description="scout"),
        "large": write_ct_series(folder / "sub", random_hu((9, 8, 6), 2), SeriesGeometry(), seed=2,
                                 description="chest CT"),
        "mr": write_ct_series(folder, random_hu((12, 6, 5), 3), SeriesGeometry(), seed=3, description="MR T1",
                              modality="MR", sop_class=MRImageStorage),
    }
    write_non_image_files(folder)
    return series


def test_several_series_largest_ct_chosen_and_others_named(tmp_path):
    folder = tmp_path / "study"
    series = _several_series(folder)
    uid = {key: pydicom.dcmread(paths[0]).SeriesInstanceUID for key, paths in series.items()}
    with unchanged(folder):
        with no_warnings():  # the DICOMDIR, the report and the text files are skipped silently
            infos = list_dicom_series(folder)
        assert [i.series_uid for i in infos] == [uid["large"], uid["small"], uid["mr"]]
        assert [(i.n_files, i.n_slices, i.rows, i.cols) for i in infos] == [
            (9, 9, 8, 6), (4, 4, 6, 5), (12, 12, 6, 5)]
        assert [(i.modality, i.is_ct_image) for i in infos] == [("CT", True), ("CT", True), ("MR", False)]
        with pytest.warns(UserWarning, match="3 series") as caught:
            volume = read_dicom_series(folder)
        note = volume.source.details["note"]
        assert note == str(caught[0].message)
        assert uid["small"] in note and uid["mr"] in note and "scout" in note and "MR T1" in note
        assert volume.source.details["series_uid"] == uid["large"]
        assert_matches_dicom(volume, series["large"])
        with no_warnings():
            chosen = read_dicom_series(folder, series_uid=uid["small"])
            from_file = read_dicom_series(series["mr"][0])  # a file reads its own series
        assert chosen.source.details["note"] == ""
        assert_matches_dicom(chosen, series["small"])
        assert_matches_dicom(from_file, series["mr"])
        with pytest.raises(FvlmInputError, match="No image series with UID 1.2.3"):
            read_dicom_series(folder, series_uid="1.2.3")


def test_is_dicom_folder(tmp_path):
    write_ct_series(tmp_path / "flat", random_hu((2, 4, 4)), SeriesGeometry())
    write_ct_series(tmp_path / "nested" / "a" / "b", random_hu((2, 4, 4)), SeriesGeometry())
    (tmp_path / "notes").mkdir()
    for k in range(5):
        (tmp_path / "notes" / f"n{k}.txt").write_text("a note, not an image\n" * 20)
    assert is_dicom_folder(tmp_path / "flat") and is_dicom_folder(tmp_path / "nested")
    assert not is_dicom_folder(tmp_path / "notes")
    assert not is_dicom_folder(tmp_path / "missing")
    assert not is_dicom_folder(next((tmp_path / "flat").iterdir()))  # a file is not a folder


@pytest.mark.parametrize(
    "slope, intercept, peak, dtype",
    [(1.0, -1024.0, 3000, np.int16), (0.5, -1024.0, 3000, np.float32), (1.0, -1024.0, 40000, np.float32)],
)
def test_hu_dtype_is_int16_only_when_exact(tmp_path, slope, intercept, peak, dtype):
    hu = random_hu((3, 5, 4), seed=5).astype(np.float64)
    hu[1, 2, 3] = peak
    paths = write_ct_series(tmp_path, hu, SeriesGeometry(), slope=slope, intercept=intercept)
    volume = read_dicom_series(tmp_path)
    assert volume.array.dtype == dtype
    assert_matches_dicom(volume, paths)
    assert volume.array.max() == peak


def test_non_uniform_spacing_warns_and_uses_the_median_step(tmp_path):
    offsets = [0.0, 2.0, 4.0, 6.4, 8.4, 10.4, 12.4]
    write_ct_series(tmp_path, random_hu((7, 4, 4)), SeriesGeometry(slice_offsets=offsets))
    with unchanged(tmp_path), pytest.warns(UserWarning, match="not uniform"):
        volume = read_dicom_series(tmp_path)
    assert volume.spacing[0] == pytest.approx(2.0)
    assert "median step 2 mm" in volume.source.details["note"]


def _refused(folder: Path, *words: str) -> str:
    with unchanged(folder), pytest.raises(FvlmInputError) as error:
        read_dicom_series(folder)
    message = str(error.value)
    for word in words:
        assert word in message
    return message


def test_empty_and_non_dicom_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "No DICOM images")
    write_non_image_files(tmp_path / "other")
    _refused(tmp_path / "other", "No DICOM images")
    with pytest.raises(FvlmInputError, match="is not a folder"):
        read_dicom_series(tmp_path / "missing")


def test_missing_slices_are_refused_with_their_position(tmp_path):
    paths = write_ct_series(tmp_path, random_hu((10, 4, 4)), SeriesGeometry(origin_lps=(0, 0, 40.0)))
    paths[4].unlink(), paths[5].unlink()
    _refused(tmp_path, "missing 2 slice", "between 46.00 and 52.00 mm", "step elsewhere is 2 mm")


def test_duplicate_positions_are_refused(tmp_path):
    write_ct_series(tmp_path, random_hu((6, 4, 4)), SeriesGeometry(slice_offsets=[0, 2, 4, 4, 6, 8]))
    _refused(tmp_path, "share a position", "choose another series")


@pytest.mark.parametrize("odd, words", [
    ({"geometry": SeriesGeometry(slice_offsets=[10.0]), "shape": (1, 7, 4)},
     "image sizes (5 slices 4x4, 1 7x4"),
    ({"geometry": SeriesGeometry(row_cosine=rotated_cosines((0, 0, 20))[0],
                                 col_cosine=rotated_cosines((0, 0, 20))[1], slice_offsets=[10.0]),
      "shape": (1, 4, 4)},
     "slice orientations"),
])
def test_mixed_slices_in_one_series_are_refused(tmp_path, odd, words):
    uid = generate_uid()
    write_ct_series(tmp_path, random_hu((5, 4, 4)), SeriesGeometry(), series_uid=uid, seed=1)
    write_ct_series(tmp_path, random_hu(odd["shape"]), odd["geometry"], series_uid=uid, seed=2)
    _refused(tmp_path, words, "not one 3D volume")


def _unsupported_syntax():
    """A compressed transfer syntax that this environment cannot decode."""
    from pydicom.pixels import get_decoder

    for uid in (JPEG2000Lossless, HTJ2KLossless, JPEG2000MCLossless):
        try:
            if not get_decoder(uid).is_available:
                return uid
        except NotImplementedError:  # pydicom has no decoder at all for it
            return uid
    raise AssertionError("JPEG 2000 Part 2 has no pydicom decoder; one of these must be unsupported")


def test_unsupported_compression_names_the_syntax_and_what_to_do(tmp_path):
    syntax = _unsupported_syntax()
    write_ct_series(tmp_path, random_hu((3, 4, 4)), SeriesGeometry(), transfer_syntax=syntax)
    message = _refused(tmp_path, syntax.name, str(syntax))
    assert "pip install" in message or "uncompressed transfer syntax" in message


def test_truncated_files(tmp_path):
    good = write_ct_series(tmp_path / "a", random_hu((6, 5, 4), 1), SeriesGeometry(), seed=1)
    other = write_ct_series(tmp_path / "other", random_hu((1, 5, 4), 2), SeriesGeometry(), seed=2)
    (tmp_path / "a" / "broken.dcm").write_bytes(other[0].read_bytes()[:400])  # header cut short
    with unchanged(tmp_path / "a"), pytest.warns(UserWarning, match=r"1 unreadable DICOM file.*broken\.dcm"):
        volume = read_dicom_series(tmp_path / "a")  # skipped: the series is still whole
    assert_matches_dicom(volume, good)

    good[2].write_bytes(good[2].read_bytes()[:-30])  # a slice of the series loses its pixel tail
    with pytest.warns(UserWarning, match=good[2].name):
        _refused(tmp_path / "a", "missing 1 slice")

    for path in good:
        path.write_bytes(path.read_bytes()[:-30])
    with pytest.warns(UserWarning, match="unreadable"):
        _refused(tmp_path / "a", "could be read")


@pytest.mark.parametrize("encoding", ["unsigned 12 of 16 bits, junk above", "signed 16 bits"])
def test_stored_bits_and_sign_decode_as_pydicom_does(tmp_path, encoding):
    hu = np.clip(random_hu((3, 5, 4), seed=6), -1024, 3071)
    paths = write_ct_series(tmp_path, hu, SeriesGeometry())
    for path in paths:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int32)  # hu + 1024, in [0, 4095]
        if encoding.startswith("unsigned"):
            stored[::2] |= 0xF000  # bits above BitsStored must be ignored
            ds.BitsStored, ds.HighBit = 12, 11
            ds.PixelData = stored.astype("<u2").tobytes()
        else:
            ds.PixelRepresentation, ds.RescaleIntercept = 1, "0"
            ds.PixelData = (stored - 1024).astype("<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    volume = read_dicom_series(tmp_path)
    assert volume.array.dtype == np.int16
    assert_matches_dicom(volume, paths)
    np.testing.assert_array_equal(np.sort(volume.array, axis=None), np.sort(hu, axis=None))
