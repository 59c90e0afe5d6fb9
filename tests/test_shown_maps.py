"""Shown heatmaps stay inside their anatomies at the CT's resolution, also where the model's
token grid runs past the scan, and never widen the viewer's world beyond the CT."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_fvlm.core.anatomy.catalog import group_set
from napari_fvlm.core.geometry import voxel_to_world, world_to_voxel
from napari_fvlm.core.inference.analyzer import Analyzer
from napari_fvlm.core.model import build_model, preset
from napari_fvlm.core.volume import Volume
from napari_fvlm.widgets.jobs import shown_map

from engine_fixtures import synthetic_ct_and_masks


def _cropped_case():
    """The synthetic CT cut through both lungs and the heart on three sides: the token blocks
    over the cut anatomies reach past the scan."""
    ct, masks = synthetic_ct_and_masks()
    cut = (slice(20, 70), slice(30, 130), slice(40, 160))
    shift = np.eye(4)
    shift[:3, 3] = [c.start for c in cut[::-1]]  # x, y, z voxel offsets of the crop
    crop = lambda volume: Volume(volume.array[cut], volume.affine @ shift, labels=volume.labels)  # noqa: E731
    return crop(ct), crop(masks)


def _phantom_case():
    from napari_fvlm.core.phantom import generate_phantom

    phantom = generate_phantom(3)
    return phantom.ct, phantom.anatomy


@pytest.mark.parametrize("case, focal", [(_cropped_case, False), (_cropped_case, True), (_phantom_case, True)],
                         ids=["cropped-token-maps", "cropped-fine-maps", "phantom-fine-maps"])
def test_no_shown_value_lies_outside_the_maps_anatomies(case, focal):
    ct, masks = case()
    config = preset("demo") if focal else replace(preset("demo"), focal_features=0, focal_min=False)
    torch.manual_seed(0)
    analyzer = Analyzer(build_model(config).eval(), finding_set="phantom")
    encoded = analyzer.encode(ct, masks)
    ids = {g.name: set(g.class_ids) for g in group_set(config.anatomy_group_set)}
    overhangs = False
    for anatomy, finding in (("lung_left", "lung nodule"), ("heart", "cardiomegaly")):
        heatmap = analyzer.finding_heatmap(encoded, anatomy, finding)
        world = voxel_to_world(heatmap.affine, np.argwhere(heatmap.values > 0).astype(float))
        inside_ct = np.all((world_to_voxel(ct.affine, world) > -0.5)
                           & (world_to_voxel(ct.affine, world) < np.array(ct.array.shape) - 0.5), axis=1)
        overhangs |= bool((~inside_ct).any())
        shown = shown_map(heatmap, ct, labels=masks, group_set=config.anatomy_group_set)
        lit = np.argwhere(shown.values > 0).astype(float)
        assert len(lit), "the map shows something"
        at = np.rint(world_to_voxel(ct.affine, voxel_to_world(shown.affine, lit))).astype(int)
        assert np.all((at >= 0) & (at < np.array(ct.array.shape)))  # within the CT
        labels_there = masks.array[tuple(at.T)]
        assert np.isin(labels_there, list(ids[anatomy])).all()  # within the anatomy's mask
        corners = voxel_to_world(shown.affine, np.array([[-0.5] * 3, np.array(shown.values.shape) - 0.5]))
        ct_corners = voxel_to_world(ct.affine, np.array([[-0.5] * 3, np.array(ct.array.shape) - 0.5]))
        np.testing.assert_allclose(corners, ct_corners, atol=1e-3)  # the viewer's world stays the CT's
    if case is _cropped_case and not focal:
        assert overhangs, "the case must have token blocks past the scan"
