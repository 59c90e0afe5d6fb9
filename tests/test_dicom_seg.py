"""DICOM Segmentation round trips: a phantom written as a DICOM series (LPS axial, reversed slice
order, sagittal, oblique), its anatomy masks and a probability map written as SEG, read back by
highdicom frame by frame against the source images, and checked against the arrays the test wrote."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest

from napari_fvlm.core.anatomy.catalog import group_masks, group_set
from napari_fvlm.core.dicom_export.seg import PROBABILITY_LEVELS, anatomy_segments, build_segmentation, finding_segments
from napari_fvlm.core.dicom_export.series import source_series
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.io.dicom import read_dicom_series
from napari_fvlm.core.phantom import generate_phantom

from dicom_fixtures import SeriesGeometry, read_back_world_hu, rotated_cosines, write_phantom_series

hd = pytest.importorskip("highdicom")

SHAPE, SPACING = (48, 112, 112), (5.0, 3.0, 3.0)
ANATOMIES = [g.name for g in group_set("fine")]
GEOMETRIES = {
    "lps-axial": lambda n: SeriesGeometry(pixel_spacing=(3.0, 3.0), slice_offsets=[5.0 * k for k in range(n)]),
    # slice k of the arrays lies below slice k - 1: the files' slice order is the reverse of the stack's
    "reversed-slices": lambda n: SeriesGeometry(pixel_spacing=(3.0, 3.0), slice_offsets=[-5.0 * k for k in range(n)]),
    # the stack runs feet-ward and rows anterior-ward: file voxel order flipped against canonical LPS
    "reversed-normal": lambda n: SeriesGeometry(col_cosine=(0.0, -1.0, 0.0), pixel_spacing=(3.0, 3.0),
                                                slice_offsets=[5.0 * k for k in range(n)]),
    "sagittal": lambda n: SeriesGeometry(row_cosine=(0.0, 1.0, 0.0), col_cosine=(0.0, 0.0, -1.0),
                                         pixel_spacing=(3.0, 3.0), slice_offsets=[5.0 * k for k in range(n)]),
    "oblique": lambda n: SeriesGeometry(**dict(zip(("row_cosine", "col_cosine"), rotated_cosines((20.0, -15.0, 100.0)))),
                                        pixel_spacing=(3.0, 3.0), slice_offsets=[5.0 * k for k in range(n)]),
}


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(4, shape=SHAPE, spacing_zyx=SPACING, findings=["cardiomegaly", "lung nodule:left"])


def probability_at(world_ras: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """A smooth map in [0, 1] of RAS mm positions, with exact zeros: a 60 mm blob around ``centre``."""
    distance = np.linalg.norm(world_ras - centre, axis=-1)
    return np.clip(1.2 - distance / 50.0, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module", params=list(GEOMETRIES))
def written(request, phantom, tmp_path_factory):
    """(CT read back by the reader, its labels on the same grid, the CT files in the phantom's slice
    order k, the phantom's probability map in that order)."""
    folder = tmp_path_factory.mktemp(request.param)
    n = SHAPE[0]
    ct_paths, _ = write_phantom_series(folder, phantom, GEOMETRIES[request.param](n))
    ct = read_dicom_series(folder / "ct")
    labels = read_dicom_series(folder / "labels")
    assert ct.same_grid(labels)
    return ct, labels, ct_paths


def _sop_uids(paths) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def _check_frame_positions(seg_path, ct_paths) -> None:
    """Each SEG frame lies where its referenced source image lies (plain pydicom, no highdicom)."""
    sources = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in ct_paths)}
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    shared_iop = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        source = sources[uid]
        np.testing.assert_allclose(np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float),
                                   np.array(source.ImagePositionPatient, float), atol=1e-4)
        np.testing.assert_allclose(np.array(shared_iop, float), np.array(source.ImageOrientationPatient, float),
                                   atol=1e-6)


def test_anatomy_seg_reads_back_voxel_for_voxel(written, phantom, tmp_path):
    ct, labels, ct_paths = written
    series = source_series(ct)
    segments = anatomy_segments(labels, "fine", ANATOMIES)
    seg = build_segmentation(series, segments, fractional=False, description="anatomy", series_number=901,
                             model_name="demo")
    seg.save_as(tmp_path / "anatomy.dcm")

    back = hd.seg.segread(tmp_path / "anatomy.dcm")
    assert back.SegmentationType == "BINARY"
    names = [s.tracking_id.removeprefix("anatomy ") for s in segments]
    expected = group_masks(phantom.anatomy.array, [g for g in group_set("fine") if g.name in names])
    pixels = back.get_pixels_by_source_instance(source_sop_instance_uids=_sop_uids(ct_paths),
                                                segment_numbers=list(range(1, len(names) + 1)),
                                                combine_segments=False)
    assert pixels.shape == (SHAPE[0], SHAPE[1], SHAPE[2], len(names))
    for s, name in enumerate(names):
        np.testing.assert_array_equal(pixels[..., s].astype(bool), expected[name], err_msg=name)
    _check_frame_positions(tmp_path / "anatomy.dcm", ct_paths)
    lobe = back.get_segment_description(names.index("lung_lower_lobe_left") + 1)
    modifier = lobe.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeMeaning == "Left"


def test_probability_seg_reads_back_within_one_level(written, tmp_path):
    ct, _labels, ct_paths = written
    series = source_series(ct)
    zyx = np.stack(np.meshgrid(*(np.arange(n) for n in ct.shape), indexing="ij"), axis=-1)
    centre = ct.to_world(np.array(ct.shape) / 2.0)
    canonical = probability_at(ct.to_world(zyx), centre)  # on the reader's canonical grid
    maps = [("heart", "cardiomegaly", canonical, 0.5)]
    seg = build_segmentation(series, finding_segments(maps, "fine", regions=False), fractional=True,
                             description="probability", series_number=902, model_name="demo")
    seg.save_as(tmp_path / "probability.dcm")
    back = hd.seg.segread(tmp_path / "probability.dcm")
    assert back.SegmentationType == "FRACTIONAL" and back.SegmentationFractionalType == "PROBABILITY"
    pixels = back.get_pixels_by_source_instance(source_sop_instance_uids=_sop_uids(ct_paths),
                                                combine_segments=False)[..., 0]
    # expected: the map at each source pixel's own position, from its file's tags alone
    world, _hu = read_back_world_hu(ct_paths)
    expected = probability_at(world, centre).reshape(pixels.shape)
    assert expected.max() > 0.9 and (expected == 0).mean() > 0.3
    np.testing.assert_allclose(pixels, expected, atol=1.0 / PROBABILITY_LEVELS + 1e-5)
    regions = finding_segments(maps, "fine", regions=True)
    assert regions[0].values.dtype == bool and regions[0].values.sum() == (canonical >= 0.5).sum()
    _check_frame_positions(tmp_path / "probability.dcm", ct_paths)


def test_a_ct_not_read_from_dicom_is_refused(phantom):
    with pytest.raises(FvlmInputError, match="DICOM series"):
        source_series(phantom.ct)


def test_a_changed_series_is_refused(written, tmp_path):
    ct, _labels, _ct_paths = written
    moved = copy.copy(ct)
    moved.source = copy.copy(ct.source)
    moved.source.affine = ct.source.affine.copy()
    moved.source.affine[0, 3] += 1.0
    with pytest.raises(FvlmInputError, match="changed"):
        source_series(moved)
