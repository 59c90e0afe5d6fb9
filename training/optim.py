"""AdamW with weight decay that is really applied, and the warmup + cosine learning-rate schedule.

Decay goes to weight matrices only; norms, biases, position embeddings, the anatomy query
tokens and the temperature are left undecayed (decaying them pulls them towards 0, which has no
regularising meaning). The groups are built from parameter names, so a test can check each one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_NAMES = ("pos_embed", "queries", "log_temperature")


def decays(name: str, parameter: torch.Tensor) -> bool:
    """Whether weight decay applies to a parameter (matrices and convolution kernels only)."""
    if parameter.ndim < 2:  # biases, LayerNorm weights, the temperature
        return False
    return not any(part in name for part in NO_DECAY_NAMES)


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups (decay, no decay) of the trainable parameters, with their names kept."""
    decay, plain = ([], []), ([], [])
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        target = decay if decays(name, parameter) else plain
        target[0].append(name)
        target[1].append(parameter)
    return [{"params": decay[1], "names": decay[0], "weight_decay": weight_decay},
            {"params": plain[1], "names": plain[0], "weight_decay": 0.0}]


def build_optimizer(module: nn.Module, config) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(module, config.weight_decay), lr=config.lr,
                             betas=tuple(config.betas), eps=config.eps)


def learning_rate(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``base * min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
