"""Training configuration: one JSON file per experiment, overridable from the command line.

Every value a run uses is in `TrainConfig`; the resolved config (file + ``--set`` overrides) is
written beside the checkpoints as ``train_config.json`` with the git commit, so a run can be
repeated exactly. ``model`` holds overrides of the named model preset (e.g. a tiny width for
tests); the resolved `ModelConfig` is built by `model_config`.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.config import ModelConfig, preset

TRAIN_CONFIG_FILE = "train_config.json"
LOSSES = ("fvlm", "global_clip")
REDUCTIONS = ("sum", "mean")


@dataclass
class TrainConfig:
    """One experiment. Seed ranges are half-open [start, stop) and must not overlap."""

    name: str
    model_preset: str = "demo"
    model: dict[str, Any] = field(default_factory=dict)
    # data
    dataset: str = "phantom"  # "phantom" or "ct-rate"
    train_seeds: tuple[int, int] = (0, 64)
    val_seeds: tuple[int, int] = (10_000, 10_016)
    test_seeds: tuple[int, int] = (20_000, 20_032)
    phantom_shape: tuple[int, int, int] = (128, 256, 256)  # generated grid (z, y, x)
    phantom_spacing: tuple[float, float, float] = (2.5, 1.5, 1.5)  # mm (z, y, x)
    ct_rate_root: str = ""  # folder holding dataset/, the reports and labels CSVs, masks
    ct_rate_masks: str = "masks"  # TotalSegmentator outputs, <name>.nii.gz (relative to the root)
    ct_rate_metadata_rescale: bool = False  # apply the metadata CSV's slope/intercept (CT-RATE v1 only)
    ct_rate_val_fraction: float = 0.05  # patients of CT-RATE's train split held out for validation
    ct_rate_limit: int = 0  # use only the first N volumes of each split (0: all)
    cache_dir: str = "runs/cache"  # prepared samples (one folder per preprocessing)
    image_dtype: str = "float16"  # how cached images are stored: "float16" or "uint8"
    decomposition: str = "lexicon"  # report -> anatomy texts: "lexicon" (or a registered hook name)
    # optimisation
    out_dir: str = "runs"
    batch_size: int = 4  # per process; the contrastive batch is batch_size x processes
    grad_accum: int = 1
    epochs: int = 20
    max_steps: int = 0  # stop after this many optimizer steps (0: run all epochs)
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0  # max gradient norm (0: off)
    # loss
    loss: str = "fvlm"
    calibration: bool = True
    anatomy_reduction: str = "sum"
    exclude_cut: bool = False  # leave anatomies touching the scan's edge out of the loss (see docs)
    co_teaching_alpha: float = 0.0  # > 0 trains a peer model and mixes its similarities in
    aux_bce_weight: float = 0.0  # > 0 adds BCE of each (anatomy, finding) prompt pair's logit vs the labels
    # a second stage: start from a checkpoint folder's weights and train only the parameters whose
    # names start with one of ``train_only`` (all when empty)
    init_from: str = ""
    train_only: tuple[str, ...] = ()
    # machinery
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda"
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    cache_text: bool = True  # cache the frozen text encoder's outputs per unique text
    num_workers: int = 0
    in_memory: bool = False  # keep samples in memory after their first read (phantoms: ~6 MB each;
    # not for CT-RATE, whose 47k prepared volumes would not fit)
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    val_every: int = 0  # validate every N steps (0: at epoch ends only)
    log_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("train_seeds", "val_seeds", "test_seeds", "betas", "phantom_shape", "phantom_spacing",
                    "train_only"):
            setattr(self, key, tuple(getattr(self, key)))
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.dataset not in ("phantom", "ct-rate"):
            problems.append("dataset must be 'phantom' or 'ct-rate'")
        if self.dataset == "ct-rate" and not self.ct_rate_root:
            problems.append("dataset 'ct-rate' needs ct_rate_root")
        ranges = {k: getattr(self, k) for k in ("train_seeds", "val_seeds", "test_seeds")}
        for key, (start, stop) in ranges.items():
            if not 0 <= start < stop:
                problems.append(f"{key} must be [start, stop) with 0 <= start < stop")
        spans = sorted(ranges.values())
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
            problems.append("train/val/test seed ranges overlap; make them disjoint")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}")
        if self.anatomy_reduction not in REDUCTIONS:
            problems.append(f"anatomy_reduction must be one of {REDUCTIONS}")
        if self.image_dtype not in ("float16", "uint8"):
            problems.append("image_dtype must be 'float16' or 'uint8'")
        if self.aux_bce_weight < 0:
            problems.append("aux_bce_weight must be >= 0")
        if not 0.0 <= self.co_teaching_alpha < 1.0:
            problems.append("co_teaching_alpha must be in [0, 1)")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            problems.append("batch_size, grad_accum and epochs must be at least 1")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append("device must be 'auto', 'cpu' or 'cuda'")
        if not 0.0 <= self.ct_rate_val_fraction < 1.0:
            problems.append("ct_rate_val_fraction must be in [0, 1)")
        if problems:
            raise FvlmInputError(f"Invalid training config '{self.name}': " + "; ".join(problems) + ".")

    @property
    def finding_set(self) -> str:
        """The findings this experiment's labels name."""
        return "phantom" if self.dataset == "phantom" else "ct-rate"

    def model_config(self) -> ModelConfig:
        """The model preset with this experiment's overrides applied."""
        return ModelConfig.from_dict({**preset(self.model_preset).to_dict(), **self.model})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FvlmInputError(f"Unknown training config keys {unknown}; known keys: {sorted(known)}.")
        if "name" not in data:
            raise FvlmInputError("A training config needs a 'name'.")
        try:
            return cls(**data)
        except TypeError as error:
            raise FvlmInputError(f"A training config value has the wrong type: {error}.") from None


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, true, [0, 8]), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key=value`` pairs onto a config dict; ``model.width=32`` sets one model override."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FvlmInputError(f"Override '{item}' is not key=value (e.g. --set batch_size=8).")
        if key.startswith("model."):
            data.setdefault("model", {})[key[len("model."):]] = parse_value(value)
        else:
            data[key] = parse_value(value)
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """A `TrainConfig` from a JSON file plus ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FvlmInputError(f"Training config '{path}' does not exist; see training/configs/.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FvlmInputError(f"Training config '{path}' is not valid JSON ({error}).") from None
    config = TrainConfig.from_dict(apply_overrides(data, list(overrides)))
    config.model_config()  # refuse a bad model override now, not after the data is cached
    return config


def git_commit() -> str | None:
    """The commit of the code being run (with '+dirty' for local changes), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def run_record(config: TrainConfig) -> dict[str, Any]:
    """What is saved beside the checkpoints: every config value, the model config, the commit."""
    return {"train": config.to_dict(), "model": config.model_config().to_dict(), "git_commit": git_commit()}


def save_run_record(config: TrainConfig, folder: str | Path) -> Path:
    path = Path(folder) / TRAIN_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run_record(config), indent=2), encoding="utf-8")
    return path


def read_run_record(folder: str | Path) -> TrainConfig:
    """The `TrainConfig` saved in a run folder (or a checkpoint folder's parent run)."""
    folder = Path(folder)
    for candidate in (folder, *folder.parents[:3]):
        path = candidate / TRAIN_CONFIG_FILE
        if path.is_file():
            return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8"))["train"])
    raise FvlmInputError(f"No {TRAIN_CONFIG_FILE} in '{folder}' or its parents; was it made by training?")
