"""``rs4m pretrain``: SelectiveMAE / MAE pretraining on a build's manifest, and ``rs4m pretrain export``.

The flags equal the fields of ``pretrain.engine.TrainConfig`` (and ``python -m pretrain``'s flags). PyTorch is
imported only when a command runs, so ``rs4m`` works without the train extra until one is used.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import click

from rs4m.cli.common import TRAIN_INSTALL, Rs4mGroup, checkpoint_errors
from rs4m.errors import ConfigError, DependencyError


def require_torch() -> None:
    """Raise :class:`DependencyError` with the install line when PyTorch is missing."""
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise DependencyError(f"pretraining needs PyTorch and safetensors: {TRAIN_INSTALL}") from None


@click.group(name="pretrain", cls=Rs4mGroup, invoke_without_command=True)
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False),
              help="manifest.parquet of an rs4m build (its shards/ folder beside it).")
@click.option("--run", type=click.Path(path_type=Path, file_okay=False),
              help="Run folder: config.json, metrics.jsonl, checkpoint.pt, encoder.safetensors.")
@click.option("--method", type=click.Choice(["selectivemae", "mae"]), default="selectivemae", show_default=True)
@click.option("--model", type=click.Choice(["vit_tiny", "vit_small", "vit_base", "vit_large"]), default="vit_base",
              show_default=True)
@click.option("--steps", type=click.IntRange(1), help="The run's total optimiser steps (or give --epochs).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Run length in passes over the tiles.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Global batch of one optimiser step (all GPUs, all accumulation micro-batches).")
@click.option("--accum-steps", type=click.IntRange(1), default=1, show_default=True,
              help="Gradient accumulation micro-batches per step.")
@click.option("--workers", type=click.IntRange(0), default=4, show_default=True, help="DataLoader workers per process.")
@click.option("--where", help="Filter the manifest (rs4m's safe filter language), e.g. \"source == 'dota' and richness > 40\".")
@click.option("--resume", is_flag=True, help="Continue the run from RUN/checkpoint.pt (same flags).")
@click.option("--log-every", type=click.IntRange(1), default=20, show_default=True)
@click.option("--ckpt-every", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--blr", type=float, default=1.5e-4, show_default=True, help="Base lr, scaled by batch / 256.")
@click.option("--warmup-steps", type=click.IntRange(0), help="Linear warm-up steps [default: 5 % of the steps].")
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@click.option("--min-scale", type=float, default=0.2, show_default=True, help="RandomResizedCrop's smallest area.")
@click.option("--compile", is_flag=True, help="torch.compile the model.")
@click.option("--stop-at", type=click.IntRange(1), help="End this invocation after this step (resume later).")
@click.pass_context
def pretrain(ctx: click.Context, **flags: Any) -> None:
    """Pretrain SelectiveMAE (or the MAE baseline) on a build's tiles.

    \b
      rs4m pretrain --manifest OUT/manifest.parquet --run RUN --model vit_small --steps 20000
      rs4m pretrain --manifest OUT/manifest.parquet --run RUN --steps 20000 --resume
      rs4m pretrain export RUN/checkpoint.pt encoder.safetensors
    """
    if ctx.invoked_subcommand is not None:
        return
    if flags["manifest"] is None or flags["run"] is None:
        raise ConfigError("rs4m pretrain needs --manifest and --run (see rs4m pretrain --help)")
    require_torch()
    from pretrain.engine import TrainConfig
    from pretrain.train import train

    values = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}
    resumed = Path(flags["run"]) / "checkpoint.pt" if flags["resume"] else None
    try:
        with checkpoint_errors(resumed):
            summary = train(TrainConfig(**values))
    except ValueError as err:  # a bad --where, a manifest with no tiles
        raise ConfigError(str(err)) from None
    if summary.get("last") is not None:
        click.echo(json.dumps({"finished": summary["finished"], **summary["last"]}), err=True)


@pretrain.command()
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def export(checkpoint: Path, out: Path) -> None:
    """Write the encoder of CHECKPOINT to OUT (.safetensors, timm ViT key names)."""
    require_torch()
    from pretrain.checkpoint import export_encoder

    try:
        meta = export_encoder(checkpoint, out)
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as err:  # torch.load refuses non-checkpoints
        raise ConfigError(f"{checkpoint} is not a training checkpoint of rs4m pretrain ({err})") from None
    click.echo(f"wrote {out} ({meta['model']} encoder of a {meta['method']} run, step {meta['step']})", err=True)
