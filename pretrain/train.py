"""Pretraining entry point: distributed setup, data, model, optimiser, resume, checkpoints and export.

Single process::

    python -m pretrain --manifest OUT/manifest.parquet --run RUN --model vit_small --steps 10000

Many processes (one per GPU; on CPU the gloo backend)::

    torchrun --nproc-per-node 8 -m pretrain --manifest ... --run-dir RUN --batch-size 2048 --steps 100000

(``--run-dir`` is ``--run``'s other name; torchrun mistakes ``--run`` for its own ``--run-path``.)

A run folder holds ``config.json`` (every resolved setting), ``metrics.jsonl`` (written by rank 0, each step
once), ``checkpoint.pt`` (the latest, replaced atomically every ``--ckpt-every`` steps and at the end, never by
a diverged model), ``checkpoint.prev.pt`` (the one before) and ``encoder.safetensors`` + ``encoder.json``
(the final encoder, timm keys, with what it expects as input). ``--resume`` continues from ``checkpoint.pt``:
with the same settings it finishes the same run, and on CPU its per-step losses equal the uninterrupted run's
bit for bit.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pretrain import checkpoint as ckpt
from pretrain.config import LOW_LR
from pretrain.data import EpochSampler, ResumableSampler, TileDataset
from pretrain.engine import (
    Loop,
    MetricsLog,
    NonFiniteLoss,
    TrainConfig,
    format_record,
    resolve,
    resume_differences,
    run_steps,
)
from pretrain.flops import flops_per_image
from pretrain.infobatch import InfoBatch, InfoBatchStream, check_state
from pretrain.model import MaskedViT, create_model
from rs4m.errors import ConfigError
from rs4m.manifest import atomic_write_json


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size, local rank (GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def setup_distributed(device_type: str) -> Dist:
    """Join the torchrun process group if launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def pick_device(choice: str, local_rank: int) -> str:
    """``auto`` → CUDA where torch sees a GPU, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    if choice == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{local_rank}"


def build_loader(dataset: TileDataset, settings: dict[str, Any], dist_info: Dist, start: int) -> DataLoader:
    """An endless DataLoader of micro-batches for this rank, starting at global sample position ``start``."""
    sampler = ResumableSampler(len(dataset), settings["micro_batch"], settings["seed"], dist_info.rank,
                               dist_info.world_size, start)
    workers = settings["workers"]
    return DataLoader(dataset, batch_size=settings["micro_batch"], sampler=sampler, num_workers=workers,
                      pin_memory=settings["device"].startswith("cuda"), prefetch_factor=4 if workers else None)


def build_infobatch_stream(dataset: TileDataset, settings: dict[str, Any], dist_info: Dist) -> InfoBatchStream:
    """The batches of an ``--infobatch`` run for this rank: one pass of a DataLoader per drawn epoch (workers
    kept between passes), not started yet (``InfoBatchStream.start``)."""
    sampler = EpochSampler(settings["micro_batch"], dist_info.rank, dist_info.world_size, settings["accum_steps"])
    workers = settings["workers"]
    loader = DataLoader(dataset, batch_size=settings["micro_batch"], sampler=sampler, num_workers=workers,
                        pin_memory=settings["device"].startswith("cuda"), prefetch_factor=4 if workers else None,
                        persistent_workers=workers > 0)
    pruner = InfoBatch(len(dataset), settings["infobatch_epochs"], settings["infobatch_ratio"],
                       settings["infobatch_delta"], settings["seed"])
    return InfoBatchStream(loader, sampler, pruner, torch.device(settings["device"]), settings["batch_size"],
                           dist_info.world_size)


def build_model_and_optimizer(settings: dict[str, Any]) -> tuple[MaskedViT, torch.optim.Optimizer]:
    """The model (same initial weights on every rank) and AdamW with the authors' betas and decay groups."""
    torch.manual_seed(settings["seed"])
    model = create_model(settings["method"], settings["model"], **settings["model_options"]).to(settings["device"])
    groups = model.param_groups(settings["weight_decay"])
    fused = settings["device"].startswith("cuda")
    optimizer = torch.optim.AdamW(groups, lr=settings["lr"], betas=(0.9, 0.95), fused=fused)
    return model, optimizer


def check_resumable(saved: dict[str, Any], settings: dict[str, Any]) -> None:
    """A resumed run must be the same run: every setting but how it runs (``RESUME_MAY_CHANGE``) equal."""
    diff = resume_differences(saved, settings)
    if diff:
        raise ConfigError("--resume with different settings than the checkpoint's run (" + "; ".join(diff)
                          + "); use the same flags, or start a new --run")


def restore(path: Path, settings: dict[str, Any], model, optimizer) -> tuple[int, int, dict[str, Any] | None]:
    """Load checkpoint ``path`` into model and optimiser; return (finished steps, corrupt tiles so far, the
    InfoBatch state or None)."""
    state = ckpt.load_checkpoint(path, map_location="cpu")
    check_resumable(state.get("config", {}), settings)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    ckpt.set_rng_state(state["rng"])
    return state["step"], state.get("corrupt_tiles", 0), state.get("infobatch")


def make_saver(run: Path, settings: dict[str, Any], model, optimizer):
    """A callback writing ``run/checkpoint.pt`` after step ``step`` (rank 0 only); the one it replaces becomes
    ``run/checkpoint.prev.pt``."""
    def save(step: int, corrupt_tiles: int, infobatch: dict[str, torch.Tensor] | None = None) -> None:
        samples = step * settings["batch_size"]
        epoch = samples // settings["num_samples"] if infobatch is None else int(infobatch["epoch"])
        extra = {} if infobatch is None else {"infobatch": infobatch}
        ckpt.save_checkpoint(run / ckpt.CHECKPOINT_NAME, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "samples": samples, "epoch": epoch, "rng": ckpt.rng_state(),
            "config": settings, "num_samples": settings["num_samples"], "corrupt_tiles": corrupt_tiles, **extra,
        }, previous=run / ckpt.PREVIOUS_NAME)
    return save


def _flop_options(options: dict[str, Any]) -> dict[str, Any]:
    """The model options that change the FLOP count (``pretrain.flops`` takes shapes and ratios)."""
    return {k: v for k, v in options.items() if k not in ("score", "target")}


def start_line(settings: dict[str, Any], model: MaskedViT, start: int) -> str:
    """The one line printed before the first step (the ETA follows in each log line once steps are timed)."""
    params = sum(p.numel() for p in model.parameters())
    encoder = sum(v.numel() for k, v in model.encoder_state_dict().items() if k != "pos_embed")
    where = f" (--where {settings['where']!r})" if settings["where"] else ""
    line = (f"pretrain: {settings['method']} {settings['model']} ({params / 1e6:.1f} M parameters, encoder "
            f"{encoder / 1e6:.1f} M) on {settings['device']} × {settings['world_size']}; "
            f"{settings['num_samples']} tiles{where}; steps {start + 1}–{settings['total_steps']}, batch "
            f"{settings['batch_size']} (micro-batch {settings['micro_batch']}), peak lr {settings['lr']:.3g}, "
            f"warm-up {settings['warmup_steps']}; ETA after the first logged steps")
    if settings["infobatch"]:
        line += (f"\nInfoBatch: {settings['infobatch_epochs']:g} epochs, prune ratio {settings['infobatch_ratio']:g} "
                 f"until epoch {settings['infobatch_delta'] * settings['infobatch_epochs']:g}; pruned epochs end the "
                 f"run before step {settings['total_steps']}")
    if settings["lr"] < LOW_LR:
        line += (f"\nwarning: peak lr {settings['lr']:.2g} is below {LOW_LR:g}: a short run will barely move; "
                 "give --lr (e.g. 1e-3 for a small batch)")
    return line


def prepare_run(cfg: TrainConfig, run: Path, rank: int) -> None:
    """Refuse to overwrite a run by accident: a run folder with a checkpoint needs ``--resume``."""
    if ckpt.latest_checkpoint(run) is not None and not cfg.resume:
        raise ConfigError(f"{run} already holds a checkpoint: pass --resume to continue it, or choose another --run")
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) the pretraining ``cfg`` describes; returns a summary (final step, last metrics)."""
    cfg.check()
    run = Path(cfg.run)
    dist_info = setup_distributed("cuda" if pick_device(cfg.device, 0) != "cpu" else "cpu")
    try:
        return _train(cfg, run, dist_info)
    finally:
        if dist_info.world_size > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, run: Path, dist_info: Dist) -> dict[str, Any]:
    prepare_run(cfg, run, dist_info.rank)
    dataset = TileDataset(Path(cfg.manifest), cfg.where, seed=cfg.seed, size=cfg.img_size, scale=(cfg.min_scale, 1.0))
    settings = resolve(cfg, len(dataset), dist_info.world_size, pick_device(cfg.device, dist_info.local_rank))
    model, optimizer = build_model_and_optimizer(settings)
    metrics = MetricsLog(run / "metrics.jsonl")
    start, corrupt, pruning_state = 0, 0, None
    saved = ckpt.latest_checkpoint(run) if cfg.resume else None
    if saved is not None:
        start, corrupt, pruning_state = restore(saved, settings, model, optimizer)
        if settings["infobatch"]:
            check_state(pruning_state, len(dataset))  # refused before anything of the run is rewritten
    if dist_info.rank == 0:
        metrics.truncate_after(start)  # rows an earlier invocation logged after its last checkpoint
        atomic_write_json(run / "config.json", settings)
    if dist_info.world_size > 1:
        dist.barrier()
    wrapped: torch.nn.Module = model
    if dist_info.world_size > 1:
        ids = [dist_info.local_rank] if settings["device"].startswith("cuda") else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    if settings["compile"]:
        # compiling a Module returns an OptimizedModule, itself a Module
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]

    def on_log(record: dict[str, Any]) -> None:
        metrics.append(record)
        print(format_record(record, settings["total_steps"]), file=sys.stderr, flush=True)

    if dist_info.rank == 0:
        print(start_line(settings, model, start), file=sys.stderr, flush=True)
    flops = flops_per_image(cfg.method, cfg.model, **_flop_options(settings["model_options"])).train
    saver = make_saver(run, settings, model, optimizer)
    stream = build_infobatch_stream(dataset, settings, dist_info) if settings["infobatch"] else None

    def on_checkpoint(step: int, bad: int) -> None:
        pruning = stream.state_dict() if stream is not None else None  # a collective: on every rank
        if dist_info.rank == 0:
            saver(step, bad, pruning)

    if stream is not None:
        stream.start(pruning_state)
    batches = stream if stream is not None else iter(build_loader(dataset, settings, dist_info, start * cfg.batch_size))
    loop = Loop(wrapped, optimizer, batches, settings, dist_info.rank, flops, on_log, on_checkpoint, stream)
    try:
        corrupt = run_steps(loop, start, corrupt)
    except NonFiniteLoss as err:
        last = ckpt.latest_checkpoint(run)
        kept = f"; {last} holds step {ckpt.load_checkpoint(last)['step']}" if last and dist_info.rank == 0 else ""
        raise NonFiniteLoss(err.step, kept) from None
    if stream is not None:
        finished = stream.finished
    else:
        finished = settings["total_steps"] <= max(start, settings["stop_at"] or settings["total_steps"])
    if finished and dist_info.rank == 0:
        ckpt.export_encoder(run / ckpt.CHECKPOINT_NAME, run / "encoder.safetensors")
    if corrupt and dist_info.rank == 0:
        print(f"{corrupt} corrupt tile(s) were skipped; run `rs4m verify` on the build", file=sys.stderr)
    return {"run": str(run), "finished": finished, "corrupt_tiles": corrupt,
            "last": next(reversed(metrics.read()), None) if dist_info.rank == 0 else None}
