"""The fVLM model: config, 3D ViT, anatomy pooling, text encoder (offline MiniLM), presets."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported anywhere in this process

import dataclasses
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model import (
    ModelConfig,
    build_model,
    inference_context,
    interpolate_position_embedding,
    position_embedding_from_2d,
    preset,
    token_mask,
)
from napari_fvlm.core.model.focal import focal_inputs
from napari_fvlm.core.model.pooling import AnatomyPooling
from napari_fvlm.core.model.text import MINILM_HUB_ID, TextEncoder, resolve_text_source
from napari_fvlm.core.model.vision import VisionTransformer3d

DEMO = preset("demo")
PLAIN = dataclasses.replace(DEMO, focal_features=0)  # the reference's pooling alone (no focal branch)


@pytest.fixture(scope="module")
def demo_model():
    torch.manual_seed(0)
    return build_model(DEMO).eval()


def _box_mask(batch, shape, box):
    mask = torch.zeros(batch, *shape, dtype=torch.bool)
    mask[(slice(None), *[slice(a, b) for a, b in box])] = True
    return mask


def test_config_json_round_trip_and_refusals():
    for name in ("demo", "fvlm-b"):
        config = preset(name)
        assert ModelConfig.from_json(config.to_json()) == config
    data = DEMO.to_dict()
    with pytest.raises(FvlmInputError, match="Unknown fVLM model config keys.*colour"):
        ModelConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(FvlmInputError, match="newer"):
        ModelConfig.from_dict({**data, "config_version": 99})
    with pytest.raises(FvlmInputError, match="divisible"):
        ModelConfig.from_dict({**data, "width": 190})
    with pytest.raises(FvlmInputError, match="lacks the keys.*width"):
        ModelConfig.from_dict({k: v for k, v in data.items() if k != "width"})
    with pytest.raises(FvlmInputError, match="not valid JSON"):
        ModelConfig.from_json("{width: 1")
    with pytest.raises(FvlmInputError, match="inference_protocol must be one of"):
        ModelConfig.from_dict({**data, "inference_protocol": "sliding"})
    with pytest.raises(FvlmInputError, match="reference protocol needs the 'ct-rate'"):
        ModelConfig.from_dict({**data, "inference_protocol": "reference"})
    with pytest.raises(FvlmInputError, match="finding_prompts must map"):
        ModelConfig.from_dict({**data, "finding_prompts": {"emphysema": ["Emphysema."]}})


def test_finding_prompts_replace_the_templates_for_their_findings():
    from napari_fvlm.core.inference.findings import finding_prompts

    config = ModelConfig.from_dict({**DEMO.to_dict(), "finding_prompts": {"atelectasis": ["Atelectatic.",
                                                                                        "Not Atelectatic."]}})
    assert ModelConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["finding_prompts"] == {"atelectasis": ["Atelectatic.", "Not Atelectatic."]}
    assert finding_prompts(config, "lung", "atelectasis") == ("Atelectatic.", "Not Atelectatic.")
    assert finding_prompts(config, "lung", "emphysema") == ("Emphysema.", "Lung shows no significant "
                                                                               "abnormalities.")
    assert preset("demo").finding_prompts == () and preset("demo").inference_protocol == "single-pass"


def test_config_module_does_not_import_torch():
    code = "import sys, napari_fvlm.core.model as m; m.preset('demo'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_demo_shapes_and_unit_norms(demo_model):
    images = torch.rand(2, 1, 32, 64, 80)
    heart = _box_mask(2, (32, 64, 80), [(4, 20), (10, 40), (20, 60)])
    with inference_context("cpu"):
        levels, grid = demo_model.encode_image(images)
        channels = torch.rand(2, demo_model.focal.channels, 32, 64, 80)
        focal = demo_model.pool_focal([focal_inputs(channels[b], heart[b][None]) for b in range(2)], ["heart"])
        embeddings, valid = demo_model.pool(levels, grid, demo_model.token_masks({"heart": heart}), focal)
        dense = demo_model.dense_embeddings(levels, "heart", focal["heart"])
        texts = demo_model.encode_text(["heart is enlarged", "no pleural effusion", "x"])
    assert grid == (4, 4, 5)
    assert len(levels) == len(DEMO.tap_blocks) + 1
    assert all(level.shape == (2, 80, DEMO.width) and level.dtype == torch.float32 for level in levels)
    assert embeddings["heart"].shape == (2, DEMO.embed_dim) and valid["heart"].tolist() == [True, True]
    assert focal["heart"].shape == (2, DEMO.focal_pooled_size)
    assert dense.shape == (2, 80, DEMO.embed_dim) and texts.shape == (3, DEMO.embed_dim)
    for tensor in (embeddings["heart"], dense, texts):
        assert torch.allclose(tensor.norm(dim=-1), torch.ones(tensor.shape[:-1]), atol=1e-5)


def test_token_mask_max_pools_and_drops_remainder():
    mask = torch.zeros(17, 33, 40, dtype=torch.bool)  # patch (8, 16, 16): grid (2, 2, 2), remainders dropped
    mask[9, 3, 17] = True  # one voxel in token (1, 0, 1)
    mask[16, 32, 39] = True  # only in the dropped remainder
    tokens = token_mask(mask, DEMO.patch_zyx)
    assert tokens.shape == (2, 2, 2) and tokens.dtype == torch.bool
    assert tokens.nonzero().tolist() == [[1, 0, 1]]


def test_max_pool_stem_keeps_the_token_grid_and_sees_a_spot_in_its_own_token_only():
    config = dataclasses.replace(DEMO, stem_kind="maxpool", stem_channels=64)
    torch.manual_seed(0)
    vision = VisionTransformer3d(config).eval()
    for shape in [(17, 33, 40), (64, 128, 144), (31, 47, 95)]:
        tokens = vision.patch_embed(torch.rand(1, 1, *shape))
        assert tuple(tokens.shape[2:]) == tuple(token_mask(torch.ones(shape), config.patch_zyx).shape)
    image = torch.full((1, 1, 16, 32, 32), 0.2)
    spot = image.clone()
    spot[0, 0, 9:11, 20:23, 5:8] = 0.8  # a 10 x 9 x 9 mm nodule inside token (1, 1, 0)
    with torch.no_grad():
        changed = (vision.patch_embed(spot) - vision.patch_embed(image)).abs().amax(dim=1)[0]
    assert changed[1, 1, 0] > 1e-3 and changed.flatten().argmax().item() == 1 * 4 + 1 * 2 + 0
    assert torch.count_nonzero(changed) == 1


def test_pooling_respects_masks_and_flags_empty_anatomies():
    torch.manual_seed(1)
    pooling = AnatomyPooling(PLAIN).eval()
    grid = (2, 3, 4)
    levels = [torch.randn(2, 24, DEMO.width) for _ in range(4)]
    heart = torch.zeros(2, *grid, dtype=torch.bool)
    heart[0, 0, 1, 1:3] = True
    heart[1, 1, 2, 0] = True
    liver = torch.zeros(2, *grid, dtype=torch.bool)
    liver[0, 1] = True  # empty in sample 1
    masks = {"heart": heart, "liver": liver}
    embeddings, valid = pooling(levels, grid, masks)
    assert valid["heart"].tolist() == [True, True] and valid["liver"].tolist() == [True, False]
    assert torch.isfinite(embeddings["liver"]).all() and torch.all(embeddings["liver"][1] == 0)

    outside = ~heart.reshape(2, 24)
    changed = [torch.where(outside[..., None], level + 5 * torch.randn_like(level), level) for level in levels]
    embeddings2, _ = pooling(changed, grid, masks)
    assert torch.allclose(embeddings2["heart"], embeddings["heart"], atol=1e-6)
    assert not torch.allclose(embeddings2["liver"][0], embeddings["liver"][0], atol=1e-3)


def test_pooling_matches_torch_multihead_attention():
    """Our batched, masked attention equals nn.MultiheadAttention on the selected tokens alone."""
    torch.manual_seed(2)
    pooling = AnatomyPooling(PLAIN).eval()
    reference = torch.nn.MultiheadAttention(DEMO.width, DEMO.pool_heads, batch_first=True).eval()
    reference.load_state_dict(dict(pooling.attn.state_dict()))
    grid = (2, 2, 3)
    levels = [torch.randn(2, 12, DEMO.width) for _ in range(3)]
    lung = torch.rand(2, *grid) > 0.5
    lung[:, 0, 0, 0] = True
    embeddings, _ = pooling(levels, grid, {"lung_left": lung})
    index = DEMO.anatomies.index("lung_left")
    for sample in range(2):
        selected = lung[sample].reshape(-1)
        keys = torch.cat([level[sample, selected] for level in levels])[None]
        pooled, _ = reference(pooling.queries[index][None, None], keys, keys)
        expected = torch.nn.functional.normalize(pooling.projections[index](pooled[0, 0]), dim=-1)
        assert torch.allclose(embeddings["lung_left"][sample], expected, atol=1e-5)


def test_dense_embedding_is_the_pooled_embedding_of_a_single_token():
    torch.manual_seed(3)
    pooling = AnatomyPooling(PLAIN).eval()
    grid = (1, 2, 3)
    tokens = torch.randn(1, 6, DEMO.width)
    levels = [tokens] * 4  # identical levels: attention over one location's copies is uniform
    mask = torch.zeros(1, *grid, dtype=torch.bool)
    mask[0, 0, 1, 2] = True
    embeddings, _ = pooling(levels, grid, {"aorta": mask})
    dense = pooling.dense_embeddings(levels, "aorta")
    assert torch.allclose(dense[0, 5], embeddings["aorta"][0], atol=1e-5)
    assert not torch.allclose(dense[0, 0], embeddings["aorta"][0], atol=1e-3)


def test_unknown_anatomy_and_wrong_mask_shape_are_refused(demo_model):
    levels = [torch.randn(1, 8, DEMO.width) for _ in range(4)]
    with pytest.raises(ValueError, match="knows no anatomy 'pancreas'") as err:  # a programming error, not input
        demo_model.pool(levels, (2, 2, 2), {"pancreas": torch.ones(1, 2, 2, 2, dtype=torch.bool)})
    assert not isinstance(err.value, FvlmInputError)
    with pytest.raises(ValueError, match="expected"):
        demo_model.pool(levels, (2, 2, 2), {"heart": torch.ones(1, 2, 2, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="batch, 1, z, y, x"):
        demo_model.encode_image(torch.rand(1, 64, 128, 128))


def test_position_embedding_interpolation_and_2d_initialisation():
    torch.manual_seed(4)
    vision = VisionTransformer3d(DEMO).eval()
    with torch.no_grad():
        levels, grid = vision(torch.rand(1, 1, 48, 96, 112))
    assert grid == (6, 6, 7) and levels[-1].shape == (1, 252, DEMO.width)
    pos = vision.pos_embed
    assert interpolate_position_embedding(pos, DEMO.position_grid_zyx, DEMO.position_grid_zyx) is pos
    # An embedding that only varies with z stays constant in (y, x) and ordered along z.
    z_only = torch.arange(8.0).repeat_interleave(64).reshape(1, 512, 1)
    resized = interpolate_position_embedding(z_only, (8, 8, 8), (5, 3, 4)).reshape(5, 3, 4)
    assert torch.allclose(resized, resized[:, :1, :1].expand(5, 3, 4))
    assert torch.all(resized[1:, 0, 0] > resized[:-1, 0, 0])

    table_2d = torch.randn(1, 1 + 14 * 14, 32)  # MAE ViT-B/16 at 224 px: CLS + 14 x 14
    volume = position_embedding_from_2d(table_2d, (7, 16, 11)).reshape(7, 16, 11, 32)
    assert torch.all(volume == volume[:1])  # repeated along z
    same = position_embedding_from_2d(table_2d, (3, 14, 14)).reshape(3, 196, 32)
    assert torch.allclose(same[2], table_2d[0, 1:], atol=1e-6)


def test_temperature_is_learnable_and_clamped(demo_model):
    assert math.isclose(demo_model.temperature.item(), 0.07, rel_tol=1e-6)
    assert demo_model.log_temperature.requires_grad
    original = demo_model.log_temperature.data.clone()
    try:
        demo_model.log_temperature.data.fill_(math.log(10.0))
        assert math.isclose(demo_model.temperature.item(), 0.5, rel_tol=1e-6)
        demo_model.log_temperature.data.fill_(math.log(1e-6))
        assert math.isclose(demo_model.temperature.item(), 0.001, rel_tol=1e-6)
    finally:
        demo_model.log_temperature.data.copy_(original)


def test_text_encoder_offline_minilm(demo_model):
    assert resolve_text_source(MINILM_HUB_ID) != MINILM_HUB_ID  # the packaged folder
    assert demo_model.text.frozen and not demo_model.text.model.training
    assert not any(p.requires_grad for p in demo_model.text.model.parameters())
    long = "moderate bilateral pleural effusion with compressive atelectasis of both lower lobes"
    short = "cardiomegaly"
    with torch.no_grad():
        pair = demo_model.encode_text([long, short, short])
        alone = demo_model.encode_text([short])
    assert not torch.allclose(pair[0], pair[1], atol=1e-3)
    assert torch.equal(pair[1], pair[2])
    assert torch.allclose(pair[1], alone[0], atol=1e-5)  # padding does not change a sentence
    assert demo_model.encode_text([]).shape == (0, DEMO.embed_dim)
    with pytest.raises(TypeError, match="list of strings"):
        demo_model.encode_text("cardiomegaly")


def test_text_inference_copy_is_bfloat16_only_where_the_cpu_has_it(demo_model, monkeypatch):
    import napari_fvlm.core.model.text as text_module

    texts = ["nodule in the left lower lobe", "fluid around the heart", "Heart shows no significant abnormalities."]
    with torch.inference_mode():
        reference = demo_model.encode_text(texts)
    monkeypatch.setattr(text_module, "native_bfloat16_cpu", lambda: False)
    assert demo_model.text.inference_copy() is demo_model.text  # emulated bfloat16 would be slower
    monkeypatch.setattr(text_module, "native_bfloat16_cpu", lambda: True)
    fast = demo_model.text.inference_copy()
    assert fast is not demo_model.text and fast.frozen
    assert next(fast.model.parameters()).dtype == torch.bfloat16
    assert next(demo_model.text.model.parameters()).dtype == torch.float32  # the model is untouched
    with torch.inference_mode():
        embedded = fast(texts)
    assert embedded.dtype == torch.float32
    assert ((embedded * reference).sum(dim=1) > 0.999).all()


def test_text_encoder_loads_custom_bert_config_without_remote_code(tmp_path):
    """CXR-BERT's hub config names custom code; it must load as a plain BERT."""
    from safetensors.torch import load_file, save_file

    source = resolve_text_source(MINILM_HUB_ID)
    folder = tmp_path / "cxr_bert_like"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="cxr-bert", architectures=["CXRBertModel"],
                  auto_map={"AutoModel": "modeling_cxrbert.CXRBertModel"})
    (folder / "config.json").write_text(json.dumps(config))
    weights = {f"bert.{k}": v for k, v in load_file(f"{source}/model.safetensors").items()}
    weights["cls.predictions.bias"] = torch.zeros(config["vocab_size"])
    save_file(weights, str(folder / "model.safetensors"))

    torch.manual_seed(5)
    plain = TextEncoder(source, 64, pooling="cls")
    torch.manual_seed(5)
    custom = TextEncoder(folder, 64, pooling="cls")
    assert type(custom.model).__name__ == "BertModel"
    with torch.no_grad():
        sentences = ["hiatal hernia", "no focal consolidation"]
        assert torch.allclose(plain(sentences), custom(sentences), atol=1e-6)


def test_text_encoder_refusals_offline(tmp_path):
    with pytest.raises(FvlmInputError, match="could not be found.*network"):
        TextEncoder("microsoft/BiomedVLP-CXR-BERT-specialized", 64)
    with pytest.raises(FvlmInputError, match="does not exist"):
        TextEncoder(str(tmp_path / "missing"), 64)
    with pytest.raises(FvlmInputError, match="'cls' or 'mean'"):
        TextEncoder(MINILM_HUB_ID, 64, pooling="max")


def test_fvlm_b_builds_on_meta_device():
    config = preset("fvlm-b")
    with torch.device("meta"):
        vision = VisionTransformer3d(config)
        pooling = AnatomyPooling(config)
        levels, grid = vision(torch.empty(1, 1, 112, 256, 352))
    assert grid == (7, 16, 11) and len(levels) == 4
    assert all(level.shape == (1, 1232, 768) for level in levels)
    blocks = sum(p.numel() for p in vision.blocks.parameters())
    assert blocks == 85_054_464  # the 12 transformer blocks of ViT-B (86.6M incl. 2D embeddings/head)
    assert vision.pos_embed.shape == (1, 1232, 768)
    assert vision.patch_embed.weight.shape == (768, 1, 16, 16, 32)
    assert pooling.queries.shape == (4, 768) and len(pooling.projections) == 4
    assert config.anatomies == ("lung", "heart", "esophagus", "aorta")


def test_overlapping_text_encoder_loads_stay_quiet_until_the_last_one_ends():
    import threading

    from transformers.utils import logging as hf_logging

    from napari_fvlm.core.model.text import _quiet_transformers

    hf_logging.enable_progress_bar()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with _quiet_transformers():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with _quiet_transformers():
        second_in.set()
        first_out.wait(5)  # the first load has finished while this one still runs
        seen.append(hf_logging.is_progress_bar_enabled())
    thread.join(5)
    assert seen == [False] and hf_logging.is_progress_bar_enabled()


def test_conv_stem_keeps_the_token_grid_and_trains():
    config = ModelConfig.from_dict({**DEMO.to_dict(), "stem_channels": 8})
    torch.manual_seed(0)
    vision = VisionTransformer3d(config)
    for shape in [(17, 33, 40), (64, 128, 144), (31, 47, 95)]:
        levels, grid = vision(torch.rand(1, 1, *shape))
        assert grid == tuple(token_mask(torch.ones(shape), config.patch_zyx).shape)
        assert levels[-1].shape == (1, math.prod(grid), config.width)
    strides = [m.stride for m in vision.patch_embed if isinstance(m, torch.nn.Conv3d)]
    assert strides == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (2, 2, 2)]  # 8 x 16 x 16 voxels per token
    levels[-1].sum().backward()
    assert all(p.grad is not None for p in vision.patch_embed.parameters())
    with pytest.raises(FvlmInputError, match="stem_kind"):
        ModelConfig.from_dict({**DEMO.to_dict(), "stem_kind": "resnet"})


def test_a_sample_in_a_padded_batch_is_encoded_as_if_alone():
    config = ModelConfig.from_dict({**DEMO.to_dict(), "depth": 2, "tap_blocks": [1]})
    torch.manual_seed(0)
    vision = VisionTransformer3d(config).eval()
    small, large = torch.rand(1, 1, 16, 32, 32), torch.rand(1, 1, 24, 32, 48)
    batch = torch.zeros(2, 1, 24, 32, 48)
    batch[0, :, :16, :32, :32], batch[1] = small[0], large[0]
    with torch.no_grad():
        alone, grid = vision(small)
        padded, batch_grid = vision(batch, shapes=[(16, 32, 32), (24, 32, 48)])
        ignored, _ = vision(batch)  # without shapes the stem, positions and attention see the padding
        large_alone, _ = vision(large)
    own = torch.zeros(batch_grid, dtype=torch.bool)
    own[:grid[0], :grid[1], :grid[2]] = True
    for level_alone, level_padded, level_ignored in zip(alone, padded, ignored):
        assert torch.allclose(level_padded[0, own.flatten()], level_alone[0], atol=1e-5)
        assert not torch.allclose(level_ignored[0, own.flatten()], level_alone[0], atol=1e-3)
    assert torch.allclose(padded[-1][1], large_alone[-1][0], atol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        vision(small, shapes=[(24, 32, 48)])
