"""``rs4m pretrain``: SelectiveMAE / MAE pretraining on a build's manifest, and ``rs4m pretrain export``.

The flags are made from the fields of ``pretrain.config.TrainConfig`` (as ``python -m pretrain``'s are). PyTorch is
imported only when a command runs, so ``rs4m`` works without the train extra until one is used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import click

from pretrain.config import TrainConfig  # pure Python: no torch at CLI start
from rs4m.cli.common import Rs4mGroup
from rs4m.errors import ConfigError, DependencyError


def require_torch() -> None:
    """Raise :class:`DependencyError` with the install line when PyTorch is missing."""
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise DependencyError("pretraining needs PyTorch and safetensors: pip install 'rs4m[train]'") from None


_TYPES = {"int": int, "float": float, "str": str}


def _option(f: dataclasses.Field) -> Callable:
    """The click option of one ``TrainConfig`` field (its help, choices and default from the field)."""
    flag = "--" + f.name.replace("_", "-")
    help_text = f.metadata.get("help", "")
    if f.type == "bool":
        return click.option(flag, is_flag=True, default=f.default, help=help_text)
    if f.name in ("manifest", "run"):  # required by the command, not by --help or a subcommand
        return click.option(flag, type=click.Path(path_type=Path, dir_okay=f.name == "run",
                                                  file_okay=f.name == "manifest"), help=help_text)
    choices = f.metadata.get("choices")
    kind = click.Choice(list(choices)) if choices else _TYPES[f.type.replace(" | None", "")]
    return click.option(flag, type=kind, default=f.default, show_default=f.default is not None, help=help_text)


def config_options(func: Callable) -> Callable:
    """Every ``TrainConfig`` field as a click option, in the field order."""
    for f in reversed(dataclasses.fields(TrainConfig)):
        func = _option(f)(func)
    return func


@click.group(name="pretrain", cls=Rs4mGroup, invoke_without_command=True)
@config_options
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
    from pretrain.train import train

    values = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}
    try:
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

    meta = export_encoder(checkpoint, out)  # a file that is not a checkpoint: one-line OutputError
    click.echo(f"wrote {out} ({meta['model']} encoder of a {meta['method']} run, step {meta['step']})", err=True)
