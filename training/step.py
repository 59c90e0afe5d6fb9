"""One training step's forward and loss: the module DDP wraps, the text feature cache, the loss.

`TrainModule.forward` runs every model's image and text side in one call, so DDP sees one
forward per step. Every anatomy's mask is always passed, so the graph (and DDP's gradient
buckets) is the same every step; an anatomy absent from the whole batch still reaches the loss
through a zero-weighted term (`anchor`), so no parameter is ever without a gradient and
``find_unused_parameters`` is not needed (absent anatomies get a zero gradient on every process,
exactly as in single-process training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import Processes, gather, gather_with_grad
from .losses import anatomy_contrastive_loss, anatomy_logits, global_clip_loss

TEXT_CHUNK = 64


class TextFeatureCache:
    """The frozen text transformer's pooled output per unique text (before the trained projection).

    With a frozen encoder only ``text.proj`` trains, so each text's transformer pass is done once
    (`TextEncoder.pooled_features`: the encoder's own tokenisation and pooling). Fill it once with
    every text of a run (`prefill`, sorted, fixed chunks): features then never depend on which
    texts shared a batch, which keeps resumed runs bit-identical.
    """

    def __init__(self, text_encoder) -> None:
        self.encoder = text_encoder
        self.store: dict[str, torch.Tensor] = {}

    def prefill(self, texts) -> None:
        self._compute(sorted(set(texts) - set(self.store)))

    def _compute(self, texts: list[str]) -> None:
        with torch.no_grad():
            chunks = [self.encoder.pooled_features(texts[start:start + TEXT_CHUNK])
                      for start in range(0, len(texts), TEXT_CHUNK)]
        self.store.update(zip(texts, [row for chunk in chunks for row in chunk]))

    def features(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.store]
        if missing:
            self._compute(missing)
        return torch.stack([self.store[t] for t in texts])


@dataclass
class Features:
    """One model's outputs for a local batch: (B, A, D) image and text, (B, A) valid."""

    image: torch.Tensor
    text: torch.Tensor
    valid: torch.Tensor
    report: torch.Tensor | None
    temperature: torch.Tensor
    anchor: torch.Tensor  # 0 * every output: keeps every parameter in the graph
    label_logits: torch.Tensor | None = None  # (B, S) prompt-pair logits of the label slots
    label_anatomy: list[int] | None = None  # each slot's anatomy index


class TrainModule(nn.Module):
    """The model (and a co-teaching peer) as one module: what DDP wraps and AdamW optimises."""

    def __init__(self, models, text_caches=None, label_slots=()) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.text_caches = text_caches  # one per model, or None: encode texts with the model
        self.anatomies = tuple(models[0].anatomies)
        self.label_slots = list(label_slots)  # (anatomy, finding) pairs of the auxiliary loss
        if self.label_slots:
            from napari_fvlm.core.inference.findings import finding_prompts

            config = models[0].config
            self.slot_anatomy = [self.anatomies.index(a) for a, _ in self.label_slots]
            self.slot_prompts = [finding_prompts(config, a, f) for a, f in self.label_slots]

    def prompt_texts(self) -> list[str]:
        """Every prompt of the label slots (to prefill a text cache)."""
        return [t for pair in getattr(self, "slot_prompts", []) for t in pair]

    def label_logits(self, index: int, image: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """(B, S) zero-shot logits of the label slots: the score's own rule, softmax over the
        (positive, negative) prompt pair = sigmoid((image . (positive - negative)) / temperature)."""
        prompts = self.encode_texts(index, [t for pair in self.slot_prompts for t in pair]).view(-1, 2, image.shape[-1])
        difference = prompts[:, 0] - prompts[:, 1]  # (S, D)
        slot_images = image[:, self.slot_anatomy]  # (B, S, D)
        return (slot_images * difference[None]).sum(-1) / temperature

    def encode_texts(self, index: int, texts: list[str]) -> torch.Tensor:
        """(T, D) normalised text embeddings; each distinct text encoded once."""
        model = self.models[index]
        unique = list(dict.fromkeys(texts))
        if self.text_caches is not None:
            features = self.text_caches[index].features(unique).to(model.device)
            embedded = F.normalize(model.text.proj(features).float(), dim=-1)
        else:
            embedded = model.encode_text(unique)
        position = {t: i for i, t in enumerate(unique)}
        return embedded[torch.tensor([position[t] for t in texts], device=embedded.device)]

    def forward(self, images: torch.Tensor, masks: torch.Tensor, texts: list[list[str]],
                reports: list[str] | None = None, shapes=None, focal: list | None = None) -> list[Features]:
        batch, count = masks.shape[:2]
        outputs = []
        for index, model in enumerate(self.models):
            token_masks = {a: masks[:, i] for i, a in enumerate(self.anatomies)}
            if masks.shape[2:] == images.shape[2:]:  # voxel masks; a token-mask dataset pooled them already
                token_masks = model.token_masks(token_masks)
            out = model(images, token_masks, shapes=shapes, focal=focal)
            image = torch.stack([out.embeddings[a] for a in self.anatomies], dim=1)
            valid = torch.stack([out.valid[a] for a in self.anatomies], dim=1)
            text = self.encode_texts(index, [t for row in texts for t in row]).view(batch, count, -1)
            report = self.encode_texts(index, list(reports)) if reports is not None else None
            logits = self.label_logits(index, image, model.temperature) if self.label_slots else None
            anchor = image.sum() + text.sum() + model.log_temperature + (report.sum() if report is not None else 0)
            outputs.append(Features(image, text, valid, report, model.temperature, 0.0 * anchor, logits,
                                    getattr(self, "slot_anatomy", None)))
        return outputs


def batch_loss(outputs: list[Features], batch: dict, anatomies, config, processes: Processes
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured loss over the global batch (features gathered from every process).

    With a peer (co-teaching), each model's targets mix in the other's detached similarities.
    Returns the summed loss of all models and, for logging, the first model's per-anatomy values.
    """
    device = outputs[0].image.device
    include = gather(batch["include"].to(device), processes)
    normal = gather(batch["normal"].to(device), processes)
    text_ids = gather(batch["text_ids"].to(device), processes)
    gathered = []
    for out in outputs:
        image = gather_with_grad(out.image.float(), processes)
        text = gather_with_grad(out.text.float(), processes)
        report = gather_with_grad(out.report.float(), processes) if out.report is not None else None
        keep = include & gather(out.valid, processes)
        split = {"image": {}, "text": {}, "include": {}, "normal": {}, "ids": {}}
        for i, name in enumerate(anatomies):
            split["image"][name], split["text"][name] = image[:, i], text[:, i]
            split["include"][name], split["normal"][name], split["ids"][name] = keep[:, i], normal[:, i], text_ids[:, i]
        gathered.append((split, report, out, keep))
    peer_logits = [anatomy_logits(s["image"], s["text"], s["include"], o.temperature) for s, _, o, _ in gathered] \
        if len(gathered) > 1 else None
    total, logged = 0.0, {}
    for index, (split, report, out, keep) in enumerate(gathered):
        if config.loss == "global_clip":
            loss, values = global_clip_loss(split["image"], split["include"], report, out.temperature), {}
        else:
            peer = peer_logits[(index + 1) % len(gathered)] if peer_logits else None
            loss, values = anatomy_contrastive_loss(
                split["image"], split["text"], split["include"], split["normal"], split["ids"], out.temperature,
                calibration=config.calibration, reduction=config.anatomy_reduction, peer_logits=peer,
                alpha=config.co_teaching_alpha)
        if config.aux_bce_weight > 0 and out.label_logits is not None:
            loss = loss + config.aux_bce_weight * label_loss(out, batch, keep, processes)
        total = total + loss + out.anchor
        if index == 0:
            logged = values
    return total, logged


def label_loss(out: Features, batch: dict, keep: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Mean binary cross-entropy of the label slots' zero-shot logits against the labels, over the
    slots with a known label whose anatomy takes part in the loss (``keep``: (N, A), global batch)."""
    logits = gather_with_grad(out.label_logits.float(), processes)
    labels = gather(batch["labels"].to(logits.device), processes)
    slots = torch.tensor(out.label_anatomy, device=logits.device)
    known = (labels >= 0) & keep[:, slots]
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], labels[known].float())
