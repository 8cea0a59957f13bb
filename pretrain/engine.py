"""The training loop's pieces: the run config, the learning-rate schedule, per-micro-batch seeding, the step
loop and its metrics. ``pretrain.train`` builds the objects and calls :func:`run_steps`.

Performance facts: a step does no host synchronisation; the loss is accumulated on the device and read
(``.item()``, a host sync, plus one all-reduce under DDP) only on logging steps. The corrupt-tile counts come
from the DataLoader on the host and cost nothing.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pretrain.model import METHODS, MODEL_CONFIGS
from rs4m.errors import ConfigError

PEAK_FLOPS_BF16 = 989e12  # H100 / H200 SXM dense bf16, for MFU
SELECTIVEMAE_LR_SCALE = 0.25 / 0.85  # the authors' (recon ratio r) / (mask ratio m)


@dataclass(frozen=True)
class TrainConfig:
    """One pretraining run. Field names equal the CLI flags (``batch_size`` ↔ ``--batch-size``).

    ``batch_size`` is the global batch of one optimiser step (all ranks, all accumulation micro-batches): the
    batch of the lr scaling rule. Each rank runs micro-batches of ``batch_size / (world × accum_steps)``.
    ``steps`` is the run's total; with ``epochs`` instead, steps = ceil(epochs · tiles / batch_size).
    ``warmup_steps`` defaults to 5 % of the steps. ``stop_at`` ends this invocation after that step (with a
    checkpoint) without changing the schedule: for time-limited jobs, resumed later with ``--resume``.
    """

    manifest: str
    run: str
    method: str = "selectivemae"
    model: str = "vit_base"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 256
    accum_steps: int = 1
    workers: int = 4
    where: str | None = None
    resume: bool = False
    log_every: int = 20
    ckpt_every: int = 1000
    seed: int = 0
    device: str = "auto"
    blr: float = 1.5e-4
    warmup_steps: int | None = None
    weight_decay: float = 0.05
    min_scale: float = 0.2
    compile: bool = False
    stop_at: int | None = None

    def check(self) -> None:
        """Raise ``ConfigError`` on values no run can use."""
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("give exactly one of --steps and --epochs")
        positive = {"batch_size": self.batch_size, "accum_steps": self.accum_steps, "log_every": self.log_every,
                    "ckpt_every": self.ckpt_every, "steps": self.steps or 1, "epochs": self.epochs or 1}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown --method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.model not in MODEL_CONFIGS:
            raise ConfigError(f"unknown --model {self.model!r}; valid: {', '.join(MODEL_CONFIGS)}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ConfigError(f"--min-scale must lie in (0, 1], got {self.min_scale}")


#: resolved-config keys that must match when a run is resumed (the rest may change between invocations)
RUN_IDENTITY = ("method", "model", "total_steps", "batch_size", "seed", "where", "blr", "lr", "warmup_steps",
                "weight_decay", "min_scale", "num_samples")


def resolve(cfg: TrainConfig, num_samples: int, world_size: int, device: str) -> dict[str, Any]:
    """The run's resolved settings: the config plus total steps, warm-up, lr, micro-batch and device."""
    cfg.check()
    if cfg.batch_size % (world_size * cfg.accum_steps):
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by world size {world_size} × "
                          f"--accum-steps {cfg.accum_steps}")
    total = cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * num_samples / cfg.batch_size)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(0.05 * total)
    scale = SELECTIVEMAE_LR_SCALE if cfg.method == "selectivemae" else 1.0
    return {**asdict(cfg), "total_steps": total, "warmup_steps": min(warmup, total),
            "lr": scale * cfg.blr * cfg.batch_size / 256, "world_size": world_size,
            "micro_batch": cfg.batch_size // (world_size * cfg.accum_steps), "device": device,
            "num_samples": num_samples}


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
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


@dataclass
class Meter:
    """What accumulates between two logging steps (the loss stays on the device)."""

    loss_sum: torch.Tensor
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


def _forward_backward(loop: Loop, step: int, meter: Meter) -> None:
    s = loop.settings
    device = torch.device(s["device"])
    world, accum = s["world_size"], s["accum_steps"]
    progress = step / s["total_steps"]
    if s["compile"]:
        progress = torch.tensor(progress, device=device)  # a Python float would recompile as it changes
    for micro in range(accum):
        t0 = time.perf_counter()
        imgs, _, corrupt = next(loop.batches)
        meter.data_wait_s += time.perf_counter() - t0
        meter.corrupt_tiles += int(corrupt.sum())
        imgs = imgs.to(device, non_blocking=True)
        torch.manual_seed(micro_seed(s["seed"], step, micro * world + loop.rank))
        sync = micro == accum - 1 or not hasattr(loop.model, "no_sync")
        with (nullcontext() if sync else loop.model.no_sync()):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, _, _ = loop.model(imgs, progress=progress)
            (loss / accum).backward()
        meter.loss_sum += loss.detach().float() / accum


def _log_record(loop: Loop, step: int, meter: Meter, corrupt_before: int) -> dict[str, Any]:
    s = loop.settings
    loss = meter.loss_sum.clone()
    corrupt = torch.tensor([float(meter.corrupt_tiles)], device=loss.device)
    if s["world_size"] > 1:
        dist.all_reduce(loss)
        dist.all_reduce(corrupt)
    loss_value = loss.item() / (meter.steps * s["world_size"])  # host sync: logging steps only
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value} at step {step}; lower --blr or check the data")
    elapsed = time.perf_counter() - meter.started
    images_per_s = meter.steps * s["batch_size"] / elapsed
    on_gpu = torch.device(s["device"]).type == "cuda"
    mfu = loop.flops_per_image * images_per_s / (PEAK_FLOPS_BF16 * s["world_size"]) if on_gpu else None
    return {"step": step, "epoch": step * s["batch_size"] / s["num_samples"], "loss": loss_value,
            "lr": loop.optimizer.param_groups[0]["lr"], "images_per_s": images_per_s,
            "data_wait_pct": 100.0 * meter.data_wait_s / elapsed, "mfu": mfu,
            "corrupt_tiles": corrupt_before + int(corrupt.item())}


def run_steps(loop: Loop, start_step: int, corrupt_tiles: int = 0) -> int:
    """Optimiser steps ``start_step`` … end (``total_steps`` or ``stop_at``); returns the corrupt-tile count.

    Logged and checkpointed step numbers count from 1 (step n = n finished optimiser steps).
    """
    s = loop.settings
    end = min(s["total_steps"], s["stop_at"] or s["total_steps"])
    meter = Meter(torch.zeros((), device=torch.device(s["device"])))
    meter.reset()
    for step in range(start_step, end):
        lr = lr_at(step, s["lr"], s["warmup_steps"], s["total_steps"])
        for group in loop.optimizer.param_groups:
            group["lr"] = lr
        _forward_backward(loop, step, meter)
        loop.optimizer.step()
        loop.optimizer.zero_grad(set_to_none=True)
        meter.steps += 1
        done = step + 1
        if done % s["log_every"] == 0 or done == end:
            record = _log_record(loop, done, meter, corrupt_tiles)
            corrupt_tiles = record["corrupt_tiles"]
            meter.corrupt_tiles = 0
            if loop.rank == 0:
                loop.on_log(record)
            meter.reset()
        if done % s["ckpt_every"] == 0 or done == end:
            corrupt_tiles += _sum_over_ranks(meter.corrupt_tiles, s)  # so the saved count is exact
            meter.corrupt_tiles = 0
            loop.on_checkpoint(done, corrupt_tiles)
    return corrupt_tiles


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
    return (f"step {record['step']}/{total_steps} epoch {record['epoch']:.2f} loss {record['loss']:.4f} "
            f"lr {record['lr']:.3e} {record['images_per_s']:.1f} img/s data {record['data_wait_pct']:.0f}%"
            f"{mfu}{bad}")


class MetricsLog:
    """``RUN/metrics.jsonl``: one JSON object per logged step, appended and flushed as it comes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (logged by an invocation killed before its next checkpoint)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A ``TrainConfig`` from a dict that may hold extra (resolved) keys."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})
