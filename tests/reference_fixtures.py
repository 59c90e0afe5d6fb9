"""Small stand-ins for the official fVLM release, shared by the reference-equivalence tests.

* `reference_state_dict`: seeded random weights under the reference model's parameter names
  (a ViT of width 768 and 4 blocks, a tiny BERT), as its training loop saves them.
* `write_text_folder`: a tiny CXR-BERT-like folder (vocab, tokenizer config, BERT config) in
  three variants: token types off, on, and with cross-attention layers (BLIP-style).
* `make_chest_ct`: a small synthetic chest CT with TotalSegmentator `total` labels.

``tests/data/reference/`` holds the CT and labels this module made, and the probabilities and
text embeddings that the reference code computed for these weights (see its README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data" / "reference"
VISION_SEED, TEXT_SEED = 11, 12
WIDTH, DEPTH, MLP = 768, 4, 768
PATCH = (16, 16, 32)
POSITION_TOKENS = 7 * 16 * 11
EMBED = 256
ORGANS = 4
TEXT_VARIANTS = {  # name: (extra BERT config keys, checkpoint temperature)
    "types-off": ({"add_type_embeddings": False, "add_cross_attention": False}, 0.002),
    "types-on": ({"add_type_embeddings": True, "add_cross_attention": False, "model_type": "cxr-bert"}, 0.07),
    "cross-attention": ({"add_type_embeddings": True, "add_cross_attention": True, "encoder_width": WIDTH}, 0.002),
}
TEXT_CONFIG = {
    "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 96, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
    "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "pad_token_id": 0, "initializer_range": 0.02, "position_embedding_type": "absolute",
}
WORDS = ["not", "no", ".", "-", ",", "emphysema", "atelectatic", "atelectasis", "nodule", "lung", "opacity", "pulmonary", "fibrotic", "sequela", "pleural", "effusion", "mosaic", "attenuation", "pattern", "peribronchial", "thickening", "consolidation", "bronchiectasis", "interlobular", "septal", "cardiomegaly", "pericardial", "coronary", "artery", "wall", "calcification", "hiatal", "hernia", "arterial", "ground", "glass", "liver", "lesion", "heart", "aorta", "esophagus", "shows", "significant", "abnormalities", "in", "the", "left", "right", "lower", "upper", "lobe", "of", "a"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def write_text_folder(folder: Path, variant: str) -> Path:
    """The tokenizer files and BERT config of one text variant (no weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    extra, _ = TEXT_VARIANTS[variant]
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512}), encoding="utf-8")
    config = {**TEXT_CONFIG, "vocab_size": len(VOCAB), **extra}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def _tensor(generator: torch.Generator, name: str, shape) -> torch.Tensor:
    """Random values whose scale keeps activations O(1) and embeddings distinct."""
    noise = torch.randn(shape, generator=generator)
    if name.endswith("LayerNorm.weight") or (name.endswith(".weight") and ".norm" in name):
        return 1.0 + 0.1 * noise
    if name.endswith("bias"):
        return 0.05 * noise
    if len(shape) >= 2 and not name.endswith(("embeddings", "_embeddings.weight", "query_tokens")):
        fan_in = int(np.prod(shape[1:]))
        return noise / fan_in ** 0.5
    return noise * 0.5


def vision_shapes() -> list[tuple[str, tuple]]:
    """Names and shapes of the reference's vision side and anatomy pooling."""
    shapes = [
        ("visual_encoder.patch_embedding.patch_embeddings.weight", (WIDTH, 1, *PATCH)),
        ("visual_encoder.patch_embedding.patch_embeddings.bias", (WIDTH,)),
        ("visual_encoder.patch_embedding.position_embeddings", (1, POSITION_TOKENS, WIDTH)),
    ]
    for n in range(DEPTH):
        block = f"visual_encoder.blocks.{n}"
        shapes += [(f"{block}.mlp.linear1.weight", (MLP, WIDTH)), (f"{block}.mlp.linear1.bias", (MLP,)),
                   (f"{block}.mlp.linear2.weight", (WIDTH, MLP)), (f"{block}.mlp.linear2.bias", (WIDTH,)),
                   (f"{block}.norm1.weight", (WIDTH,)), (f"{block}.norm1.bias", (WIDTH,)),
                   (f"{block}.attn.out_proj.weight", (WIDTH, WIDTH)), (f"{block}.attn.out_proj.bias", (WIDTH,)),
                   (f"{block}.attn.qkv.weight", (3 * WIDTH, WIDTH)), (f"{block}.attn.qkv.bias", (3 * WIDTH,)),
                   (f"{block}.norm2.weight", (WIDTH,)), (f"{block}.norm2.bias", (WIDTH,))]
    shapes += [("visual_encoder.norm.weight", (WIDTH,)), ("visual_encoder.norm.bias", (WIDTH,)),
               ("attention.in_proj_weight", (3 * WIDTH, WIDTH)), ("attention.in_proj_bias", (3 * WIDTH,)),
               ("attention.out_proj.weight", (WIDTH, WIDTH)), ("attention.out_proj.bias", (WIDTH,)),
               ("query_tokens", (ORGANS, WIDTH))]
    for k in range(ORGANS):
        shapes += [(f"vision_projs.{k}.weight", (EMBED, WIDTH)), (f"vision_projs.{k}.bias", (EMBED,))]
    return shapes


def _attention_shapes(prefix: str, hidden: int, key_width: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.self.query.weight", (hidden, hidden)), (f"{prefix}.self.query.bias", (hidden,)),
            (f"{prefix}.self.key.weight", (hidden, key_width)), (f"{prefix}.self.key.bias", (hidden,)),
            (f"{prefix}.self.value.weight", (hidden, key_width)), (f"{prefix}.self.value.bias", (hidden,)),
            (f"{prefix}.output.dense.weight", (hidden, hidden)), (f"{prefix}.output.dense.bias", (hidden,)),
            (f"{prefix}.output.LayerNorm.weight", (hidden,)), (f"{prefix}.output.LayerNorm.bias", (hidden,))]


def text_shapes(variant: str) -> list[tuple[str, tuple]]:
    """Names and shapes of the reference's text side for a variant (trainable tensors only)."""
    extra, _ = TEXT_VARIANTS[variant]
    hidden, inner = TEXT_CONFIG["hidden_size"], TEXT_CONFIG["intermediate_size"]
    shapes = [("text_encoder.embeddings.word_embeddings.weight", (len(VOCAB), hidden)),
              ("text_encoder.embeddings.position_embeddings.weight", (TEXT_CONFIG["max_position_embeddings"], hidden))]
    if extra["add_type_embeddings"]:
        shapes.append(("text_encoder.embeddings.token_type_embeddings.weight", (2, hidden)))
    shapes += [("text_encoder.embeddings.LayerNorm.weight", (hidden,)),
               ("text_encoder.embeddings.LayerNorm.bias", (hidden,))]
    for n in range(TEXT_CONFIG["num_hidden_layers"]):
        layer = f"text_encoder.encoder.layer.{n}"
        shapes += _attention_shapes(f"{layer}.attention", hidden, hidden)
        if extra["add_cross_attention"]:
            shapes += _attention_shapes(f"{layer}.crossattention", hidden, extra["encoder_width"])
        shapes += [(f"{layer}.intermediate.dense.weight", (inner, hidden)),
                   (f"{layer}.intermediate.dense.bias", (inner,)),
                   (f"{layer}.output.dense.weight", (hidden, inner)), (f"{layer}.output.dense.bias", (hidden,)),
                   (f"{layer}.output.LayerNorm.weight", (hidden,)), (f"{layer}.output.LayerNorm.bias", (hidden,))]
    return shapes + [("text_proj.weight", (EMBED, hidden)), ("text_proj.bias", (EMBED,))]


def reference_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """The reference model's saved ``state_dict`` for one text variant: the same vision weights for
    every variant, text weights of the variant, the variant's temperature, and what the reference
    saves besides (the position-id buffer, the MLM decoder tied to the word embeddings)."""
    state = {}
    vision = torch.Generator().manual_seed(VISION_SEED)
    for name, shape in vision_shapes():
        state[name] = _tensor(vision, name, shape)
    text = torch.Generator().manual_seed(TEXT_SEED)
    for name, shape in text_shapes(variant):
        state[name] = _tensor(text, name, shape)
    state["temp"] = torch.tensor(TEXT_VARIANTS[variant][1])
    state["text_encoder.embeddings.position_ids"] = torch.arange(TEXT_CONFIG["max_position_embeddings"])[None]
    state["text_encoder.cls.predictions.decoder.weight"] = state["text_encoder.embeddings.word_embeddings.weight"]
    state["text_encoder.cls.predictions.decoder.bias"] = torch.zeros(len(VOCAB))
    return state


def save_reference_checkpoint(path: Path, variant: str, state: dict | None = None) -> Path:
    """A ``.pth`` laid out as the reference's runner saves it (``{"model", "optimizer", ...}``)."""
    payload = {"model": state if state is not None else reference_state_dict(variant),
               "optimizer": {"state": {}, "param_groups": []}, "config": {"run": {"max_epoch": 20}},
               "scaler": None, "epoch": 19}
    torch.save(payload, path)
    return path


def tiny_model_config(variant: str) -> dict:
    """Our model config for these weights: fvlm-b's geometry with 4 blocks and MLP ratio 1."""
    from napari_fvlm.core.model.config import preset

    config = preset("fvlm-b").to_dict()
    config.update(name=f"reference-tiny-{variant}", depth=DEPTH, tap_blocks=[4], mlp_ratio=MLP // WIDTH,
                  text_encoder="cxr-bert-tiny")
    return config


# --- the synthetic chest CT -------------------------------------------------------------------

CT_SHAPE_ZYX = (56, 64, 72)
CT_SPACING_XYZ = (5.55, 5.55, 7.3)
TOTAL = {"lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11, "lung_upper_lobe_right": 12,
         "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14, "esophagus": 15, "trachea": 16,
         "liver": 5, "heart": 51, "aorta": 52, "atrial_appendage_left": 61, "sternum": 116}


def _ellipsoid(shape, centre_mm, radii_mm, spacing_zyx) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing_zyx)), indexing="ij")
    return (((z - centre_mm[0]) / radii_mm[0]) ** 2 + ((y - centre_mm[1]) / radii_mm[1]) ** 2
            + ((x - centre_mm[2]) / radii_mm[2]) ** 2) <= 1.0


def make_chest_ct(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU int16 (z, y, x), `total` labels uint8 (z, y, x), voxel-to-RAS affine) in LPS voxel order
    (i to the patient's left, j posterior, k superior), as the reference's CT-RATE files are."""
    rng = np.random.default_rng(seed)
    spacing_zyx = CT_SPACING_XYZ[::-1]
    shape = CT_SHAPE_ZYX
    hu = np.full(shape, -1000.0)
    labels = np.zeros(shape, np.uint8)
    body = _ellipsoid(shape, (204, 178, 200), (450, 170, 198), spacing_zyx)
    hu[body] = 30
    parts = [  # name, centre (z, y, x) mm, radii mm, HU; x grows to the patient's left, y to posterior
        ("lung_upper_lobe_right", (270, 170, 100), (70, 120, 72), -850),
        ("lung_middle_lobe_right", (200, 120, 100), (30, 50, 55), -840),
        ("lung_lower_lobe_right", (160, 210, 100), (50, 80, 66), -860),
        ("lung_upper_lobe_left", (265, 175, 300), (75, 115, 76), -855),
        ("lung_lower_lobe_left", (165, 215, 300), (55, 75, 70), -845),
        ("liver", (70, 170, 140), (40, 90, 80), 60),
        ("heart", (180, 90, 215), (50, 60, 60), 45),
        ("atrial_appendage_left", (205, 70, 262), (12, 12, 14), 50),
        ("aorta", (220, 200, 190), (175, 14, 14), 180),
        ("esophagus", (225, 230, 175), (175, 8, 8), 10),
        ("trachea", (350, 160, 200), (50, 10, 10), -950),
        ("sternum", (190, 28, 200), (80, 8, 12), 400),
    ]
    for name, centre, radii, value in parts:
        region = _ellipsoid(shape, centre, radii, spacing_zyx) & body
        hu[region] = value
        labels[region] = TOTAL[name]
    hu += rng.normal(0.0, 8.0, shape)
    affine = np.diag([-CT_SPACING_XYZ[0], -CT_SPACING_XYZ[1], CT_SPACING_XYZ[2], 1.0])
    affine[:3, 3] = (176.0, 190.0, -140.0)
    return np.round(hu).astype(np.int16), labels, affine


def write_nifti(array_zyx: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """A (z, y, x) array written in its (i, j, k) = (x, y, z) voxel order with ``affine``."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


def reoriented_copy(path: Path, out: Path, axcodes: tuple[str, str, str]) -> Path:
    """The same image stored in another voxel orientation (an exact permutation/flip)."""
    import nibabel as nib
    from nibabel import orientations as nio

    image = nib.load(str(path))
    transform = nio.ornt_transform(nio.io_orientation(image.affine), nio.axcodes2ornt(axcodes))
    data = nio.apply_orientation(np.asanyarray(image.dataobj), transform)
    affine = image.affine @ nio.inv_ornt_aff(transform, image.shape)
    copy = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    copy.set_qform(affine, code=1)
    copy.set_sform(affine, code=1)
    nib.save(copy, str(out))
    return out


def expected() -> dict:
    """What the reference computed for these weights, CT and labels."""
    return json.loads((DATA / "expected.json").read_text(encoding="utf-8"))
