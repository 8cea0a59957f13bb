"""``rs4m pretrain``: SelectiveMAE / MAE pretraining on a build's manifest, and ``rs4m pretrain export``.

The flags are made from the fields of ``pretrain.config.TrainConfig`` (as ``python -m pretrain``'s are). PyTorch is
imported only when a command runs, so ``rs4m`` works without the train extra until one is used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from rs4m.cli.common import Rs4mGroup, checkpoint_errors, require_torch
from rs4m.errors import ConfigError

_TYPES = {"int": int, "float": float, "str": str}


def _option(f: dataclasses.Field) -> click.Option:
    """The click option of one ``TrainConfig`` field (its help, choices and default from the field)."""
    flag = "--" + f.name.replace("_", "-")
    help_text = f.metadata.get("help", "")
    if f.type == "bool":  # an on/off pair: --infobatch / --no-infobatch
        return click.Option([f"{flag}/--no-{flag[2:]}"], default=f.default, help=help_text)
    if f.name in ("manifest", "run"):  # required by the command, not by --help or a subcommand
        return click.Option([flag], type=click.Path(path_type=Path, dir_okay=f.name == "run",
                                                    file_okay=f.name == "manifest"), help=help_text)
    choices = f.metadata.get("choices")
    kind = click.Choice(list(choices)) if choices else _TYPES[f.type.replace(" | None", "")]
    return click.Option([flag], type=kind, default=f.default, show_default=f.default is not None, help=help_text)


class PretrainGroup(Rs4mGroup):
    """``rs4m pretrain``: its options are made from ``pretrain.config.TrainConfig`` (every field a flag) when
    first needed, so that starting ``rs4m`` imports nothing of ``pretrain``."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not any(p.name == "manifest" for p in self.params):
            from pretrain.config import TrainConfig

            self.params[:0] = [_option(f) for f in dataclasses.fields(TrainConfig)]
        return super().get_params(ctx)


@click.group(name="pretrain", cls=PretrainGroup, invoke_without_command=True)
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
    require_torch("pretraining")
    from pretrain.config import TrainConfig
    from pretrain.train import train

    values: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}
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
    require_torch("pretraining")
    from pretrain.checkpoint import export_encoder

    meta = export_encoder(checkpoint, out)  # a file that is not a checkpoint: one-line OutputError
    click.echo(f"wrote {out} ({meta['model']} encoder of a {meta['method']} run, step {meta['step']})", err=True)
