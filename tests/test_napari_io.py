"""Drag-and-drop into a real napari viewer, radiological display, writer round trip, bad files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm._reader import get_reader, prefer_this_reader_for_nifti
from napari_fvlm.widgets.window_presets import WindowPresetsWidget


def _ct_with_markers(path, stored_codes=("R", "A", "S")):
    """A CT whose bright markers sit at the patient's LEFT (RAS x < 0) and ANTERIOR (RAS y > 0)."""
    shape = (40, 50, 30)  # in stored RAS order: x (R->L flipped below), y, z
    data = np.full(shape, -1000, np.int16)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-30.0, -37.5, -30.0]
    centre = np.array([20, 25, 15])
    left_marker = centre - [12, 0, 0]        # RAS +x is the patient's right, so left is -x
    anterior_marker = centre + [0, 14, 0]    # +y: anterior
    data[tuple(slice(c - 2, c + 3) for c in left_marker)] = 1000
    data[tuple(slice(c - 2, c + 3) for c in anterior_marker)] = 150  # grey, not white
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                           nib.orientations.axcodes2ornt(stored_codes))
    stored = nib.orientations.apply_orientation(data, ornt)
    stored_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    nib.save(nib.Nifti1Image(stored, stored_affine), path)
    return nib.affines.apply_affine(affine, [left_marker, anterior_marker])


def test_reader_claims_nifti_and_declines_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty_dir").mkdir()
    assert get_reader(str(tmp_path / "scan.nii.gz")) is not None
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "empty_dir")) is None


@pytest.mark.parametrize("codes", [("R", "A", "S"), ("L", "P", "S"), ("A", "R", "I")])
def test_drag_and_drop_shows_radiological_orientation_in_mm(make_napari_viewer, tmp_path, codes):
    path = tmp_path / "ct.nii.gz"
    (left_world, anterior_world) = _ct_with_markers(path, codes)
    viewer = make_napari_viewer(show=True)  # hidden viewers give black screenshots
    prefer_this_reader_for_nifti()  # what the plugin's widgets and `fvlm demo` do
    layers = viewer.open(str(path), plugin=None)  # no plugin named: as a drag-and-drop does
    assert len(layers) == 1
    layer = layers[0]
    np.testing.assert_allclose(layer.scale, [2.0, 1.5, 1.5])
    assert "affine_ras" in layer.metadata
    # napari world is LPS mm (z, y, x): the left marker sits at +x (screen right), anterior at -y (up).
    for world, axis, sign in [(left_world, 2, +1), (anterior_world, 1, -1)]:
        lps_zyx = np.array([world[2], -world[1], -world[0]])
        data_pos = np.rint(layer.world_to_data(lps_zyx)).astype(int)
        assert layer.data[tuple(data_pos)] > 0
    viewer.dims.set_point(0, left_world[2])
    shot = viewer.screenshot(canvas_only=True, flash=False)
    bright = np.argwhere(shot[..., 0] > 250)
    assert len(bright), "the left marker is not visible on screen"
    assert bright[:, 1].mean() > shot.shape[1] / 2, "patient's left must be on screen right"
    grey = np.argwhere((shot[..., 0] > 100) & (shot[..., 0] < 250))
    assert grey[:, 0].mean() < shot.shape[0] / 2, "anterior must be up"


def test_writer_round_trip_restores_original_file_geometry(make_napari_viewer, tmp_path):
    path = tmp_path / "ct.nii.gz"
    _ct_with_markers(path, ("P", "S", "R"))
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin="napari-fvlm")[0]
    out = tmp_path / "exported.nii.gz"
    layer.save(str(out), plugin="napari-fvlm")
    original, copy = nib.load(path), nib.load(out)
    np.testing.assert_array_equal(copy.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(copy.dataobj), np.asanyarray(original.dataobj))
    labels = viewer.add_labels((layer.data > 600).astype(np.uint8), name="bright",
                               scale=layer.scale, translate=layer.translate,
                               metadata=dict(layer.metadata))
    mask_out = tmp_path / "bright.nii.gz"
    labels.save(str(mask_out), plugin="napari-fvlm")
    mask = nib.load(mask_out)
    np.testing.assert_array_equal(mask.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj) > 0, np.asanyarray(original.dataobj) > 600)


def test_writer_refuses_to_overwrite_the_source(make_napari_viewer, tmp_path):
    path = tmp_path / "ct.nii.gz"
    _ct_with_markers(path)
    before = path.read_bytes()
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin="napari-fvlm")[0]
    with pytest.raises(OSError, match="read from"):
        layer.save(str(path), plugin="napari-fvlm")
    assert path.read_bytes() == before


def test_mask_file_opens_as_named_labels(make_napari_viewer, tmp_path):
    from totalsegmentator.nifti_ext_header import save_multilabel_nifti

    mask = np.zeros((8, 9, 10), np.uint8)
    mask[1:3, 1:3, 1:3] = 5
    mask[4:6, 4:6, 4:6] = 51
    save_multilabel_nifti(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "seg.nii.gz", {5: "liver", 51: "heart"})
    viewer = make_napari_viewer()
    layer = viewer.open(str(tmp_path / "seg.nii.gz"), plugin="napari-fvlm")[0]
    assert layer._type_string == "labels"
    names = dict(zip(layer.features["index"], layer.features["name"]))
    assert names[5] == "liver" and names[51] == "heart"


def test_broken_file_gives_one_notification_and_no_layer(make_napari_viewer, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("napari_fvlm._reader._notify_error", shown.append)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    viewer = make_napari_viewer()
    viewer.open(str(bad), plugin="napari-fvlm")
    assert len(viewer.layers) == 0
    assert len(shown) == 1 and "broken.nii.gz" in shown[0]


def test_window_presets_set_contrast(make_napari_viewer, tmp_path):
    path = tmp_path / "ct.nii.gz"
    _ct_with_markers(path)
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin="napari-fvlm")[0]
    widget = WindowPresetsWidget(viewer)
    widget.apply("lung")
    assert tuple(layer.contrast_limits) == (-1350.0, 150.0)
    widget.apply("bone")
    assert tuple(layer.contrast_limits) == (-500.0, 1300.0)


def test_dicom_folder_drops_onto_the_viewer_and_other_series_are_announced(make_napari_viewer, tmp_path):
    from dicom_fixtures import SeriesGeometry, random_hu, write_ct_series

    folder = tmp_path / "study"
    hu = random_hu((12, 20, 24))
    write_ct_series(folder, hu, SeriesGeometry(), seed=1)
    write_ct_series(folder, random_hu((4, 20, 24), seed=2), SeriesGeometry(), seed=3)  # a scout
    assert get_reader(str(folder)) is not None
    viewer = make_napari_viewer()
    # napari's builtin reader also claims folders, so napari asks once which plugin opens them
    with pytest.warns(UserWarning, match="series"):
        layers = viewer.open(str(folder), plugin="napari-fvlm")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.shape == (12, 20, 24)
    np.testing.assert_allclose(layer.scale, [2.0, 0.8, 0.6])
    # standard axial DICOM (rows to posterior, columns to the left) is already radiological
    np.testing.assert_array_equal(layer.data, hu)
