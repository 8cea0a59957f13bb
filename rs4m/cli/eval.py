"""``rs4m eval knn|linear``: frozen-encoder kNN and linear-probe top-1 on a labelled scene-classification set."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rs4m.cli.common import Rs4mGroup, checkpoint_errors, echo_json, require_torch


def _eval_options(func: Callable) -> Callable:
    options = [
        click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
                     help="Training checkpoint (.pt) or exported encoder (.safetensors)."),
        click.option("--random-init", metavar="MODEL",
                     help="Evaluate a randomly initialised encoder of this size instead (the baseline)."),
        click.option("--data", type=click.Path(path_type=Path, file_okay=False), required=True,
                     help="Labelled images, one folder per class (AID, NWPU-RESISC45, UC Merced layouts)."),
        click.option("--train-split", type=click.Path(path_type=Path, dir_okay=False),
                     help="File listing the training images (relative paths or file names), one a line."),
        click.option("--test-split", type=click.Path(path_type=Path, dir_okay=False),
                     help="File listing the test images."),
        click.option("--train-fraction", type=float, default=0.5, show_default=True,
                     help="Without split files: fraction of each class used for training."),
        click.option("--pool", type=click.Choice(["mean", "cls"]), default="mean", show_default=True,
                     help="Feature: mean of the patch tokens, or the CLS token."),
        click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True),
        click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
                     help="DataLoader worker processes decoding images."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seeds the train/test and validation splits (and --random-init)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


def _run(task: str, as_json: bool, device: str, **flags: Any) -> None:
    require_torch("evaluation")
    import torch

    from pretrain.eval import EvalConfig, run_eval

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with checkpoint_errors(flags.get("checkpoint")):
        result = run_eval(EvalConfig(task=task, device=device, **flags))
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{task} top-1 {100 * result['top1']:.2f} % on {result['test_images']} test images "
                   f"({result['classes']} classes, chance {100 * result['chance_top1']:.1f} %, "
                   f"{result['model']}, {result['pool']} pooling)", err=True)


@click.group(name="eval", cls=Rs4mGroup)
def eval_group() -> None:
    """Evaluate a pretrained encoder, frozen: kNN or linear-probe top-1 on a labelled set."""


@eval_group.command()
@_eval_options
@click.option("--k", type=click.IntRange(1), default=20, show_default=True, help="Neighbours that vote.")
@click.option("--temperature", type=float, default=0.07, show_default=True, help="Vote weight exp(sim / T).")
def knn(**flags: Any) -> None:
    """Weighted kNN (cosine, k nearest training features vote with exp(sim / T))."""
    _run("knn", **flags)


@eval_group.command()
@_eval_options
def linear(**flags: Any) -> None:
    """Logistic-regression probe; weight decay chosen on a validation split carved from train."""
    _run("linear", **flags)


# COMMAND_MODULES names a command by its module attribute, which must equal the command's name.
eval = eval_group  # noqa: A001
