"""The fine focal branch: fixed filters, pooling over voxel masks, fine probability maps, and the
auxiliary label loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.filters import band_share, blobness, dequantise, quantise, window_channels
from napari_fvlm.core.model.config import ModelConfig, preset
from napari_fvlm.core.model.focal import focal_inputs, pool_features


def _ball_and_tube(shape=(40, 60, 60), spacing=(2.0, 2.0, 2.0)):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    volume = np.zeros(shape, np.float32)
    ball = ((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2) * spacing[0] ** 2 <= 4.0 ** 2
    tube = ((y - 40) ** 2 + (x - 40) ** 2) * spacing[1] ** 2 <= 4.0 ** 2  # runs along z
    volume[ball | np.broadcast_to(tube, shape)] = 1.0
    return volume, spacing


def test_blobness_answers_a_sphere_and_not_a_tube_of_the_same_diameter():
    volume, spacing = _ball_and_tube()
    bright = blobness(volume, 3.0, spacing, bright=True)
    assert bright[20, 20, 20] > 0.05
    assert bright[20, 40, 40] < 0.1 * bright[20, 20, 20]
    dark = blobness(1.0 - volume, 3.0, spacing, bright=False)  # the same hole, dark
    np.testing.assert_allclose(dark, bright, atol=1e-5)


def test_windows_re_window_the_models_input_and_quantising_is_exact_to_a_step():
    hu = np.array([-1150.0, -1000.0, -875.0, -750.0, 350.0], np.float32)
    image = (hu + 1150.0) / 1500.0
    lung = window_channels(image, (-1150.0, 350.0), [(-1000.0, -750.0)])[0]
    np.testing.assert_allclose(lung, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-5)
    values = np.linspace(0, 2, 101, dtype=np.float32)
    assert np.abs(dequantise(quantise(values)) - values).max() <= 1.0 / 255 + 1e-6


def test_a_band_answers_a_density_between_two_others_and_not_their_edges():
    """Ground glass (-600 HU) in lung (-750 HU) next to a vessel-like slab (+40 HU): the band share
    is ~1 inside the patch, ~0 in plain lung and in the slab, and stays low on the slab's edge."""
    hu = np.full((30, 60, 30), -750.0, np.float32)
    hu[5:25, 5:25, 5:25] = -600.0
    hu[:, 35:40, :] = 40.0
    hu[:, 34, :] = hu[:, 40, :] = -355.0  # the slab's partial-volume rim lies outside the band
    share = band_share((hu + 1150.0) / 1500.0, (-1150.0, 350.0), (-680.0, -500.0, 3.0), (1.0, 1.0, 1.0))
    assert share[15, 15, 15] > 0.95
    assert share[15, 52, 15] < 0.05 and share[15, 37, 15] < 0.05 and share[15, 40, 15] < 0.05


def test_pooling_gives_mean_and_a_soft_maximum_that_one_small_lesion_moves():
    features = torch.zeros(1000, 2)
    features[:5, 0] = 8.0  # five "lesion" voxels in feature 0
    masks = torch.zeros(3, 1000, dtype=torch.bool)
    masks[0] = True  # the whole organ
    masks[1, 100:] = True  # the organ without the lesion
    pooled = pool_features(features, masks)
    assert pooled[0, 0] == pytest.approx(0.04)  # the mean dilutes it
    assert pooled[0, 2] > 2.0 and abs(pooled[1, 2]) < 1e-5  # the soft maximum does not
    assert not pooled[2].any()  # an empty mask pools to zeros


def test_the_soft_minimum_sees_a_region_that_darkens_part_of_an_organ():
    features = torch.ones(1000, 1)
    features[:20, 0] = -7.0  # an emphysema-like dark patch
    masks = torch.ones(2, 1000, dtype=torch.bool)
    masks[1, :20] = False
    pooled = pool_features(features, masks, with_min=True)
    assert pooled.shape == (2, 3)
    assert pooled[0, 2] < -5.0 and pooled[1, 2] == pytest.approx(1.0, abs=1e-5)
    assert pooled[0, 1] == pytest.approx(1.0, abs=0.5)  # the soft maximum barely moves
    one = pool_features(features[:1], torch.ones(1, 1, dtype=torch.bool), with_min=True)
    assert torch.allclose(one, torch.full((1, 3), -7.0))  # over one voxel: its features, thrice


def test_focal_inputs_keep_only_voxels_inside_some_anatomy():
    channels = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    masks = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    masks[0, 0, 0, :2] = True
    masks[1, 3, 3, 3] = True
    voxels, inside = focal_inputs(channels, masks)
    assert voxels.shape == (3, 2) and inside.shape == (2, 3)
    np.testing.assert_array_equal(voxels[:, 0], [0, 1, 63])
    np.testing.assert_array_equal(inside.numpy(), [[True, True, False], [False, False, True]])


def test_focal_settings_are_validated_and_round_trip():
    config = preset("demo")
    assert config.focal and ModelConfig.from_json(config.to_json()) == config
    data = config.to_dict()
    with pytest.raises(FvlmInputError, match="input_windows"):
        ModelConfig.from_dict({**data, "input_windows": [[-2000, 0]]})
    with pytest.raises(FvlmInputError, match="focal_blobs"):
        ModelConfig.from_dict({**data, "focal_blobs": [[7, 3.0, 1]]})
    with pytest.raises(FvlmInputError, match="focal_bands"):
        ModelConfig.from_dict({**data, "focal_bands": [[-500, -680, 3.0]]})
    old = {k: v for k, v in data.items() if not k.startswith("focal") and k != "input_windows"}
    assert not ModelConfig.from_dict(old).focal  # configs written before the branch load without it


@pytest.fixture(scope="module")
def encoded_focal():
    from napari_fvlm.core.inference.analyzer import Analyzer
    from napari_fvlm.core.model import build_model

    from engine_fixtures import synthetic_ct_and_masks

    torch.manual_seed(0)
    model = build_model(preset("demo")).eval()
    analyzer = Analyzer(model, finding_set="phantom")
    ct, masks = synthetic_ct_and_masks()
    return model, analyzer, analyzer.encode(ct, masks)


def test_a_voxel_map_is_the_anatomy_score_were_its_extremes_at_the_voxel(encoded_focal):
    """The split projection equals projecting [the anatomy's pooled tokens; its mean features;
    the voxel's features in each extreme slot (soft max, soft min)]."""
    from napari_fvlm.core.inference.findings import finding_prompts

    model, analyzer, encoded = encoded_focal
    anatomy, finding = "lung_left", "lung nodule"
    heatmap = analyzer.finding_heatmap(encoded, anatomy, finding)
    fine = encoded.fine
    positive, negative = analyzer.text_embeddings(list(finding_prompts(model.config, anatomy, finding)))
    projection = model.pooling.projections[model.pooling.anatomy_index(anatomy)]
    chosen = np.flatnonzero(fine.masks[anatomy])[::997][:20]
    mean = fine.features[torch.from_numpy(fine.masks[anatomy])].mean(0)
    extremes = model.config.focal_pooled_size // model.config.focal_features - 1
    for m in chosen:
        joined = torch.cat([fine.pooled[anatomy], mean, *[fine.features[m]] * extremes])
        embedding = torch.nn.functional.normalize(projection(joined), dim=0)
        logit = (embedding @ positive - embedding @ negative) / model.temperature
        expected = float(torch.sigmoid(logit).detach())
        assert heatmap.values.reshape(-1)[fine.index[m]] == pytest.approx(expected, abs=1e-5)


def test_maps_stay_inside_the_anatomies_and_queries_rank_by_their_peak(encoded_focal):
    _, analyzer, encoded = encoded_focal
    heatmap = analyzer.finding_heatmap(encoded, "liver", "liver lesion")
    assert heatmap.values.shape == encoded.fine.shape
    assert not heatmap.values[~heatmap.inside].any()
    assert heatmap.inside.sum() == encoded.fine.masks["liver"].sum()
    grounding = analyzer.ground(encoded, "nodule in the left lung")
    assert grounding.searched == ["lung_left"] and grounding.peak_anatomy == "lung_left"
    assert grounding.peak_probability == pytest.approx(grounding.anatomy_scores[0][1], abs=1e-4)


def test_the_auxiliary_loss_trains_the_zero_shot_logits_of_labelled_slots():
    from training.config import TrainConfig
    from training.distributed import Processes
    from training.step import Features, label_loss

    torch.manual_seed(0)
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    out = Features(torch.zeros(2, 2, 4), torch.zeros(2, 2, 4), torch.ones(2, 2, dtype=torch.bool), None,
                   torch.tensor(0.07), torch.tensor(0.0), logits, [0, 1])
    batch = {"labels": torch.tensor([[1, -1], [0, 1]])}
    keep = torch.tensor([[True, True], [True, False]])
    loss = label_loss(out, batch, keep, Processes(rank=0, world=1, local_rank=0, device=torch.device("cpu")))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 0.0]))
    assert float(loss) == pytest.approx(float(expected))
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 1] == 0  # unknown label / anatomy left out
    assert TrainConfig(name="x", aux_bce_weight=1.0).finding_set == "phantom"


@pytest.mark.slow
def test_a_tiny_focal_run_with_labels_trains_and_its_checkpoint_draws_fine_maps(tmp_path, tiny_cache):
    """The whole focal path in training: cached channels, voxel-mask pooling, the auxiliary loss,
    a checkpoint that loads and draws voxel-level maps."""
    import csv

    from napari_fvlm.core.inference.analyzer import Analyzer
    from napari_fvlm.core.model.checkpoint import load_checkpoint
    from training.cache import read_sample
    from training.config import load_config
    from training.datasets import prepare_split
    from training.evaluate import prepared_input
    from training.focal_cache import channels_path
    from training.trainer import train

    config = load_config("training/configs/phantom-tiny.json", [
        f"cache_dir={tiny_cache}", f"out_dir={tmp_path / 'runs'}", "model.focal_features=4",
        "model.focal_hidden=8", "aux_bce_weight=5.0", "epochs=2", "in_memory=false"])
    run = train(config)
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r["loss"]]
    assert len(rows) == 8 and all(np.isfinite(float(r["loss"])) for r in rows)
    paths = prepare_split(config, "train")
    assert all(channels_path(p, config.model_config()).is_file() for p in paths)  # filtered once, kept
    model = load_checkpoint(run / "best")
    assert model.focal is not None and model.focal.features == 4
    sample = read_sample(paths[0])
    analyzer = Analyzer(model, finding_set="phantom")
    from napari_fvlm.core.inference.encoding import encode_ct

    encoded = encode_ct(model, prepared_input(sample))
    heatmap = analyzer.finding_heatmap(encoded, "lung_left", "emphysema")
    assert heatmap.values.shape == sample.image.shape
    assert heatmap.values[heatmap.inside].min() > 0 and heatmap.values.max() < 1


def test_a_checkpoint_without_the_soft_minimum_and_bands_starts_a_model_with_them_unchanged(tmp_path):
    """Second-stage training from a checkpoint pooled without the soft minimum and without band
    channels: the widened projections and focal MLP read the new inputs with zero weights, so the
    scores are the checkpoint's whatever the new channels hold."""
    from dataclasses import replace

    from napari_fvlm.core.model import build_model
    from napari_fvlm.core.model.checkpoint import save_checkpoint
    from training.trainer import _load_initial_weights

    torch.manual_seed(0)
    old = build_model(replace(preset("demo"), focal_min=False, focal_bands=())).eval()
    save_checkpoint(old, tmp_path / "old")
    new = build_model(preset("demo")).eval()
    _load_initial_weights(new, str(tmp_path / "old"))
    voxels, masks = torch.rand(500, old.focal.channels), torch.rand(3, 500) > 0.5
    bands = torch.rand(500, new.focal.channels - old.focal.channels)
    levels = torch.randn(1, 4, new.config.width)
    projected = [model.pooling.projections[0](torch.cat([levels[0, 0], model.focal([(inputs, masks)])[0, 0]]))
                 for model, inputs in ((old, voxels), (new, torch.cat([voxels, bands], 1)))]
    assert new.pooling.projections[0].weight.shape[1] == old.pooling.projections[0].weight.shape[1] + 8
    assert new.focal.channels == old.focal.channels + len(preset("demo").focal_bands) > old.focal.channels
    torch.testing.assert_close(projected[1], projected[0])
    other = build_model(replace(preset("demo"), focal_features=4))
    with pytest.raises(FvlmInputError, match="another configuration"):
        _load_initial_weights(other, str(tmp_path / "old"))


def test_precomputed_channels_encode_exactly_like_computing_them(encoded_focal):
    """Evaluation passes the channels cached beside a training sample instead of filtering again."""
    from napari_fvlm.core.inference.encoding import encode_ct
    from napari_fvlm.core.inference.filters import model_channels
    from napari_fvlm.core.inference.preprocess import prepare_for_model

    from engine_fixtures import synthetic_ct_and_masks

    model, _analyzer, _encoded = encoded_focal
    prepared = prepare_for_model(*synthetic_ct_and_masks(), model.config)
    channels = model_channels(prepared.image, model.config)
    computed, given = encode_ct(model, prepared), encode_ct(model, prepared, channels=channels)
    for name in computed.embeddings:
        torch.testing.assert_close(given.embeddings[name], computed.embeddings[name])
    with pytest.raises(ValueError, match="do not match the image"):
        encode_ct(model, prepared, channels=channels[:, 1:])


@pytest.mark.slow
def test_the_cache_command_prefills_the_focal_channels(tmp_path):
    """`python -m training cache` leaves every sample's focal channels on disk (computed in worker
    processes), equal to the filters run on the cached image, so training never waits for them."""
    from napari_fvlm.core.inference.filters import focal_channels, quantise
    from training.__main__ import main
    from training.cache import read_sample
    from training.config import load_config
    from training.datasets import prepare_split
    from training.focal_cache import channels_path

    overrides = [f"cache_dir={tmp_path}", "model.focal_features=4", "model.focal_hidden=8", "num_workers=2"]
    assert main(["cache", "--config", "training/configs/phantom-tiny.json", "--split", "val",
                 *(item for o in overrides for item in ("--set", o))]) == 0
    config = load_config("training/configs/phantom-tiny.json", overrides)
    paths = prepare_split(config, "val")
    assert len(paths) == 4
    for path in paths:
        with np.load(channels_path(path, config.model_config())) as stored:
            expected = quantise(focal_channels(read_sample(path).image, config.model_config()))
            np.testing.assert_array_equal(stored["channels"], expected)
