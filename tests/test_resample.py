"""The one resampler: world-space alignment, label edges, and grids built at another spacing."""

from __future__ import annotations

import numpy as np

from napari_fvlm.core.resample import grid_affine, resample


def test_upsampled_labels_keep_the_whole_edge_voxel():
    coarse = np.zeros((4, 4, 4), np.uint8)
    coarse[0, :, :] = 7  # the first slab, touching the grid's edge
    coarse_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fine_affine, fine_shape = grid_affine(coarse_affine, coarse.shape, (1.0, 1.0, 1.0))
    fine = resample(coarse, coarse_affine, fine_affine, fine_shape, order=0)
    assert fine_shape == (8, 8, 8)
    assert (fine[:2] == 7).all() and (fine[2:] == 0).all()


def test_linear_resampling_follows_world_space_not_voxel_indices():
    values = np.arange(10, dtype=np.float32)[None, None, :].repeat(3, 0).repeat(3, 1)  # grows along x
    src = np.diag([-1.0, -1.0, 1.0, 1.0])  # x index grows to the patient's left (RAS -x)
    flipped = np.diag([1.0, -1.0, 1.0, 1.0])
    flipped[0, 3] = -9.0  # the same field of view, x index growing to the patient's right
    out = resample(values, src, flipped, (3, 3, 10), order=1)
    np.testing.assert_allclose(out[1, 1], values[1, 1, ::-1])


def test_grid_affine_keeps_the_field_of_view():
    affine = np.array([[-0.7, 0, 0, 100], [0, -0.7, 0, 80], [0, 0, 2.5, -40], [0, 0, 0, 1.0]])
    new, shape = grid_affine(affine, (40, 100, 120), (5.0, 3.5, 3.5))
    assert shape == (20, 20, 24)
    corner_old = affine[:3, 3] - affine[:3, :3] @ [0.5, 0.5, 0.5]
    corner_new = new[:3, 3] - new[:3, :3] @ [0.5, 0.5, 0.5]
    np.testing.assert_allclose(corner_new, corner_old)


def test_separable_path_equals_the_general_affine_path():
    from scipy import ndimage

    from napari_fvlm.core.resample import zyx_matrix

    rng = np.random.default_rng(0)
    for order, dtype, cval in ((0, np.uint8, 0), (1, np.float32, -1000.0)):
        for flip in (1.0, -1.0):
            src = (rng.random((7, 9, 11)) * 50).astype(dtype)
            a_src = np.diag([1.7, 0.6, 2.2, 1.0])
            a_src[:3, 3] = [3.0, -2.0, 1.0]
            a_dst = np.diag([0.9 * flip, 1.3, 0.7, 1.0])
            a_dst[:3, 3] = [-1.0, 4.0, 0.5]
            ours = resample(src, a_src, a_dst, (12, 15, 10), order=order, cval=cval)
            m = zyx_matrix(a_dst, a_src)
            general = ndimage.affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=(12, 15, 10),
                                               order=order, mode="grid-constant", cval=cval,
                                               prefilter=False, output=ours.dtype)
            np.testing.assert_allclose(ours, general, atol=1e-4)
