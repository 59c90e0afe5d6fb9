"""The training loop: one process or many (torchrun), resumable exactly from its last checkpoint.

Order of work: set up processes -> cache the splits (each process builds its share) -> build the
model(s) with the same seed everywhere -> AdamW -> resume if asked -> epochs of global batches,
gradient accumulation, AMP on CUDA -> checkpoints every N steps and at epoch ends -> validation
loss picks the best model (saved to ``best/``; the test split is never touched here).
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

import numpy as np
import torch

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.findings import label_slots
from napari_fvlm.core.model.checkpoint import save_checkpoint
from napari_fvlm.core.model.fvlm import autocast_dtype, build_model

from .config import TrainConfig, run_record, save_run_record
from .datasets import prepare_split
from .distributed import Processes, barrier, mean_over_processes, setup_processes, teardown_processes
from .loader import CachedDataset, batch_loader, collate, epoch_batches, steps_per_epoch
from .optim import build_optimizer, learning_rate, set_learning_rate
from .runlog import MetricsLog
from .state import latest_checkpoint, load_training_state, save_training_state
from .step import TextFeatureCache, TrainModule, batch_loss

BEST = "best"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def run_folder(config: TrainConfig) -> Path:
    return Path(config.out_dir) / config.name


def build_models(config: TrainConfig) -> list:
    """The model, and with co-teaching a peer from another initialisation; ``init_from`` starts
    them from a checkpoint's weights, ``train_only`` freezes every other parameter."""
    models = []
    for index in range(2 if config.co_teaching_alpha > 0 else 1):
        torch.manual_seed(config.seed + 7919 * index)
        model = build_model(config.model_config())
        if config.init_from:
            _load_initial_weights(model, config.init_from)
        if config.train_only:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(parameter.requires_grad and name.startswith(tuple(config.train_only)))
        models.append(model)
    return models


def _load_initial_weights(model, folder: str) -> None:
    """Load a checkpoint of the same model config; one without the focal soft minimum
    (``focal_min``) also loads, its projections widened with zero weights for the new statistic,
    so the model starts computing exactly what the checkpoint did."""
    from dataclasses import replace

    from napari_fvlm.core.model.checkpoint import check_weights, read_weights, saved_state
    from napari_fvlm.core.model.config import read_checkpoint_config

    config, _ = read_checkpoint_config(folder)
    widen = model.config.focal_min and not config.focal_min
    if (replace(config, focal_min=True) if widen else config) != model.config:
        raise FvlmInputError(f"init_from '{folder}' holds a model of another configuration; "
                             "start from a checkpoint of the same model config.")
    tensors = read_weights(Path(folder))
    if widen:
        expected = saved_state(model)
        tensors = {name: _zero_widened(value, expected[name].shape) if name.startswith("pooling.projections.")
                   else value for name, value in tensors.items()}
    check_weights(saved_state(model), tensors, f"'{folder}'")
    model.load_state_dict(tensors, strict=False)


def _zero_widened(value, shape):
    """``value`` padded with zero columns up to ``shape`` (a projection's new input features)."""
    if tuple(value.shape) == tuple(shape):
        return value
    widened = torch.zeros(shape, dtype=value.dtype)
    widened[:, :value.shape[1]] = value
    return widened


def _texts_of(dataset: CachedDataset, reports: bool) -> set[str]:
    """Every anatomy text of a split (and the whole reports, which only the CLIP baseline reads:
    encoding a thousand long reports costs minutes on a CPU)."""
    import json

    texts = set()
    for path in dataset.paths:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
        texts.update(meta["texts"].values())
        if reports:
            texts.add(meta["report"])
    return texts


def _to_device(batch: dict, processes: Processes) -> dict:
    """The batch on the device. Padding needs no care: the model encodes each sample on its own
    shape ("shapes"), so a sample's features do not depend on the batch or process it lands in."""
    return {k: v.to(processes.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _autocast(config: TrainConfig, device: torch.device):
    dtype = autocast_dtype(device) if config.amp else None
    return torch.autocast(device_type="cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def validation_loss(module: TrainModule, dataset: CachedDataset, config: TrainConfig, processes: Processes) -> float:
    """Mean loss over the validation split's global batches, in fixed order (no shuffling)."""
    module.eval()
    per_process = config.batch_size
    count = len(dataset)
    if count < per_process * processes.world:
        per_process = max(1, count // processes.world)
    global_batch = per_process * processes.world
    batches = [list(range(s + processes.rank * per_process, s + (processes.rank + 1) * per_process))
               for s in range(0, count - global_batch + 1, global_batch)]
    losses = []
    with torch.no_grad():
        for batch in batch_loader(dataset, batches, config.num_workers):
            batch = _to_device(batch, processes)
            with _autocast(config, processes.device):
                outputs = module(batch["images"], batch["masks"], batch["texts"], _reports(batch, config),
                                 batch["shapes"], batch.get("focal"))
            loss, _ = batch_loss(outputs, batch, module.anatomies, config, processes)
            losses.append(float(loss) / len(module.models))
    module.train()
    return mean_over_processes(float(np.mean(losses)) if losses else float("nan"), processes)


def _reports(batch: dict, config: TrainConfig):
    return batch["reports"] if config.loss == "global_clip" else None


def train(config: TrainConfig, resume: bool = False, stop_after: int | None = None) -> Path:
    """Train; ``resume`` continues from the last checkpoint; ``stop_after`` stops (with a
    checkpoint) after that many optimizer steps of this call without changing the schedule."""
    processes = setup_processes(config.device)
    try:
        return _train(config, processes, resume, stop_after)
    finally:
        teardown_processes(processes)


def _train(config: TrainConfig, processes: Processes, resume: bool, stop_after: int | None) -> Path:
    run_dir = run_folder(config)
    if not resume and latest_checkpoint(run_dir) is not None:  # every process sees it: none waits alone
        raise FvlmInputError(f"'{run_dir}' already holds a run; continue it with --resume or choose another name.")
    if processes.main:
        save_run_record(config, run_dir)
    show = config.progress and processes.main
    seed_everything(config.seed)
    model_config = config.model_config()
    paths = {split: prepare_split(config, split, processes.rank, processes.world, config.num_workers, show)
             for split in ("train", "val")}
    barrier(processes)
    slots = label_slots(model_config, config.finding_set) if config.aux_bce_weight > 0 else []
    focal = model_config if model_config.focal else None
    train_set, val_set = (CachedDataset(paths[split], model_config.anatomies, config.exclude_cut,
                                        patch_zyx=model_config.patch_zyx,
                                        in_memory=config.in_memory and not focal, focal_config=focal,
                                        label_slots=slots)
                          for split in ("train", "val"))
    per_epoch = steps_per_epoch(len(train_set), config.batch_size, processes.world, config.grad_accum)
    if per_epoch == 0:
        raise FvlmInputError(f"The train split has {len(train_set)} samples, fewer than one global batch "
                             f"({config.batch_size} x {processes.world} processes x {config.grad_accum} accumulation).")
    total_steps = config.max_steps or config.epochs * per_epoch

    models = build_models(config)
    caches = None
    if config.cache_text and all(m.text.frozen for m in models):
        shared = TextFeatureCache(models[0].text)  # frozen pretrained encoders: the same for a peer
        reports = config.loss == "global_clip"
        shared.prefill(_texts_of(train_set, reports) | _texts_of(val_set, reports))
        caches = [shared] * len(models)
    module = TrainModule(models, caches, slots).to(processes.device)
    if caches is not None:
        caches[0].prefill(module.prompt_texts())
    optimizer = build_optimizer(module, config)
    dtype = autocast_dtype(processes.device) if config.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    progress = {"step": 0, "epoch": 0, "batch": 0, "best_val": None}
    folder = latest_checkpoint(run_dir) if resume else None
    if folder is not None:
        progress = load_training_state(folder, module.models, optimizer, scaler, processes)
    else:
        seed_everything(config.seed + 1 + processes.rank)  # per-process randomness (dropout)
    wrapped = module
    if processes.distributed:
        ids = [processes.device.index] if processes.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)
    log = MetricsLog(run_dir / "metrics.csv", progress["step"] if folder is not None else None, processes.main)
    extra = {"train_config": run_record(config)}

    def checkpoint() -> None:
        save_training_state(run_dir, module.models, optimizer, scaler, progress,
                            {**extra, "step": progress["step"]}, processes, config.keep_checkpoints)

    def validate() -> None:
        value = validation_loss(module, val_set, config, processes)
        log.write(step=progress["step"], epoch=progress["epoch"], val_loss=value)
        best = progress["best_val"]
        if best is None or value < best:
            progress["best_val"] = value
            if processes.main:
                save_checkpoint(module.models[0], run_dir / BEST,
                                {**extra, "step": progress["step"], "val_loss": value})
        barrier(processes)

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=progress["step"], desc=config.name, disable=not show)
    module.train()
    start_step = progress["step"]
    loader_generator = torch.Generator()  # DataLoader draws its seed here, not from the global RNG
    while progress["step"] < total_steps:
        batches = epoch_batches(len(train_set), config.batch_size, processes.world, processes.rank,
                                progress["epoch"], config.seed)
        batches = batches[:len(batches) - len(batches) % config.grad_accum][progress["batch"]:]
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches, num_workers=config.num_workers,
                                             collate_fn=collate,
                                             generator=loader_generator)
        tick = time.perf_counter()
        for batch in loader:
            micro = progress["batch"] % config.grad_accum
            batch = _to_device(batch, processes)
            last_micro = micro == config.grad_accum - 1
            sync = wrapped.no_sync() if processes.distributed and not last_micro else contextlib.nullcontext()
            with sync:
                with _autocast(config, processes.device):
                    outputs = wrapped(batch["images"], batch["masks"], batch["texts"], _reports(batch, config),
                                      batch["shapes"], batch.get("focal"))
                loss, _ = batch_loss(outputs, batch, module.anatomies, config, processes)
                scaler.scale(loss / config.grad_accum).backward()
            progress["batch"] += 1
            if not last_micro:
                continue
            lr = learning_rate(progress["step"], config.lr, config.warmup_steps, total_steps, config.min_lr_ratio)
            set_learning_rate(optimizer, lr)
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            progress["step"] += 1
            seconds = time.perf_counter() - tick
            tick = time.perf_counter()
            if progress["step"] % max(1, config.log_every) == 0:
                log.write(step=progress["step"], epoch=progress["epoch"], lr=lr,
                          loss=float(loss.detach()) / len(module.models),
                          temperature=float(module.models[0].temperature.detach()), step_seconds=seconds)
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", s_per_step=f"{seconds:.2f}")
            finished = progress["step"] >= total_steps
            stopping = stop_after is not None and progress["step"] - start_step >= stop_after
            if config.val_every and progress["step"] % config.val_every == 0 and not finished:
                validate()
            if finished or stopping:
                break
            if config.checkpoint_every and progress["step"] % config.checkpoint_every == 0:
                checkpoint()
        else:
            progress["epoch"] += 1
            progress["batch"] = 0
            validate()
            checkpoint()
            continue
        if finished and progress["batch"] != 0:
            validate()
        checkpoint()
        break
    bar.close()
    return run_dir
