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
from dataclasses import asdict, dataclass, field
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
    """Load a checkpoint of the same model config. One made before the focal soft minimum
    (``focal_min``) or the band channels (``focal_bands``) also loads: the inputs they add (the
    projections' new statistic, the focal MLP's new channels) start with zero weights, so the
    model starts computing exactly what the checkpoint did."""
    from dataclasses import replace

    from napari_fvlm.core.model.checkpoint import check_weights, read_weights, saved_state
    from napari_fvlm.core.model.config import read_checkpoint_config

    config, _ = read_checkpoint_config(folder)
    added = {}
    if model.config.focal_min and not config.focal_min:
        added["focal_min"] = True
    if model.config.focal_bands and not config.focal_bands:
        added["focal_bands"] = model.config.focal_bands
    if replace(config, **added) != model.config:
        raise FvlmInputError(f"init_from '{folder}' holds a model of another configuration; "
                             "start from a checkpoint of the same model config.")
    tensors = read_weights(Path(folder))
    if added:
        expected = saved_state(model)
        tensors = {name: _zero_widened(value, expected[name].shape) if name.startswith(_WIDENED) else value
                   for name, value in tensors.items()}
    check_weights(saved_state(model), tensors, f"'{folder}'")
    model.load_state_dict(tensors, strict=False)


_WIDENED = ("pooling.projections.", "focal.mlp.0.weight")  # inputs that focal_min / focal_bands add


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


EPOCH_END, FINISHED, STOPPED = "epoch end", "finished", "stopped"  # why `_train_epoch` returned


@dataclass
class TrainProgress:
    """Where a run is: optimizer steps, epochs and micro-batches of this epoch done, best validation
    loss so far. Saved in every checkpoint's state.json."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_val: float | None = None

    @classmethod
    def from_state(cls, state: dict) -> TrainProgress:
        return cls(*(state[name] for name in ("step", "epoch", "batch", "best_val")))


@dataclass
class Run:
    """Everything one training call works with, made once by `_set_up`."""

    config: TrainConfig
    processes: Processes
    run_dir: Path
    train_set: CachedDataset
    val_set: CachedDataset
    module: TrainModule
    wrapped: torch.nn.Module  # the module, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    progress: TrainProgress
    total_steps: int
    log: MetricsLog
    extra: dict
    loader_generator: torch.Generator = field(default_factory=torch.Generator)  # the DataLoader's seeds


def _train(config: TrainConfig, processes: Processes, resume: bool, stop_after: int | None) -> Path:
    """Epochs until the schedule's last step (or ``stop_after`` steps of this call); validation
    and checkpoints at each epoch's end and when the run stops, mid-epoch ones in `_train_epoch`."""
    from tqdm import tqdm

    run = _set_up(config, processes, resume)
    stop_at = None if stop_after is None else run.progress.step + stop_after
    bar = tqdm(total=run.total_steps, initial=run.progress.step, desc=config.name,
               disable=not (config.progress and processes.main))
    run.module.train()
    while run.progress.step < run.total_steps:
        why = _train_epoch(run, stop_at, bar)
        if why == EPOCH_END:
            run.progress.epoch += 1
            run.progress.batch = 0
        if why in (EPOCH_END, FINISHED):
            _validate(run)
        _checkpoint(run)
        if why != EPOCH_END:
            break
    bar.close()
    return run.run_dir


def _set_up(config: TrainConfig, processes: Processes, resume: bool) -> Run:
    """The run folder, the cached splits, the model(s) with optimizer and scaler, resumed from the
    last checkpoint when ``resume``."""
    run_dir = run_folder(config)
    if not resume and latest_checkpoint(run_dir) is not None:  # every process sees it: none waits alone
        raise FvlmInputError(f"'{run_dir}' already holds a run; continue it with --resume or choose another name.")
    if processes.main:
        save_run_record(config, run_dir)
    seed_everything(config.seed)
    train_set, val_set, slots = _datasets(config, processes)
    per_epoch = steps_per_epoch(len(train_set), config.batch_size, processes.world, config.grad_accum)
    if per_epoch == 0:
        raise FvlmInputError(f"The train split has {len(train_set)} samples, fewer than one global batch "
                             f"({config.batch_size} x {processes.world} processes x {config.grad_accum} accumulation).")
    module = _train_module(config, processes, train_set, val_set, slots)
    optimizer = build_optimizer(module, config)
    dtype = autocast_dtype(processes.device) if config.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    progress = TrainProgress()
    folder = latest_checkpoint(run_dir) if resume else None
    if folder is not None:
        progress = TrainProgress.from_state(load_training_state(folder, module.models, optimizer, scaler, processes))
    else:
        seed_everything(config.seed + 1 + processes.rank)  # per-process randomness (dropout)
    wrapped = module
    if processes.distributed:
        ids = [processes.device.index] if processes.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)
    log = MetricsLog(run_dir / "metrics.csv", progress.step if folder is not None else None, processes.main)
    return Run(config, processes, run_dir, train_set, val_set, module, wrapped, optimizer, scaler, progress,
               config.max_steps or config.epochs * per_epoch, log, {"train_config": run_record(config)})


def _datasets(config: TrainConfig, processes: Processes) -> tuple[CachedDataset, CachedDataset, list]:
    """The train and validation splits, cached (each process builds its share), and the label slots
    of the auxiliary loss."""
    model_config = config.model_config()
    show = config.progress and processes.main
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
    return train_set, val_set, slots


def _train_module(config: TrainConfig, processes: Processes, train_set, val_set, slots) -> TrainModule:
    """The model(s) in a `TrainModule` on the device; frozen text encoders answer from a cache
    filled once with every text of both splits."""
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
    return module


def _train_epoch(run: Run, stop_at: int | None, bar) -> str:
    """The rest of the current epoch, one optimizer step per ``grad_accum`` micro-batches, with the
    mid-epoch validations and checkpoints; returns why it returned (`EPOCH_END`, `FINISHED` at the
    schedule's last step, `STOPPED` after ``stop_at``)."""
    config, processes, progress = run.config, run.processes, run.progress
    batches = epoch_batches(len(run.train_set), config.batch_size, processes.world, processes.rank,
                            progress.epoch, config.seed)
    batches = batches[:len(batches) - len(batches) % config.grad_accum][progress.batch:]
    loader = torch.utils.data.DataLoader(run.train_set, batch_sampler=batches, num_workers=config.num_workers,
                                         collate_fn=collate, generator=run.loader_generator)
    tick = time.perf_counter()
    for batch in loader:
        last_micro = progress.batch % config.grad_accum == config.grad_accum - 1
        loss = _backward(run, batch, sync=last_micro)
        progress.batch += 1
        if not last_micro:
            continue
        lr = _optimizer_step(run)
        seconds, tick = time.perf_counter() - tick, time.perf_counter()
        _report_step(run, bar, loss, lr, seconds)
        finished = progress.step >= run.total_steps
        if config.val_every and progress.step % config.val_every == 0 and not finished:
            _validate(run)
        if finished:
            return FINISHED
        if stop_at is not None and progress.step >= stop_at:
            return STOPPED
        if config.checkpoint_every and progress.step % config.checkpoint_every == 0:
            _checkpoint(run)
    return EPOCH_END


def _backward(run: Run, batch: dict, sync: bool) -> torch.Tensor:
    """Forward and backward of one micro-batch; gradients are all-reduced only when ``sync``."""
    config, processes = run.config, run.processes
    batch = _to_device(batch, processes)
    no_sync = processes.distributed and not sync
    with run.wrapped.no_sync() if no_sync else contextlib.nullcontext():
        with _autocast(config, processes.device):
            outputs = run.wrapped(batch["images"], batch["masks"], batch["texts"], _reports(batch, config),
                                  batch["shapes"], batch.get("focal"))
        loss, _ = batch_loss(outputs, batch, run.module.anatomies, config, processes)
        run.scaler.scale(loss / config.grad_accum).backward()
    return loss


def _optimizer_step(run: Run) -> float:
    """One optimizer step at the schedule's learning rate (gradients clipped when configured); returns the rate."""
    config, optimizer = run.config, run.optimizer
    lr = learning_rate(run.progress.step, config.lr, config.warmup_steps, run.total_steps, config.min_lr_ratio)
    set_learning_rate(optimizer, lr)
    if config.grad_clip > 0:
        run.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(run.module.parameters(), config.grad_clip)
    run.scaler.step(optimizer)
    run.scaler.update()
    optimizer.zero_grad()
    run.progress.step += 1
    return lr


def _report_step(run: Run, bar, loss: torch.Tensor, lr: float, seconds: float) -> None:
    """The step's metrics row (every ``log_every`` steps) and the progress bar."""
    progress, models = run.progress, run.module.models
    if progress.step % max(1, run.config.log_every) == 0:
        run.log.write(step=progress.step, epoch=progress.epoch, lr=lr, loss=float(loss.detach()) / len(models),
                      temperature=float(models[0].temperature.detach()), step_seconds=seconds)
    bar.update(1)
    bar.set_postfix(loss=f"{float(loss.detach()):.3f}", s_per_step=f"{seconds:.2f}")


def _checkpoint(run: Run) -> None:
    save_training_state(run.run_dir, run.module.models, run.optimizer, run.scaler, asdict(run.progress),
                        {**run.extra, "step": run.progress.step}, run.processes, run.config.keep_checkpoints)


def _validate(run: Run) -> None:
    """The validation loss, logged; a new best is saved to ``best/``."""
    value = validation_loss(run.module, run.val_set, run.config, run.processes)
    progress = run.progress
    run.log.write(step=progress.step, epoch=progress.epoch, val_loss=value)
    if progress.best_val is None or value < progress.best_val:
        progress.best_val = value
        if run.processes.main:
            save_checkpoint(run.module.models[0], run.run_dir / BEST,
                            {**run.extra, "step": progress.step, "val_loss": value})
    barrier(run.processes)
