"""Checkpoint folders (safetensors only, atomic writes, clear refusals) and the official converter."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported anywhere in this process

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model import build_model, load_checkpoint, preset, read_checkpoint_config, save_checkpoint
from napari_fvlm.core.model.convert_official import convert_official
from napari_fvlm.core.model.focal import focal_inputs
from napari_fvlm.core.model.text import MINILM_HUB_ID, resolve_text_source

DEMO = preset("demo")
SMALL_INPUT = (1, 1, 24, 48, 48)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A demo model with non-default weights everywhere it saves, and its checkpoint folder."""
    torch.manual_seed(0)
    model = build_model(DEMO).eval()
    with torch.no_grad():
        model.log_temperature.fill_(math.log(0.05))
    folder = tmp_path_factory.mktemp("ckpt") / "demo"
    save_checkpoint(model, folder, extra={"epoch": 3})
    return model, folder


def _outputs(model):
    torch.manual_seed(1)
    images = torch.rand(*SMALL_INPUT)
    heart = torch.zeros(1, 24, 48, 48, dtype=torch.bool)
    heart[:, 4:20, 10:40, 8:30] = True
    channels = torch.rand(model.focal.channels, *SMALL_INPUT[2:])  # the demo model has the focal branch
    with torch.no_grad():
        levels, grid = model.encode_image(images)
        focal = model.pool_focal([focal_inputs(channels, heart)], ["heart"])
        embeddings, _ = model.pool(levels, grid, model.token_masks({"heart": heart}), focal)
        return (embeddings["heart"], model.dense_embeddings(levels, "heart", focal["heart"]), focal["heart"],
                model.encode_text(["pericardial effusion", "normal aorta"]), model.temperature)


def test_round_trip_gives_identical_outputs(saved):
    model, folder = saved
    loaded = load_checkpoint(folder)
    assert not loaded.training and loaded.config == DEMO and loaded.checkpoint_extra == {"epoch": 3}
    for before, after in zip(_outputs(model), _outputs(loaded)):
        assert torch.equal(before, after)
    stored = load_file(str(folder / "model.safetensors"))
    assert not any(name.startswith("text.model.") for name in stored)  # frozen pretrained: by reference
    assert "text.proj.weight" in stored and "pooling.queries" in stored
    assert not (folder / "text_encoder").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["demo"]  # no staging leftovers
    config, extra = read_checkpoint_config(folder)
    assert config == DEMO and extra == {"epoch": 3}


def test_text_encoder_in_checkpoint_round_trip(tmp_path):
    config = dataclasses.replace(DEMO, text_in_checkpoint=True)
    torch.manual_seed(2)
    model = build_model(config).eval()
    assert not model.text.frozen
    with torch.no_grad():  # a "fine-tuned" text encoder: must come back from the checkpoint
        model.text.model.embeddings.word_embeddings.weight.mul_(1.5)
    save_checkpoint(model, tmp_path / "tuned")
    assert (tmp_path / "tuned" / "text_encoder" / "config.json").is_file()
    stored = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert "text.model.embeddings.word_embeddings.weight" in stored
    loaded = load_checkpoint(tmp_path / "tuned")
    for before, after in zip(_outputs(model), _outputs(loaded)):
        assert torch.equal(before, after)


def test_overwrite_is_atomic(saved, tmp_path, monkeypatch):
    model, _ = saved
    folder = tmp_path / "ckpt"
    save_checkpoint(model, folder, extra={"epoch": 1})
    save_checkpoint(model, folder, extra={"epoch": 2})
    assert read_checkpoint_config(folder)[1] == {"epoch": 2}

    import napari_fvlm.core.model.checkpoint as checkpoint

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(model, folder, extra={"epoch": 3})
    assert read_checkpoint_config(folder)[1] == {"epoch": 2}  # the old checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FvlmInputError, match="not an fVLM checkpoint"):
        save_checkpoint(model, tmp_path / "notes")


def _copy(folder, target):
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.fixture()
def no_unpickling(monkeypatch):
    """Any attempt to unpickle while loading a checkpoint fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be called when loading a checkpoint")

    monkeypatch.setattr(torch, "load", forbidden)


def test_refusals(saved, tmp_path, no_unpickling):
    _, folder = saved
    with pytest.raises(FvlmInputError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")

    no_config = _copy(folder, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(FvlmInputError, match="no config.json"):
        load_checkpoint(no_config)

    bad_json = _copy(folder, tmp_path / "bad_json")
    (bad_json / "config.json").write_text('{"format": "napari-fvlm-checkpoint", "model": {')
    with pytest.raises(FvlmInputError, match="not valid JSON"):
        load_checkpoint(bad_json)

    no_weights = _copy(folder, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FvlmInputError, match="no model.safetensors"):
        load_checkpoint(no_weights)

    truncated = _copy(folder, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FvlmInputError, match="damaged or truncated"):
        load_checkpoint(truncated)


def test_mismatched_weights_are_reported(saved, tmp_path):
    _, folder = saved
    wider = _copy(folder, tmp_path / "wider")
    payload = json.loads((wider / "config.json").read_text())
    payload["model"]["embed_dim"] = 128
    (wider / "config.json").write_text(json.dumps(payload))
    pooled = DEMO.width + DEMO.focal_pooled_size  # the projection reads [ViT tokens; pooled focal statistics]
    with pytest.raises(FvlmInputError, match=rf"do not match.*wrong shape.*\(256, {pooled}\) != \(128, {pooled}\)"):
        load_checkpoint(wider)


def test_pickles_are_refused_unopened(tmp_path, monkeypatch):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "fvlm.pth")  # written before torch.load is banned
    (tmp_path / "only_pickle").mkdir()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "only_pickle" / "model.pth")
    (tmp_path / "pickle_and_config").mkdir()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "pickle_and_config" / "model.pth")
    (tmp_path / "disguised").mkdir()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "disguised" / "model.safetensors")
    (tmp_path / "disguised" / "config.json").write_text(
        json.dumps({"format": "napari-fvlm-checkpoint", "model": DEMO.to_dict()}))
    (tmp_path / "pickle_and_config" / "config.json").write_text(
        json.dumps({"format": "napari-fvlm-checkpoint", "model": DEMO.to_dict()}))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was opened"))
    for path in (tmp_path / "fvlm.pth", tmp_path / "only_pickle", tmp_path / "pickle_and_config",
                 tmp_path / "disguised"):
        with pytest.raises(FvlmInputError, match="PyTorch pickle.*fvlm convert-official"):
            load_checkpoint(path)


# ---- the official converter ------------------------------------------------------------------

class Opaque:
    """An arbitrary object: a tensors-only loader must refuse to rebuild it."""


OFFICIAL_LIKE = dataclasses.replace(
    DEMO, name="official-small", anatomy_group_set="ct-rate", anatomies=("lung", "heart", "esophagus", "aorta"),
    text_pooling="cls", text_in_checkpoint=True, stem_channels=0,  # the reference's linear patch embedding
    input_windows=(), focal_blobs=(), focal_features=0,  # and no focal branch
)


def _reference_state_dict(config):
    """A state dict with the reference repository's parameter names and shapes (small sizes)."""
    torch.manual_seed(3)
    width, mlp, grid = config.width, config.width * config.mlp_ratio, config.position_grid_zyx
    tokens = grid[0] * grid[1] * grid[2]
    state = {
        "visual_encoder.patch_embedding.patch_embeddings.weight": torch.randn(width, 1, *config.patch_zyx),
        "visual_encoder.patch_embedding.patch_embeddings.bias": torch.randn(width),
        "visual_encoder.patch_embedding.position_embeddings": torch.randn(1, tokens, width),
        "visual_encoder.norm.weight": torch.randn(width), "visual_encoder.norm.bias": torch.randn(width),
        "attention.in_proj_weight": torch.randn(3 * width, width), "attention.in_proj_bias": torch.randn(3 * width),
        "attention.out_proj.weight": torch.randn(width, width), "attention.out_proj.bias": torch.randn(width),
        "query_tokens": torch.randn(4, width), "temp": torch.tensor(0.042),
        "text_proj.weight": torch.randn(config.embed_dim, 384), "text_proj.bias": torch.randn(config.embed_dim),
    }
    for n in range(config.depth):
        prefix = f"visual_encoder.blocks.{n}."
        for name, shape in [("norm1", (width,)), ("norm2", (width,)), ("attn.qkv", (3 * width, width)),
                            ("attn.out_proj", (width, width)), ("mlp.linear1", (mlp, width)),
                            ("mlp.linear2", (width, mlp))]:
            state[prefix + name + ".weight"] = torch.randn(shape)
            state[prefix + name + ".bias"] = torch.randn(shape[0])
    for k in range(4):
        state[f"vision_projs.{k}.weight"] = torch.randn(config.embed_dim, width)
        state[f"vision_projs.{k}.bias"] = torch.randn(config.embed_dim)
    bert = load_file(f"{resolve_text_source(MINILM_HUB_ID)}/model.safetensors")  # a BERT like CXR-BERT
    state.update({f"text_encoder.{k}": v.clone() + (0.01 if v.is_floating_point() else 0) for k, v in bert.items()})
    state["text_encoder.cls.predictions.bias"] = torch.zeros(30522)  # the MLM head: dropped
    return state


def test_convert_official_round_trip(tmp_path):
    reference = _reference_state_dict(OFFICIAL_LIKE)
    wrapped = {"model": {f"module.{k}": v for k, v in reference.items()}, "epoch": 19, "config": {"lr": 1e-4}}
    torch.save(wrapped, tmp_path / "fvlm_official.pth")
    convert_official(tmp_path / "fvlm_official.pth", tmp_path / "converted", config=OFFICIAL_LIKE)
    model = load_checkpoint(tmp_path / "converted")
    ours = model.state_dict()
    expected = {
        "vision.patch_embed.weight": "visual_encoder.patch_embedding.patch_embeddings.weight",
        "vision.pos_embed": "visual_encoder.patch_embedding.position_embeddings",
        "vision.norm.bias": "visual_encoder.norm.bias",
        "pooling.attn.in_proj_weight": "attention.in_proj_weight",
        "pooling.attn.out_proj.weight": "attention.out_proj.weight",
        "pooling.queries": "query_tokens",
        "text.proj.weight": "text_proj.weight",
        "text.model.encoder.layer.5.output.dense.weight": "text_encoder.encoder.layer.5.output.dense.weight",
        "text.model.embeddings.word_embeddings.weight": "text_encoder.embeddings.word_embeddings.weight",
    }
    for n in range(OFFICIAL_LIKE.depth):
        expected[f"vision.blocks.{n}.attn.proj.weight"] = f"visual_encoder.blocks.{n}.attn.out_proj.weight"
        expected[f"vision.blocks.{n}.attn.qkv.bias"] = f"visual_encoder.blocks.{n}.attn.qkv.bias"
        expected[f"vision.blocks.{n}.mlp.fc1.weight"] = f"visual_encoder.blocks.{n}.mlp.linear1.weight"
        expected[f"vision.blocks.{n}.mlp.fc2.bias"] = f"visual_encoder.blocks.{n}.mlp.linear2.bias"
        expected[f"vision.blocks.{n}.norm2.weight"] = f"visual_encoder.blocks.{n}.norm2.weight"
    for k in range(4):
        expected[f"pooling.projections.{k}.weight"] = f"vision_projs.{k}.weight"
    for name, reference_name in expected.items():
        assert torch.equal(ours[name], reference[reference_name]), name
    assert math.isclose(model.temperature.item(), 0.042, rel_tol=1e-6)
    assert model.anatomies == ("lung", "heart", "esophagus", "aorta")
    assert read_checkpoint_config(tmp_path / "converted")[1]["converted_from"] == "fvlm_official.pth"


def test_convert_official_refusals(tmp_path):
    with pytest.raises(FvlmInputError, match="does not exist"):
        convert_official(tmp_path / "missing.pth", tmp_path / "out", config=OFFICIAL_LIKE)

    reference = _reference_state_dict(OFFICIAL_LIKE)
    torch.save({"model": {**reference, "decoder.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(FvlmInputError, match=r"decoder\.weight.*not an official fVLM checkpoint"):
        convert_official(tmp_path / "other.pth", tmp_path / "out", config=OFFICIAL_LIKE)

    del reference["query_tokens"]
    reference["attention.out_proj.bias"] = torch.zeros(7)
    torch.save(reference, tmp_path / "broken.pth")
    with pytest.raises(FvlmInputError, match=r"missing \['pooling.queries'\].*wrong shape"):
        convert_official(tmp_path / "broken.pth", tmp_path / "out", config=OFFICIAL_LIKE)

    torch.save(_reference_state_dict(OFFICIAL_LIKE), tmp_path / "official.pth")
    with pytest.raises(FvlmInputError, match="BiomedVLP-CXR-BERT-specialized.*could not be found.*network"):
        convert_official(tmp_path / "official.pth", tmp_path / "out")  # fvlm-b needs CXR-BERT's files

    torch.save({"model": Opaque()}, tmp_path / "code.pth")
    with pytest.raises(FvlmInputError, match="tensors-only"):
        convert_official(tmp_path / "code.pth", tmp_path / "out", config=OFFICIAL_LIKE)
    assert not (tmp_path / "out").exists()
