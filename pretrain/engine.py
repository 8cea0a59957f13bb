"""The training loop's pieces: the resolved settings, the learning-rate schedule, per-micro-batch seeding, the
step loop, its NaN guard and its metrics (the settings themselves are ``pretrain.config.TrainConfig``).
``pretrain.train`` builds the objects and calls :func:`run_steps`.

Performance facts: a step does no host synchronisation; the loss and the first non-finite step are accumulated
on the device and read (``.item()``, a host sync, plus one all-reduce under DDP) only on logging and checkpoint
steps. The corrupt-tile counts come
from the DataLoader on the host and cost nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pretrain.config import DEFAULT_MASK_RATIO, RESUME_MAY_CHANGE, TrainConfig
from pretrain.data import BrokenShards
from pretrain.infobatch import InfoBatchStream
from rs4m.errors import ConfigError, Rs4mError

PEAK_FLOPS_BF16 = 989e12  # H100 / H200 SXM dense bf16, for MFU


def peak_lr(cfg: TrainConfig) -> float:
    """The run's peak lr: ``--lr`` if given, else the authors' rule (r/m)·blr·batch/256 for SelectiveMAE (r, m
    the run's ratios) and blr·batch/256 for MAE."""
    if cfg.lr is not None:
        return cfg.lr
    mask = cfg.mask_ratio or DEFAULT_MASK_RATIO[cfg.method]
    scale = cfg.recon_ratio / mask if cfg.method == "selectivemae" else 1.0
    return scale * cfg.blr * cfg.batch_size / 256


def resolve(cfg: TrainConfig, num_samples: int, world_size: int, device: str) -> dict[str, Any]:
    """The run's resolved settings: the config plus total steps, warm-up, lr, micro-batch and device."""
    cfg.check()
    if cfg.batch_size % (world_size * cfg.accum_steps):
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by world size {world_size} × "
                          f"--accum-steps {cfg.accum_steps}")
    if cfg.steps is not None:
        total = cfg.steps
    else:
        assert cfg.epochs is not None  # cfg.check() requires --steps or --epochs
        total = math.ceil(cfg.epochs * num_samples / cfg.batch_size)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.05 * total + 0.5)
    settings = {**asdict(cfg), "total_steps": total, "warmup_steps": min(warmup, total), "lr": peak_lr(cfg),
                "world_size": world_size, "micro_batch": cfg.batch_size // (world_size * cfg.accum_steps),
                "device": device, "num_samples": num_samples, "model_options": cfg.model_options()}
    if cfg.infobatch:
        if num_samples < cfg.batch_size:
            raise ConfigError(f"--infobatch trains on whole batches of each epoch: --batch-size {cfg.batch_size} "
                              f"is larger than the {num_samples} tiles")
        # the run's length in epochs; total_steps becomes the upper bound that unpruned epochs would take
        settings["infobatch_epochs"] = cfg.epochs if cfg.epochs is not None else total * cfg.batch_size / num_samples
    return settings


def resume_differences(saved: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """Settings of ``settings`` that differ from the checkpoint's ``saved`` ones and may not (all but
    ``RESUME_MAY_CHANGE``), as "key: saved X, now Y" lines. A flag the saved run predates counts as its default."""
    keys = sorted((set(saved) | set(settings)) - set(RESUME_MAY_CHANGE))
    saved = {**{f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}, **saved}
    return [f"{k}: saved {saved.get(k)!r}, now {settings.get(k)!r}" for k in keys if saved.get(k) != settings.get(k)]


def lr_at(step: float, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up to ``base_lr``, then half-cycle cosine to 0."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def micro_seed(seed: int, step: int, micro: int) -> int:
    """Seed of the model's random draws (masking, PSTS) for global micro-batch ``micro`` of ``step``.

    A pure function of its arguments, so a resumed run and a run on another number of ranks (see
    ``ResumableSampler``) draw the same masks for the same samples.
    """
    return int(np.random.SeedSequence((seed, step, micro)).generate_state(1, np.uint64)[0] >> 1)


#: "no non-finite step yet" in ``Meter.first_bad`` (larger than any step number)
NO_BAD_STEP = 2**62


@dataclass
class Meter:
    """What accumulates between two logging steps (the loss stays on the device).

    ``first_bad`` (int64, on the device) is the first step whose loss was not finite, or ``NO_BAD_STEP``; it
    is updated every step without a host sync and read only before logging and checkpointing.
    """

    loss_sum: torch.Tensor
    first_bad: torch.Tensor
    progress: torch.Tensor  # 0-d float32 on the device: the model's ``progress`` under --compile
    steps: int = 0
    data_wait_s: float = 0.0
    started: float = 0.0
    corrupt_tiles: int = 0

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.steps, self.data_wait_s, self.started = 0, 0.0, time.perf_counter()


@dataclass
class Loop:
    """Everything ``run_steps`` drives: the (possibly DDP-wrapped) model, optimiser, batches, settings."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: Iterator
    settings: dict[str, Any]
    rank: int = 0
    flops_per_image: float = 0.0
    on_log: Callable[[dict[str, Any]], None] = print
    on_checkpoint: Callable[[int, int], None] = lambda step, corrupt: None
    pruning: InfoBatchStream | None = None  # with --infobatch: ``batches`` itself, which also weights the loss

    def schedule_step(self, step: int) -> float:
        """Where step ``step`` lies on the lr and PSTS schedules, in nominal steps: ``step`` itself, or under
        InfoBatch the nominal step at the same fraction of the run's epochs."""
        if self.pruning is None:
            return step
        return self.pruning.progress() * self.settings["total_steps"]

    def epoch_at(self, done: int) -> float:
        """Epochs done after ``done`` steps (under InfoBatch at its current position)."""
        if self.pruning is None:
            return done * self.settings["batch_size"] / self.settings["num_samples"]
        return self.pruning.progress() * self.settings["infobatch_epochs"]


def _forward_backward(loop: Loop, step: int, meter: Meter) -> None:
    s = loop.settings
    device = torch.device(s["device"])
    world, accum = s["world_size"], s["accum_steps"]
    progress: float | torch.Tensor = loop.schedule_step(step) / s["total_steps"]
    if s["compile"]:  # a Python float would recompile as it changes; fill_ of a kept tensor copies nothing
        progress = meter.progress.fill_(progress)
    for micro in range(accum):
        t0 = time.perf_counter()
        try:
            imgs, indices, corrupt = next(loop.batches)
        except BrokenShards as err:
            raise BrokenShards.one_line(err) from None
        meter.data_wait_s += time.perf_counter() - t0
        meter.corrupt_tiles += int(corrupt.sum())
        imgs = imgs.to(device, non_blocking=True)
        torch.manual_seed(micro_seed(s["seed"], step, micro * world + loop.rank))
        sync = micro == accum - 1 or not hasattr(loop.model, "no_sync")
        # no_sync is DistributedDataParallel's; nn.Module.__getattr__ types it as a Tensor
        with (nullcontext() if sync else loop.model.no_sync()):  # type: ignore[operator]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                if loop.pruning is None:
                    loss, _, _ = loop.model(imgs, progress=progress)
                else:  # indices pinned by the loader: copied without a sync; losses stay on the device
                    indices = indices.to(device, non_blocking=True)
                    loss, _, info = loop.model(imgs, progress=progress, sample_weight=loop.pruning.weights(indices))
                    loop.pruning.record(indices, info["loss_per_sample"])
            (loss / accum).backward()
        loss = loss.detach().float()
        meter.loss_sum += loss / accum
        # masked_fill with a Python scalar launches a kernel; no host sync, no host-to-device copy
        bad_here = meter.first_bad.new_full((), NO_BAD_STEP).masked_fill(~torch.isfinite(loss), step + 1)
        torch.minimum(meter.first_bad, bad_here, out=meter.first_bad)


def new_meter(device: torch.device) -> Meter:
    """A ``Meter`` whose device tensors live on ``device``."""
    meter = Meter(torch.zeros((), device=device), torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device),
                  torch.zeros((), device=device))
    meter.reset()
    return meter


def train_step(loop: Loop, step: int, meter: Meter) -> None:
    """One optimiser step ``step`` (0-based): lr, forward and backward of each micro-batch, update.

    No host synchronisation on CUDA (tested under ``torch.cuda.set_sync_debug_mode("error")``).
    """
    s = loop.settings
    lr = lr_at(loop.schedule_step(step), s["lr"], s["warmup_steps"], s["total_steps"])
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    _forward_backward(loop, step, meter)
    loop.optimizer.step()
    loop.optimizer.zero_grad(set_to_none=True)
    meter.steps += 1
    if loop.pruning is not None:
        loop.pruning.step_done()  # at an epoch's end: the losses folded in (a host sync), the next epoch drawn


def _log_record(loop: Loop, step: int, meter: Meter, corrupt_before: int) -> dict[str, Any]:
    s = loop.settings
    loss = meter.loss_sum.clone()
    corrupt = torch.tensor([float(meter.corrupt_tiles)], device=loss.device)
    if s["world_size"] > 1:
        dist.all_reduce(loss)
        dist.all_reduce(corrupt)
    loss_value = loss.item() / (meter.steps * s["world_size"])  # host sync: logging steps only
    elapsed = time.perf_counter() - meter.started
    images_per_s = meter.steps * s["batch_size"] / elapsed
    on_gpu = torch.device(s["device"]).type == "cuda"
    mfu = loop.flops_per_image * images_per_s / (PEAK_FLOPS_BF16 * s["world_size"]) if on_gpu else None
    return {"step": step, "epoch": loop.epoch_at(step), "loss": loss_value,
            "lr": loop.optimizer.param_groups[0]["lr"], "images_per_s": images_per_s,
            "data_wait_pct": 100.0 * meter.data_wait_s / elapsed, "mfu": mfu,
            "corrupt_tiles": corrupt_before + int(corrupt.item())}


def run_steps(loop: Loop, start_step: int, corrupt_tiles: int = 0) -> int:
    """Optimiser steps ``start_step`` … end (``total_steps`` or ``stop_at``; under InfoBatch the end of the
    run's epochs, if sooner); returns the corrupt-tile count.

    Logged and checkpointed step numbers count from 1 (step n = n finished optimiser steps).
    """
    s = loop.settings
    end = min(s["total_steps"], s["stop_at"] or s["total_steps"])
    meter = new_meter(torch.device(s["device"]))
    began, start_fraction = time.perf_counter(), _fraction_done(loop, start_step)
    for step in range(start_step, end):
        if loop.pruning is not None and loop.pruning.finished:
            break
        train_step(loop, step, meter)
        done = step + 1
        last = done == end or (loop.pruning is not None and loop.pruning.finished)
        if done % s["log_every"] == 0 or last or done == 1:  # step 1 at once: nothing silent for long
            check_finite(loop, meter, done)
            record = _log_record(loop, done, meter, corrupt_tiles)
            # to the end of the run (not of this invocation's --stop-at), at this invocation's pace so far
            if loop.pruning is None:
                record["eta_s"] = (time.perf_counter() - began) / (done - start_step) * (s["total_steps"] - done)
            else:
                fraction = _fraction_done(loop, done)
                record["eta_s"] = (time.perf_counter() - began) / (fraction - start_fraction) * (1 - fraction)
            corrupt_tiles = record["corrupt_tiles"]
            meter.corrupt_tiles = 0
            if loop.rank == 0:
                loop.on_log(record)
            meter.reset()
        if done % s["ckpt_every"] == 0 or last:
            check_finite(loop, meter, done, parameters=True)  # never save a diverged model over a good checkpoint
            corrupt_tiles += _sum_over_ranks(meter.corrupt_tiles, s)  # so the saved count is exact
            meter.corrupt_tiles = 0
            loop.on_checkpoint(done, corrupt_tiles)
    return corrupt_tiles


def _fraction_done(loop: Loop, done: int) -> float:
    """Fraction of the run done after ``done`` steps (under InfoBatch: of its epochs, at the current position)."""
    return done / loop.settings["total_steps"] if loop.pruning is None else loop.pruning.progress()


class NonFiniteLoss(Rs4mError, FloatingPointError):
    """Training diverged at ``step`` (a non-finite loss, or non-finite weights at a checkpoint)."""

    def __init__(self, step: int, saved: str = "") -> None:
        super().__init__(f"training diverged at step {step} (loss or weights not finite), nothing after it was "
                         f"saved{saved}: lower --lr, or check the data")
        self.step = step


def check_finite(loop: Loop, meter: Meter, step: int, parameters: bool = False) -> None:
    """Raise ``NonFiniteLoss`` if a step so far had a non-finite loss or, with ``parameters``, if a weight is
    not finite now (then ``step`` is named). A host sync and, under DDP, one all-reduce: logging and checkpoint
    steps only."""
    first_bad = meter.first_bad.clone()
    if parameters:
        finite = torch.stack([torch.isfinite(p).all() for p in loop.model.parameters()]).all()
        first_bad = torch.where(finite, first_bad, torch.clamp(first_bad, max=step))
    if loop.settings["world_size"] > 1:
        dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
    bad = int(first_bad.item())
    if bad != NO_BAD_STEP:
        raise NonFiniteLoss(bad)


def _sum_over_ranks(count: int, settings: dict[str, Any]) -> int:
    """Sum a host count over ranks (a collective: every rank calls it on the same steps)."""
    if settings["world_size"] == 1:
        return count
    total = torch.tensor([count], dtype=torch.int64, device=torch.device(settings["device"]))
    dist.all_reduce(total)
    return int(total.item())


def format_record(record: dict[str, Any], total_steps: int) -> str:
    """One human line for a metrics record."""
    mfu = f" mfu {100 * record['mfu']:.1f}%" if record.get("mfu") is not None else ""
    bad = f" corrupt {record['corrupt_tiles']}" if record.get("corrupt_tiles") else ""
    eta = f" eta {format_duration(record['eta_s'])}" if record.get("eta_s") is not None else ""
    return (f"step {record['step']}/{total_steps} epoch {record['epoch']:.2f} loss {record['loss']:.4f} "
            f"lr {record['lr']:.3e} {record['images_per_s']:.1f} img/s data {record['data_wait_pct']:.0f}%"
            f"{mfu}{bad}{eta}")


def format_duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``4000`` → ``1h06m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class MetricsLog:
    """``RUN/metrics.jsonl``: one JSON object per logged step, appended and flushed as it comes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (logged by an invocation killed before its next checkpoint).

        Atomic (temp file + rename); call it from one process only. A line cut short by a kill is dropped.
        """
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
