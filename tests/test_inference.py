"""The inference engine: preprocessing, cached encoding, scores, heatmaps, grounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_fvlm.core.anatomy.catalog import group_set
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.analyzer import Analyzer
from napari_fvlm.core.inference.encoding import _encode_tokens
from napari_fvlm.core.inference.preprocess import prepare_for_model, window
from napari_fvlm.core.model import load_checkpoint
from napari_fvlm.core.volume import Volume

from engine_fixtures import AFFINE, synthetic_ct_and_masks


@pytest.fixture(scope="module")
def model(random_demo_model):
    return load_checkpoint(random_demo_model).eval()


@pytest.fixture(scope="module")
def ct_and_masks():
    return synthetic_ct_and_masks()


def test_window_maps_hu_to_unit_range():
    hu = np.array([-2000, -1150, -400, 350, 3000], np.int16)
    np.testing.assert_allclose(window(hu, (-1150, 350)), [0, 0, 0.5, 1, 1])


def test_preparation_crops_resamples_and_pads_for_the_model(model, ct_and_masks):
    ct, masks = ct_and_masks
    config = model.config
    prepared = prepare_for_model(ct, masks, config)
    assert prepared.image.dtype == np.float32 and prepared.image.min() >= 0 and prepared.image.max() <= 1
    spacing = np.sqrt((prepared.affine[:3, :3] ** 2).sum(0))[::-1]
    np.testing.assert_allclose(spacing, config.spacing_zyx)
    assert all(s >= m and s % p == 0 for s, m, p in
               zip(prepared.image.shape, config.min_input_shape_zyx, config.patch_zyx))
    assert {"spleen", "kidneys", "esophagus"} <= set(prepared.absent)
    # every anatomy voxel of the CT lies inside the model grid: volumes agree within resampling error
    voxel_ml = np.prod(ct.spacing) / 1000
    grid_ml = np.prod(config.spacing_zyx) / 1000
    ct_heart = (masks.array == 51).sum() * voxel_ml
    assert abs(prepared.masks["heart"].sum() * grid_ml - ct_heart) / ct_heart < 0.15
    # the grid's world positions agree with the CT's: the heart's centroid is in the same place
    def centroid(mask, affine):
        return (affine[:3, :3] @ np.argwhere(mask).mean(0)[::-1]) + affine[:3, 3]
    np.testing.assert_allclose(centroid(prepared.masks["heart"], prepared.affine),
                               centroid(masks.array == 51, ct.affine), atol=3.0)


def test_a_ct_without_the_models_anatomies_is_refused(model, ct_and_masks):
    ct, masks = ct_and_masks
    head = Volume(masks.array * 0, masks.affine, labels={})
    head.array[10:20, 10:20, 10:20] = 90  # brain
    with pytest.raises(FvlmInputError, match="head CT has no lungs"):
        Analyzer(model).encode(ct, head)


def test_windowed_encoding_matches_encoding_each_window(model):
    rng = np.random.default_rng(0)
    config = model.config
    shape = (config.min_input_shape_zyx[0] * 2, *config.min_input_shape_zyx[1:])
    image = rng.random(shape, dtype=np.float32)
    with torch.inference_mode():
        levels, grid = _encode_tokens(model, image, None, None)
        second, win_grid = model.encode_image(torch.from_numpy(image[shape[0] // 2:])[None, None])
    assert grid == (shape[0] // config.patch_zyx[0], *win_grid[1:])
    stitched = levels[-1][0].reshape(*grid, -1)[grid[0] // 2:]
    torch.testing.assert_close(stitched, second[-1][0].reshape(*win_grid, -1))


def test_scores_cover_every_present_anatomy_and_finding(model, ct_and_masks):
    ct, masks = ct_and_masks
    _, analysis = Analyzer(model, finding_set="ct-rate").analyze(ct, masks)
    assert set(analysis.scores) == {"lung_left", "lung_right", "lung_upper_lobe_left", "lung_lower_lobe_left",
                                    "lung_upper_lobe_right", "lung_lower_lobe_right", "heart", "aorta"}
    assert len(analysis.scores["lung_left"]) == 11 and len(analysis.scores["heart"]) == 3
    values = [p for f in analysis.scores.values() for p in f.values()]
    assert all(0 < p < 1 for p in values)


def test_queries_reuse_the_encoded_ct(model, ct_and_masks, monkeypatch):
    ct, masks = ct_and_masks
    analyzer = Analyzer(model)
    encoded = analyzer.encode(ct, masks, key="ct-1")
    calls = []
    monkeypatch.setattr(model, "encode_image", lambda *a, **k: calls.append(1))
    assert analyzer.encode(ct, masks, key="ct-1") is encoded
    grounding = analyzer.ground(encoded, "consolidation")
    assert not calls
    heatmap = grounding.heatmap
    assert heatmap.values.shape == (encoded.fine.shape if encoded.fine is not None else encoded.grid)
    # probabilities on the fixed [0, 1] scale, never rescaled: 0 outside the anatomies
    assert heatmap.values[heatmap.inside].min() > 0 and heatmap.values.max() < 1
    assert not heatmap.values[~heatmap.inside].any()
    assert grounding.anatomy_scores[0][0] == grounding.peak_anatomy or \
        grounding.anatomy_scores[0][1] == grounding.anatomy_scores[1][1]


@pytest.mark.parametrize("query, allowed", [
    ("nodule in the left lower lobe", {"lung_lower_lobe_left"}),
    ("right lung opacity", {"lung_right"}),
    ("fluid around the heart", {"heart"}),
])
def test_grounding_respects_named_anatomies_and_patient_laterality(model, ct_and_masks, query, allowed):
    ct, masks = ct_and_masks
    analyzer = Analyzer(model)
    grounding = analyzer.ground(analyzer.encode(ct, masks), query)
    assert set(grounding.searched) == allowed
    # the peak, mapped back to the CT, lies in (or within a token of) the named anatomy
    classes = {c for g in group_set("fine") if g.name in allowed for c in g.class_ids}
    zyx = np.rint(ct.to_voxel(grounding.peak_world_mm)).astype(int)
    half_token = np.ceil(np.multiply(model.config.patch_zyx, model.config.spacing_zyx) / 2 / ct.spacing)
    lo, hi = np.maximum(zyx - half_token, 0).astype(int), (zyx + half_token + 1).astype(int)
    window_labels = masks.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    assert classes & set(np.unique(window_labels).tolist())
    if "left" in query:
        assert grounding.peak_world_mm[0] < 0  # RAS: the patient's left is -x


def test_bad_queries_are_refused_clearly_and_odd_ones_work(model, ct_and_masks):
    ct, masks = ct_and_masks
    analyzer = Analyzer(model)
    encoded = analyzer.encode(ct, masks)
    for bad in ["", "   ", "x" * 10_000]:
        with pytest.raises(FvlmInputError):
            analyzer.ground(encoded, bad)
    grounding = analyzer.ground(encoded, "Knötchen im linken Unterlappen — 肺结节 ✓")
    assert np.isfinite(grounding.peak_world_mm).all()


def test_masks_on_another_grid_are_resampled_and_foreign_masks_refused(model, ct_and_masks):
    ct, masks = ct_and_masks
    coarse_affine = AFFINE.copy()
    coarse_affine[:3, :3] *= 2
    coarse_affine[:3, 3] += (AFFINE[:3, :3] @ [0.5, 0.5, 0.5])
    coarse = Volume(np.ascontiguousarray(masks.array[::2, ::2, ::2]), coarse_affine, labels=masks.labels)
    analyzer = Analyzer(model)
    encoded = analyzer.encode(ct, coarse)
    assert "heart" in encoded.embeddings
    shifted = AFFINE.copy()
    shifted[:3, 3] += [0, 0, 2000.0]
    with pytest.raises(FvlmInputError):
        analyzer.encode(ct, Volume(masks.array, shifted, labels=masks.labels))


def test_zero_shot_uses_the_models_prompt_pair(model, ct_and_masks):
    import dataclasses

    ct, masks = ct_and_masks
    analyzer = Analyzer(model, finding_set="ct-rate")
    encoded = analyzer.encode(ct, masks)
    seen = []
    def recording(texts):
        seen.extend(texts)
        return analyzer.text_embeddings(texts)
    from napari_fvlm.core.inference.scoring import zero_shot_scores

    original = model.config
    scores = zero_shot_scores(model, encoded, recording, "ct-rate")  # the demo pair: "{finding}." / "{anatomy} shows ..."
    assert "Cardiomegaly." in seen and "Heart shows no significant abnormalities." in seen
    assert "Left upper lobe shows no significant abnormalities." in seen
    assert set(scores["heart"]) == {"cardiomegaly", "pericardial effusion", "coronary artery wall calcification"}
    model.config = dataclasses.replace(original, prompt_positive="There is {finding}.",
                                       prompt_negative="There is no {finding}.")
    try:
        seen.clear()
        zero_shot_scores(model, encoded, recording, "ct-rate")
        assert "There is cardiomegaly." in seen and "There is no cardiomegaly." in seen
    finally:
        model.config = original


@pytest.mark.parametrize("text, normal", [
    ("no abnormality", True), ("No significant abnormalities.", True), ("normal heart", True),
    ("the lungs are clear", True), ("unremarkable", True), ("there is no pleural effusion", True),
    ("without consolidation", True), ("heart is normal", True),
    ("nodule in the left lung", False), ("non-calcified nodule", False), ("nodule, not calcified", False),
    ("abnormal opacity", False), ("clear cell carcinoma", False), ("unclear margins", False),
    ("pleural effusion on the left, no pneumothorax", False),
])
def test_statements_of_normality_are_refused_with_a_reason_and_findings_pass(text, normal):
    from napari_fvlm.core.inference.grounding import check_query, states_normality

    assert states_normality(text) is normal
    if normal:
        with pytest.raises(FvlmInputError, match="states normality or an absence"):
            check_query(text)
    else:
        assert check_query(f"  {text} ") == text


@pytest.mark.parametrize("text, scored", [
    ("nodule in the left lung", "nodule"), ("lung nodule in the right lung", "lung nodule"),
    ("right pleural effusion", "pleural effusion"), ("consolidation in the left lower lobe", "consolidation"),
    ("ground-glass opacity, left upper lobe", "ground-glass opacity"), ("emphysema in both lungs", "emphysema"),
    ("fluid around the heart", "fluid around the heart"), ("left lung", "left lung"),
])
def test_place_words_leave_the_scored_text_once_they_chose_the_anatomies(text, scored):
    """Training reads each anatomy's findings without place words; the place selects the anatomy."""
    from napari_fvlm.core.inference.grounding import without_location

    assert without_location(text) == scored
