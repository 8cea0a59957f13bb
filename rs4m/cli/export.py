"""``rs4m export hf | litdata | mds OUT DEST`` and ``rs4m export wids OUT``."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from rs4m.cli.common import Rs4mGroup, echo_json

WHERE_HELP = "Export only the tiles this filter selects (the --where language, e.g. \"licence == 'CC-BY-4.0'\")."


@click.group(cls=Rs4mGroup)
def export() -> None:
    """Share a build: Hugging Face Parquet + dataset card, LitData, MDS, or a wids index of the shards.

    Every export streams (memory flat in corpus size), copies the tile bytes unchanged, resumes after a
    kill (rerun the same command) and checks every tile's sha256 against the manifest before it says done.
    """


def _run(fmt_name: str, out: Path, dest: Path, where: str | None, shard_size: str, as_json: bool,
         quiet: bool, **options) -> None:
    from tqdm import tqdm

    from rs4m.export import FORMATS
    from rs4m.export.runner import run_export

    fmt = importlib.import_module(FORMATS[fmt_name]).make_format(**options)
    size = shard_size or fmt.default_shard_size
    with tqdm(desc=f"export {fmt_name}", unit="tile", disable=quiet, leave=False) as bar:
        report = run_export(out, dest, fmt, where=where, shard_size=size, progress=bar.update)
    if as_json:
        echo_json(report.to_dict())
    click.echo(f"exported {report.rows} tiles ({report.bytes} bytes) to {report.files} files in {dest} "
               f"({report.files_written} written now); verified {report.verified_rows} tiles against the manifest",
               err=True)


def _common(func):
    func = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(func)
    func = click.option("--shard-size", default=None,
                        help="Tile bytes per output file (500MB, 2GB, 64MiB ...); default 500MB for hf and mds, "
                             "64MB for litdata (its writer holds a chunk in memory).")(func)
    func = click.option("--where", default=None, help=WHERE_HELP)(func)
    func = click.argument("dest", type=click.Path(path_type=Path, file_okay=False))(func)
    return click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))(func)


@export.command("hf")
@_common
@click.option("--title", default=None, help="Title of the dataset card (default: the build folder's name).")
def hf(out: Path, dest: Path, where, shard_size, as_json, quiet, title) -> None:
    """Parquet files with an `image` column datasets decodes, plus a README.md dataset card, in DEST."""
    _run("hf", out, dest, where, shard_size, as_json, quiet, title=title)


@export.command("litdata")
@_common
def litdata(out: Path, dest: Path, where, shard_size, as_json, quiet) -> None:
    """A LitData dataset in DEST (litdata.StreamingDataset(DEST)); needs `pip install litdata`."""
    _run("litdata", out, dest, where, shard_size, as_json, quiet)


@export.command("mds")
@_common
def mds(out: Path, dest: Path, where, shard_size, as_json, quiet) -> None:
    """A Mosaic Streaming (MDS) dataset in DEST (streaming.StreamingDataset(local=DEST))."""
    _run("mds", out, dest, where, shard_size, as_json, quiet)


@export.command("wids")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def wids(out: Path, as_json: bool) -> None:
    """Check every shard, then (re)write OUT/shards/wids-index.json for wids.ShardListDataset."""
    from rs4m.export.wids import export_wids

    summary = export_wids(out)
    if as_json:
        echo_json(summary)
    click.echo(f"wids index: {summary['index']} ({summary['shards']} shards, {summary['samples']} samples)", err=True)
    if not summary["complete"]:
        click.echo(f"note: the shards hold {summary['samples'] - summary['manifest_samples']} tiles the manifest "
                   f"dropped (duplicates, leaks); run `rs4m compact {out}` then this command again", err=True)
