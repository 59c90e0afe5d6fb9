"""Contrastive losses: fVLM's anatomy-level loss with false-negative calibration, and a global CLIP
baseline (docs/method.md, "Loss").

All functions take the features of the whole (global) batch; in multi-process training the
trainer gathers them first, so every process computes the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Features = dict[str, torch.Tensor]


def soft_targets(normal: torch.Tensor, text_ids: torch.Tensor, calibration: bool = True) -> torch.Tensor:
    """(N, N) target rows summing to 1.

    Positives are the diagonal and, with ``calibration``, every pair of samples that are both
    normal for the anatomy or carry the same text: contrasting those against each other would
    push apart what the reports say is the same (false negatives).
    """
    count = normal.shape[0]
    positive = torch.eye(count, dtype=torch.bool, device=normal.device)
    if calibration:
        positive = positive | (normal[:, None] & normal[None, :]) | (text_ids[:, None] == text_ids[None, :])
    targets = positive.float()
    return targets / targets.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij log softmax(logits_i)_j."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def symmetric_soft_loss(logits: torch.Tensor, targets: torch.Tensor, targets_t: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """Mean of image->text and text->image soft cross-entropy (``targets_t``: the text->image rows,
    by default the normalised transpose of ``targets``)."""
    if targets_t is None:
        targets_t = targets.t() / targets.t().sum(dim=1, keepdim=True)
    return 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.t(), targets_t))


def anatomy_logits(image: Features, text: Features, include: Features, temperature: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    """{anatomy: (n, n) image-text similarities / temperature over the included samples}."""
    out = {}
    for name, keep in include.items():
        rows = keep.nonzero().flatten()
        out[name] = image[name][rows].float() @ text[name][rows].float().t() / temperature
    return out


def anatomy_contrastive_loss(image: Features, text: Features, include: Features, normal: Features,
                             text_ids: Features, temperature: torch.Tensor, calibration: bool = True,
                             reduction: str = "sum", peer_logits: dict[str, torch.Tensor] | None = None,
                             alpha: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """fVLM's loss: per anatomy, symmetric soft-target cross-entropy over the samples included
    for it (anatomy present and not cut by the crop), then summed (or averaged) over anatomies.

    ``image``/``text``: {anatomy: (N, D)} normalised; ``include``/``normal``: {anatomy: (N,) bool};
    ``text_ids``: {anatomy: (N,) int64}, equal ids for identical texts. Anatomies with fewer than
    two included samples contribute nothing (a single pair has no negatives).
    Co-teaching: with ``peer_logits`` (a peer model's `anatomy_logits`, detached) the targets
    become (1 - alpha) * label targets + alpha * softmax(peer similarities).
    Returns (loss, {anatomy: its loss value}).
    """
    logits = anatomy_logits(image, text, include, temperature)
    terms, values = [], {}
    for name, anatomy_logit in logits.items():
        if anatomy_logit.shape[0] < 2:
            continue
        rows = include[name].nonzero().flatten()
        targets = soft_targets(normal[name][rows], text_ids[name][rows], calibration)
        targets_t = targets.t() / targets.t().sum(dim=1, keepdim=True)
        if peer_logits is not None and alpha > 0:
            peer = peer_logits[name].detach().float()
            targets = (1 - alpha) * targets + alpha * F.softmax(peer, dim=1)
            targets_t = (1 - alpha) * targets_t + alpha * F.softmax(peer.t(), dim=1)
        term = symmetric_soft_loss(anatomy_logit, targets, targets_t)
        terms.append(term)
        values[name] = float(term.detach())
    if not terms:
        return temperature.new_zeros(()).float(), values
    total = torch.stack(terms).sum()
    return (total / len(terms) if reduction == "mean" else total), values


def global_image_embedding(image: Features, include: Features) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) normalised mean of each sample's included anatomy embeddings, and (N,) has-any flags."""
    names = list(image)
    weights = torch.stack([include[n].float() for n in names], dim=1)  # (N, A)
    stacked = torch.stack([image[n].float() for n in names], dim=1)  # (N, A, D)
    mean = (stacked * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    return F.normalize(mean, dim=-1), weights.sum(dim=1) > 0


def global_clip_loss(image: Features, include: Features, report: torch.Tensor, temperature: torch.Tensor
                     ) -> torch.Tensor:
    """The CLIP baseline: mean anatomy embedding vs the whole report, identity targets."""
    pooled, keep = global_image_embedding(image, include)
    rows = keep.nonzero().flatten()
    if rows.numel() < 2:
        return temperature.new_zeros(()).float()
    logits = pooled[rows] @ report[rows].float().t() / temperature
    targets = torch.eye(rows.numel(), device=logits.device)
    return symmetric_soft_loss(logits, targets, targets)


def target_entropy_floor(include: Features, normal: Features, text_ids: Features, calibration: bool = True,
                         reduction: str = "sum") -> float:
    """The lowest value `anatomy_contrastive_loss` can reach on a batch: each row's cross-entropy is
    at least the entropy of its targets (reached when the similarities reproduce them). Used to
    tell learning from noise: calibrated targets put the floor well above zero."""
    terms = []
    for name, keep in include.items():
        rows = keep.nonzero().flatten()
        if rows.numel() < 2:
            continue
        targets = soft_targets(normal[name][rows], text_ids[name][rows], calibration)
        entropy = -(targets * targets.clamp(min=1e-12).log()).sum(dim=1).mean()
        terms.append(float(entropy))  # symmetric targets: both directions share this floor
    if not terms:
        return 0.0
    return sum(terms) / len(terms) if reduction == "mean" else sum(terms)
