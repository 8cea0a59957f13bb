"""``rs4m build``, ``rs4m scan`` and ``rs4m tile``: parse the flags, make the plan, run it, print."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rs4m.cli.common import Bars, echo_build, echo_plan
from rs4m.config import FORMATS, MODES
from rs4m.engines import ENGINES

TILE_FLAGS = ("tile_size", "stride", "mode", "format", "out_size", "crop_min", "crop_max", "quality", "max_pixels",
              "max_scene_bytes")


def source_options(fn: Callable) -> Callable:
    """The options that say what to read and how to tile it (shared by ``build`` and ``scan``)."""
    options = [
        click.option("--recipe", type=click.Path(path_type=Path, dir_okay=False), help="Recipe TOML."),
        click.option("--root", type=click.Path(path_type=Path, file_okay=False),
                     help="Folder holding one folder per recipe source (default: current folder)."),
        click.option("--source", "sources", multiple=True, metavar="ADAPTER=PATH[,grey=refuse|replicate]",
                     help="A source folder read by an adapter (see `rs4m sources`); repeatable. grey: what a "
                          "single grey band becomes (default: the adapter's)."),
        click.option("--strict", is_flag=True, help="A recipe source that is missing is an error."),
        click.option("--tile-size", type=click.IntRange(1), help="Tile edge in pixels (default 512)."),
        click.option("--stride", type=click.IntRange(1), help="Grid stride in pixels (default: tile size)."),
        click.option("--mode", type=click.Choice(MODES), help="grid tiles or random multi-scale crops."),
        click.option("--crop-min", type=click.IntRange(1), help="Smallest random crop (random mode)."),
        click.option("--crop-max", type=click.IntRange(1), help="Largest random crop (random mode)."),
        click.option("--out-size", type=click.IntRange(1), help="Resize every tile to this edge in pixels."),
        click.option("--format", type=click.Choice(FORMATS), help="Stored tile format (default jpg)."),
        click.option("--quality", type=click.IntRange(1, 100), help="JPEG quality (default 95)."),
        click.option("--max-pixels", type=click.IntRange(1),
                     help="Refuse whole-decode images (PNG, JPEG) larger than this (default 400e6)."),
        click.option("--max-scene-bytes", type=click.IntRange(1),
                     help="Refuse a scene whose decode would need more memory than this (default 4 GiB)."),
        click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores)."),
        click.option("--engine", type=click.Choice(list(ENGINES)), default="local", show_default=True),
        click.option("--ray-address", help="Ray cluster address (with --engine ray; default: start a local one)."),
        click.option("--force", is_flag=True, help="Redo everything from scratch."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _plan(recipe: Path | None, root: Path | None, sources: tuple[str, ...], strict: bool, workers: int | None,
          engine: str, ray_address: str | None, tile_flags: dict[str, Any], keep_dropped: bool = False,
          dedup_flags: dict[str, Any] | None = None):
    from rs4m.plan import EngineSettings, plan_from_cli

    plan = plan_from_cli(recipe, root, sources, strict, tile_flags, EngineSettings(engine, workers, ray_address),
                         keep_dropped, dedup_flags)
    echo_plan(plan)
    return plan


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@source_options
@click.option("--keep-dropped", is_flag=True,
              help="Leave duplicates and leaked tiles in the shards (default: the shards end holding exactly the "
                   "manifest's tiles; recipe: [output] keep_dropped).")
@click.option("--overlap/--no-overlap", default=None,
              help="Find partial overlaps without georeference (crops at any offset, scale 0.5-2x, flips and "
                   "rotations): the tile stage stores local features of every tile, dedup groups overlapping "
                   "tiles of different scenes. Off by default (it costs more than the rest of the tile stage); "
                   "recipe: [dedup] overlap.")
@click.option("--dihedral/--no-dihedral", default=None,
              help="Count flipped and rotated copies as near duplicates (on by default; recipe: [dedup] dihedral).")
def build(out, recipe, root, sources, strict, workers, engine, ray_address, force, quiet, keep_dropped, overlap,
          dihedral, **tile_flags):
    """Build a corpus in OUT: scan, tile, dedup, catalog, then compact the shards to the manifest's tiles.
    Re-run to resume a killed build, or to grow it with new sources, new files or new settings."""
    from rs4m.stages.build import run_build

    plan = _plan(recipe, root, sources, strict, workers, engine, ray_address, tile_flags, keep_dropped,
                 {"overlap": overlap, "dihedral": dihedral})
    with Bars(quiet) as bars:
        report = run_build(out, plan, force=force, progress=bars)
    echo_build(report)


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@source_options
def scan(out, recipe, root, sources, strict, workers, engine, ray_address, force, quiet, **tile_flags):
    """Scan the sources into OUT/scenes.parquet (one row per source file)."""
    from rs4m.stages.build import run_build

    plan = _plan(recipe, root, sources, strict, workers, engine, ray_address, tile_flags)
    with Bars(quiet) as bars:
        report = run_build(out, plan, ("scan",), force=force, progress=bars, command="scan")
    for line in report.notes:
        click.echo(f"rs4m: note: {line}", err=True)
    counts = report.counts.get("scan")
    if counts:
        click.echo(f"scanned {counts['scenes']} scenes in {counts['units']} units, errors {counts['errors']}",
                   err=True)


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores).")
@click.option("--engine", type=click.Choice(list(ENGINES)), default="local", show_default=True)
@click.option("--ray-address", help="Ray cluster address (with --engine ray).")
@click.option("--force", is_flag=True, help="Redo every unit, not only the unfinished ones.")
def tile(out: Path, workers: int | None, engine: str, ray_address: str | None, force: bool) -> None:
    """Tile the scanned scenes of OUT into shards and tiles parts (resumes unfinished units)."""
    from rs4m.cli.common import report_failures, summary_line
    from rs4m.plan import EngineSettings, plan_from_record
    from rs4m.record import BuildRecord
    from rs4m.stages.build import run_build

    record = BuildRecord.load(out)
    plan = plan_from_record(record, engine=EngineSettings(engine, workers, ray_address))
    counts = run_build(out, plan, ("tile",), retile=force, record=record, command="tile").counts["tile"]
    report_failures(counts["units_failed"])
    click.echo(summary_line({"tile": counts}, counts["seconds"]), err=True)
    if counts["units_failed"]:
        raise SystemExit(1)
