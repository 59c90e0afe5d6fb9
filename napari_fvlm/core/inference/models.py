"""Where models come from: the bundled demo weights, a checkpoint folder, or a hub id.

Nothing is downloaded unless the caller asks (``download=True``); offline, a hub id is looked up
in the local Hugging Face cache only.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FvlmInputError

DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "demo"
# Hub models known by name: (repository, revision). The revision pins what this version of the
# plugin was released with, so a later upload to the repository cannot change what it downloads.
HUB_MODELS = {"fvlm-b": ("napari-fvlm/fvlm-b", "v0.1.0")}  # our converted fVLM-B (config.json + safetensors)
CHECKPOINT_FILES = ["config.json", "model.safetensors", "calibration.json", "text_encoder/*"]


def resolve_model_source(source: str | os.PathLike | None, download: bool = False) -> Path:
    """A local checkpoint folder for "demo", a folder path, or a hub id / preset name."""
    if source is None or str(source) == "demo":
        if not (DEMO_WEIGHTS / "config.json").exists():
            raise FvlmInputError("The bundled demo weights are missing from this installation; "
                                 "reinstall napari-fvlm or pass --model with a checkpoint folder.")
        return DEMO_WEIGHTS
    path = Path(source).expanduser()
    if path.exists():
        return path
    repo_id, revision = HUB_MODELS.get(str(source), (str(source), None))
    if "/" not in repo_id or repo_id.startswith((".", "/")):
        raise FvlmInputError(f"No model at '{source}': give a checkpoint folder, 'demo', or a hub id "
                             f"such as {', '.join(HUB_MODELS)}.")
    return _from_hub(str(source), repo_id, revision, download)


def _from_hub(name: str, repo_id: str, revision: str | None, download: bool) -> Path:
    """The cached snapshot of ``repo_id`` at ``revision`` (None: the default branch); ``name`` is
    what the user gave (a known name or the id itself)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_FILES,
                                      local_files_only=not download))
    except LocalEntryNotFoundError:
        at = f" at revision {revision}" if revision else ""
        raise FvlmInputError(f"'{repo_id}'{at} is not in the local model cache; download it once with "
                             f"`fvlm download {name}` (needs internet), or convert the official "
                             "checkpoint with `fvlm convert-official`.") from None
    except Exception as err:  # noqa: BLE001 -- network or hub errors when a download was asked for
        raise FvlmInputError(f"Could not download '{repo_id}': {str(err).splitlines()[0]}") from None


def load_model(source=None, device: str = "auto", download: bool = False):
    """(model in eval mode on the chosen device, its checkpoint folder)."""
    from ..model.checkpoint import load_checkpoint

    folder = resolve_model_source(source, download)
    model = load_checkpoint(folder, device=pick_device(device))
    model.eval()
    return model, folder


def load_analyzer(source=None, device: str = "auto", download: bool = False, protocol: str | None = None):
    """An `Analyzer` of the model with its folder's calibration (read first: a bad calibration
    file is refused before the weights load); its ``calibration`` is None when uncalibrated.
    A calibrated model scores the finding set it was calibrated on, an uncalibrated one all.
    ``protocol`` overrides the config's inference protocol ("reference" or "single-pass")."""
    from .analyzer import Analyzer
    from .calibration import read_calibration
    from .findings import FINDING_SETS

    calibration = read_calibration(resolve_model_source(source, download))
    model, _folder = load_model(source, device, download)
    finding_set = calibration.fitted_on.get("finding_set") if calibration else None
    return Analyzer(model, finding_set=finding_set if finding_set in FINDING_SETS else "all", calibration=calibration,
                    protocol=protocol)


def pick_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when a GPU is usable, else "cpu"; "gpu" is an alias of "cuda"."""
    import torch

    device = {"gpu": "cuda"}.get(device, device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FvlmInputError("No GPU is available here; choose the CPU (or auto).")
    if device not in ("cpu", "cuda"):
        raise FvlmInputError(f"Unknown device '{device}'; choose auto, cpu or gpu.")
    return device
