"""Processes: torchrun's environment, the process group, and gathering features across processes.

`gather_with_grad` makes the contrastive loss of N processes equal to one process holding the
whole global batch: every process gathers all features and computes the same loss; the backward
all-reduces the gradient of the gathered features, and DDP's average of parameter gradients
over processes then equals the single-process gradient (see `gather_with_grad`). Feature gathers
run on a process group of their own, so they never interleave with DDP's gradient buckets.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

INIT_TIMEOUT = datetime.timedelta(hours=2)  # rank 0 may be building caches meanwhile


@dataclass
class Processes:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    feature_group: object = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def choose_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from napari_fvlm.core.errors import FvlmInputError

            raise FvlmInputError("device 'cuda' was asked for, but torch sees no CUDA GPU; use device=cpu.")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup_processes(device_preference: str = "auto") -> Processes:
    """One process, or the process group torchrun described in the environment (gloo / nccl)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(device_preference, local_rank)
    if world == 1:
        return Processes(0, 1, 0, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=INIT_TIMEOUT)
    group = dist.new_group(backend=backend, timeout=INIT_TIMEOUT)
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank, device, group)


def teardown_processes(processes: Processes) -> None:
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.size = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size], None


def gather_with_grad(tensor: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Concatenate every process's (B, ...) tensor in rank order; gradients reach the local part.

    The backward sums the gathered gradient over processes: every process holds the same loss, so
    the local part receives N times its gradient, and DDP's averaging over N processes turns the
    sum of those into exactly the single-process gradient (parameters used after the gather,
    such as the temperature, get the same full gradient on every process and average to it too).
    """
    if not processes.distributed:
        return tensor
    return _GatherWithGrad.apply(tensor, processes.feature_group)


def gather(tensor: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Concatenate every process's (B, ...) tensor in rank order, without gradients."""
    if not processes.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(processes.world)]
    dist.all_gather(parts, tensor.contiguous(), group=processes.feature_group)
    return torch.cat(parts, dim=0)


def mean_over_processes(value: float, processes: Processes) -> float:
    if not processes.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=processes.device)
    dist.all_reduce(tensor, group=processes.feature_group)
    return float(tensor) / processes.world


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier(group=processes.feature_group)
