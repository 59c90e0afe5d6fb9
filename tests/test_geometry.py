"""RAS <-> napari display mapping: one home, inverses of each other, for any canonical volume."""

from __future__ import annotations

import numpy as np

from napari_fvlm._layers import layer_volume, volume_layer_data
from napari_fvlm.core.geometry import (
    display_affine,
    display_scale_translate,
    display_to_ras,
    ras_to_display,
    voxel_to_world,
)
from napari_fvlm.core.volume import Volume

CASES = 200


def _canonical_affine(rng) -> np.ndarray:
    """A canonical (LPS voxel order) voxel-to-RAS affine with random spacing and origin."""
    spacing = rng.uniform(0.3, 6.0, 3)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = rng.uniform(-400, 400, 3)
    return affine


def test_display_and_ras_points_round_trip():
    rng = np.random.default_rng(0)
    points = rng.uniform(-500, 500, (CASES, 3))
    np.testing.assert_allclose(display_to_ras(ras_to_display(points)), points)
    np.testing.assert_allclose(ras_to_display(display_to_ras(points)), points)
    # the patient's left (RAS -x) grows along napari's last axis, superior along its first
    np.testing.assert_array_equal(ras_to_display([[-1.0, 0, 0], [0, 0, 1.0]]), [[0, 0, 1.0], [1.0, 0, 0]])


def test_scale_translate_and_affine_round_trip_and_place_voxels_where_the_affine_does():
    rng = np.random.default_rng(1)
    for _ in range(CASES):
        affine = _canonical_affine(rng)
        scale, translate = display_scale_translate(affine)
        np.testing.assert_allclose(display_affine(scale, translate), affine, atol=1e-9)
        voxels = rng.uniform(0, 300, (5, 3))  # (z, y, x)
        np.testing.assert_allclose(voxels * scale + translate, ras_to_display(voxel_to_world(affine, voxels)),
                                   atol=1e-9)


def test_a_layer_without_our_metadata_gives_back_the_volume_it_shows():
    rng = np.random.default_rng(2)
    for _ in range(20):
        volume = Volume(np.zeros((2, 3, 4), np.int16), _canonical_affine(rng))
        _data, kwargs, _kind = volume_layer_data(volume, "ct")
        rebuilt = layer_volume(volume.array, {"scale": kwargs["scale"], "translate": kwargs["translate"]})
        np.testing.assert_allclose(rebuilt.affine, volume.affine, atol=1e-9)
