"""``rs4m stats OUT``."""

from __future__ import annotations

from pathlib import Path

import click

from rs4m.cli.common import echo_json


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--by", type=click.Choice(["source", "licence", "format"]), default="source", show_default=True,
              help="Break the counts down by this column.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also draw the counts and distributions into this PNG.")
def stats(out: Path, as_json: bool, by: str, plot_path: Path | None) -> None:
    """Counts of the build in OUT: scenes, tiles kept / filtered / duplicate, errors, shards, distributions."""
    from rs4m.report import compute_stats, format_stats, plot_stats

    result = compute_stats(out, by=by)
    if plot_path is not None:
        plot_stats(result, plot_path)
    if as_json:
        echo_json(result)
    else:
        click.echo(format_stats(result))  # the result: stdout
    if plot_path is not None:
        click.echo(f"plot: {plot_path}", err=True)
