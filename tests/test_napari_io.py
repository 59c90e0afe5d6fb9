"""Drag-and-drop into a real napari viewer, radiological display, writer round trip, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm._reader import READER_PATTERNS, get_reader, prefer_this_reader
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.widgets.window_presets import WindowPreset, window_presets


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
    prefer_this_reader()  # what the panel does when the user agrees
    layers = viewer.open(str(path), plugin=None)  # no plugin named: as a drag-and-drop does
    assert len(layers) == 1
    layer = layers[0]
    np.testing.assert_allclose(layer.scale, [2.0, 1.5, 1.5])
    assert "fvlm_affine_ras" in layer.metadata
    # napari world is LPS mm (z, y, x): the left marker sits at +x (screen right), anterior at -y (up).
    for world in (left_world, anterior_world):
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
    widget = window_presets()
    viewer.window.add_dock_widget(widget)
    assert widget.layer.value is layer  # the form offers the viewer's image layers
    widget.preset.value = WindowPreset.lung
    widget()  # what Apply does
    assert tuple(layer.contrast_limits) == (-1350.0, 150.0)
    widget.preset.value = WindowPreset.bone
    widget()
    assert tuple(layer.contrast_limits) == (-500.0, 1300.0)


def _study_with_a_scout(folder):
    from dicom_fixtures import SeriesGeometry, random_hu, write_ct_series

    hu = random_hu((12, 20, 24))
    chest = write_ct_series(folder, hu, SeriesGeometry(), seed=1, description="chest")
    scout_hu = random_hu((4, 20, 24), seed=2)
    scout = write_ct_series(folder, scout_hu, SeriesGeometry(), seed=3, description="scout")
    return hu, chest, scout_hu, scout


def test_dicom_folder_says_in_the_viewer_which_series_it_opened_and_opens_another(
        make_napari_viewer, tmp_path, notifications):
    folder = tmp_path / "study"
    hu, _chest, scout_hu, _scout = _study_with_a_scout(folder)
    assert get_reader(str(folder)) is not None
    viewer = make_napari_viewer()
    # napari's builtin reader also claims folders, so napari asks once which plugin opens them
    layers = viewer.open(str(folder), plugin="napari-fvlm")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name == "study (chest)"  # the layer list says which series this is
    assert layer.data.shape == (12, 20, 24)
    np.testing.assert_allclose(layer.scale, [2.0, 0.8, 0.6])
    # standard axial DICOM (rows to posterior, columns to the left) is already radiological
    np.testing.assert_array_equal(layer.data, hu)
    series = layer.metadata["fvlm_dicom_series"]
    assert series["description"] == "chest" and len(series["other_series"]) == 1
    assert "'scout'" in series["other_series"][0]
    [shown] = [n for n in notifications if "2 series" in n.message]
    assert "'chest'" in shown.message and "'scout'" in shown.message
    [(button, open_other)] = shown.actions
    assert button == "Open 'scout' (4 slices)"
    open_other(None)  # the button on the notification
    assert [lyr.name for lyr in viewer.layers] == ["study (chest)", "study (scout)"]
    np.testing.assert_array_equal(viewer.layers["study (scout)"].data, scout_hu)


def test_a_dropped_dcm_file_opens_its_own_series(make_napari_viewer, tmp_path, notifications):
    folder = tmp_path / "study"
    _hu, _chest, scout_hu, scout = _study_with_a_scout(folder)
    dropped = scout[0].rename(scout[0].with_suffix(".dcm"))
    assert get_reader(str(dropped)) is not None
    viewer = make_napari_viewer()
    prefer_this_reader()  # else napari asks which reader (its builtin one claims *.dcm too)
    layers = viewer.open(str(dropped), plugin=None)  # as a drag-and-drop does
    assert [lyr.name for lyr in layers] == ["study (scout)"]
    np.testing.assert_array_equal(layers[0].data, scout_hu)  # that series only, all of its slices
    assert not [n for n in notifications if n.severity == "error"]


def test_a_single_slice_is_refused_as_a_ct_volume(make_napari_viewer, tmp_path, notifications):
    from dicom_fixtures import SeriesGeometry, random_hu, write_ct_series

    [path] = write_ct_series(tmp_path / "one", random_hu((1, 20, 24)), SeriesGeometry())
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "one"), plugin="napari-fvlm")
    assert len(viewer.layers) == 0
    [refusal] = [n.message for n in notifications if n.severity == "error"]
    assert refusal == ("one: a single 20 x 24 slice, not a CT volume; open the whole series (its folder, "
                       "or a file of it beside the others).")
    dcm = path.rename(path.with_suffix(".dcm"))
    viewer.open(str(dcm), plugin="napari-fvlm")
    assert len(viewer.layers) == 0 and "single 20 x 24 slice" in notifications[-1].message


def test_manifest_claims_only_what_the_reader_opens(tmp_path):
    import npe2
    import yaml

    import napari_fvlm

    manifest = yaml.safe_load((Path(napari_fvlm.__file__).parent / "napari.yaml").read_text())
    [reader] = manifest["contributions"]["readers"]
    assert reader["filename_patterns"] == list(READER_PATTERNS) and "*" not in reader["filename_patterns"]
    manager = npe2.PluginManager.instance()
    manager.discover()

    def claimed_by_us(path) -> bool:
        return any(r.plugin_name == "napari-fvlm" for r in manager.iter_compatible_readers([str(path)]))

    for name in ("photo.png", "stack.tif", "stack.tiff", "table.csv", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
        assert not claimed_by_us(tmp_path / name), name  # napari never asks "which reader?" for these
    for name in ("ct.nii", "ct.nii.gz", "slice.dcm"):
        assert claimed_by_us(tmp_path / name), name
    assert claimed_by_us(tmp_path)  # folders: get_reader then claims DICOM ones only
    assert get_reader(str(tmp_path / "photo.png")) is None
    (tmp_path / "fake.dcm").write_bytes(b"not dicom")
    assert get_reader(str(tmp_path / "fake.dcm")) is None


def _mask_file(path, values) -> Path:
    """A uint8 mask with one 3 x 3 x 3 block per value, without label names."""
    mask = np.zeros((12, 9, 10), np.uint8)
    for k, value in enumerate(values):
        mask[1 + 4 * (k % 3):4 + 4 * (k % 3), 1 + 4 * (k // 3):4 + 4 * (k // 3), 2:5] = value
    nib.save(nib.Nifti1Image(mask, np.diag([1.5, 1.5, 2.0, 1.0])), path)
    return path


def _names(layer) -> dict:
    return {int(i): n for i, n in zip(layer.features["index"], layer.features["name"]) if i}


def _mask_labels_for_analysis(path):
    """The `total`-id labels the analysis would read from a mask file (a CT on the mask's own grid)."""
    from napari_fvlm.core.anatomy.providers import MaskFileProvider
    from napari_fvlm.core.io.nifti import read_nifti

    mask = read_nifti(path)
    return MaskFileProvider(path).segment(mask.with_array(np.zeros(mask.shape, np.int16))).labels


@pytest.mark.parametrize("sidecar, content", [
    ("labels.json", {"5": "liver", "51": "Heart"}),                        # id -> name
    ("seg.labels.json", {"liver": 5, "Heart": 51}),                        # name -> id, for this file only
    ("labels.json", {"name": "x", "labels": {"background": 0, "liver": 5, "Heart": 51}}),  # dataset.json
])
def test_mask_names_come_from_a_labels_json_beside_the_file(make_napari_viewer, tmp_path, notifications,
                                                           sidecar, content):
    path = _mask_file(tmp_path / "seg.nii.gz", [5, 51])
    (tmp_path / sidecar).write_text(json.dumps(content))
    layer = make_napari_viewer().open(str(path), plugin="napari-fvlm")[0]
    assert layer._type_string == "labels" and _names(layer) == {5: "liver", 51: "Heart"}
    assert not notifications  # named by the file: nothing odd to say
    assert _mask_labels_for_analysis(path) == {5: "liver", 51: "heart"}


def test_unnamed_mask_with_totalsegmentator_ids_is_named_as_its_classes(make_napari_viewer, tmp_path,
                                                                        notifications):
    path = _mask_file(tmp_path / "seg.nii.gz", [13, 51, 52])
    layer = make_napari_viewer().open(str(path), plugin="napari-fvlm")[0]
    assert _names(layer) == {13: "lung_middle_lobe_right", 51: "heart", 52: "aorta"}
    [said] = [n.message for n in notifications]
    assert "seg.nii.gz: no label names in the file; its values are TotalSegmentator `total` ids" in said


def test_a_binary_mask_is_not_taken_for_the_spleen(make_napari_viewer, tmp_path, notifications):
    path = _mask_file(tmp_path / "tumour.nii.gz", [1])
    layer = make_napari_viewer().open(str(path), plugin="napari-fvlm")[0]
    assert _names(layer) == {1: "label 1"}  # not "spleen", TotalSegmentator's class 1
    [said] = [n.message for n in notifications]
    assert said.startswith("tumour.nii.gz: a single unnamed region (value 1): it does not say which anatomy")
    with pytest.raises(FvlmInputError, match="single unnamed region .* not taken as `total` class 1, spleen"):
        _mask_labels_for_analysis(path)
    (tmp_path / "labels.json").write_text('{"1": "liver"}')  # what the message suggests
    assert _mask_labels_for_analysis(path) == {5: "liver"}


def test_a_broken_labels_json_is_refused_in_one_line(make_napari_viewer, tmp_path, notifications):
    path = _mask_file(tmp_path / "seg.nii.gz", [5, 51])
    (tmp_path / "labels.json").write_text('{"5": "liver",')
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-fvlm")
    assert len(viewer.layers) == 0
    [said] = [n.message for n in notifications]
    assert said.startswith("labels.json: cannot read the label names") and said.endswith("fix or remove it.")


def test_anatomy_list_sorts_names_from_a_file(make_napari_viewer, tmp_path, qtbot):
    from napari_fvlm.widgets.anatomy_list import AnatomyList

    path = _mask_file(tmp_path / "seg.nii.gz", [52, 5, 51, 13])
    layer = make_napari_viewer().open(str(path), plugin="napari-fvlm")[0]
    shown = AnatomyList()
    qtbot.addWidget(shown)
    shown.set_labels(_names(layer))
    rows = [shown.view.item(r).text() for r in range(shown.view.count())]
    assert rows == ["aorta", "heart", "liver", "lung middle lobe right"]


@pytest.mark.parametrize("kind", ["uint8", "mri", "normalised"])
def test_an_image_that_is_not_ct_opens_with_a_warning_in_its_own_window(make_napari_viewer, tmp_path,
                                                                       notifications, kind):
    rng = np.random.default_rng(0)
    shape = (40, 32, 24)
    data = {"uint8": lambda: rng.integers(0, 256, shape).astype(np.uint8),
            "mri": lambda: rng.gamma(2.0, 400.0, shape).astype(np.int16),
            "normalised": lambda: rng.random(shape).astype(np.float32)}[kind]()
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "scan.nii.gz")
    layer = make_napari_viewer().open(str(tmp_path / "scan.nii.gz"), plugin="napari-fvlm")[0]
    assert layer._type_string == "image"  # an 8-bit image is not a label map either
    [said] = [n.message for n in notifications]
    assert said.startswith("scan does not look like a CT in Hounsfield units: ")
    assert said.endswith("the analysis expects a CT in HU.")
    lo, hi = layer.contrast_limits
    p1, p99 = np.percentile(data, [1, 99])
    assert abs(lo - p1) <= 0.05 * (p99 - p1) and abs(hi - p99) <= 0.05 * (p99 - p1)


def test_a_ct_opens_without_a_warning_in_the_default_window(make_napari_viewer, tmp_path, notifications):
    from napari_fvlm.core.windows import DEFAULT_WINDOW, contrast_limits

    _ct_with_markers(tmp_path / "ct.nii.gz")
    layer = make_napari_viewer().open(str(tmp_path / "ct.nii.gz"), plugin="napari-fvlm")[0]
    assert tuple(layer.contrast_limits) == contrast_limits(DEFAULT_WINDOW) and not notifications


def test_analyze_reads_the_series_of_a_dicom_file_of_any_name(tmp_path):
    from napari_fvlm.core.io.read import read_volume

    _hu, _chest, scout_hu, scout = _study_with_a_scout(tmp_path / "study")
    assert not scout[0].suffix  # scanners often write names without an extension
    np.testing.assert_array_equal(read_volume(str(scout[0])).array, scout_hu)
