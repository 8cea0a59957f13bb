"""``rs4m build``, ``rs4m scan`` and ``rs4m tile``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from rs4m.config import FORMATS, MODES, Recipe, load_recipe
from rs4m.errors import ConfigError
from rs4m.layout import OutputLayout

TILE_FLAGS = ("tile_size", "stride", "mode", "format", "out_size", "crop_min", "crop_max", "quality", "max_pixels")


def source_options(fn):
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
        click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores)."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True),
        click.option("--ray-address", help="Ray cluster address (with --engine ray; default: start a local one)."),
        click.option("--force", is_flag=True, help="Redo everything from scratch."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def resolve_inputs(recipe_path, root, sources, strict, tile_flags):
    """Recipe or --source flags → (recipe, inputs, warnings); errors before any work."""
    from rs4m.stages.sources import sources_from_flags, sources_from_recipe

    overrides = {k: v for k, v in tile_flags.items() if v is not None}
    if recipe_path and sources:
        raise ConfigError("give either --recipe or --source, not both")
    if recipe_path:
        recipe = load_recipe(recipe_path)
        inputs, warnings = sources_from_recipe(recipe, root, strict, overrides)
        return recipe, inputs, warnings
    if not sources:
        raise ConfigError("nothing to read: give --recipe RECIPE.toml or --source ADAPTER=PATH")
    from dataclasses import replace

    recipe = Recipe()
    recipe = replace(recipe, build=replace(recipe.build, **overrides))
    return recipe, sources_from_flags(list(sources), recipe.build), []


def prepare(out, recipe_path, root, sources, strict, tile_flags):
    """Resolve the inputs and check OUT against them (before anything is written); create OUT.

    Returns the plan to pass to :func:`rs4m.stages.build.start_record` once OUT's lock is held."""
    from rs4m.stages.build import check_out_folder, plan_record

    recipe, inputs, warnings = resolve_inputs(recipe_path, root, sources, strict, tile_flags)
    for line in warnings:
        click.echo(f"rs4m: warning: {line}", err=True)
    for inp in inputs:
        click.echo(f"source {inp.source}: {inp.root}", err=True)
    check_out_folder(out, [inp.root for inp in inputs])
    Path(out).mkdir(parents=True, exist_ok=True)
    return plan_record(inputs, recipe, recipe_path), inputs


def summary_line(counts: dict, seconds: float) -> str:
    tile = counts.get("tile", {})
    scenes = counts.get("scan", {}).get("scenes")
    errors = counts.get("errors", tile.get("errors", 0))
    parts = [f"scenes {scenes}" if scenes is not None else "scenes (scanned before)",
             f"tiles {tile.get('tiles', 0)}", f"filtered {tile.get('filtered', 0)}"]
    if "dedup" in counts:
        parts.append(f"duplicates {counts['dedup'].get('duplicates', 0)}")
    if "catalog" in counts:
        parts.append(f"manifest {counts['catalog'].get('tiles_kept', 0)}")
    rate = tile.get("tiles", 0) / seconds if seconds > 0 else 0.0
    parts += [f"errors {errors}", f"{seconds:.1f} s", f"{rate:.1f} tiles/s"]
    return "done: " + ", ".join(parts)


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@source_options
def build(out, recipe, root, sources, strict, workers, engine, ray_address, force, quiet, **tile_flags):
    """Build a corpus in OUT: scan, tile, dedup, catalog. Re-run to resume a killed build."""
    from rs4m.stages.build import start_record, writing

    started = time.perf_counter()
    plan, inputs = prepare(out, recipe, root, sources, strict, tile_flags)
    with writing(out, "build", settle=not force):
        start_record(out, plan, force)
        ok = execute(out, inputs, engine, workers, ray_address, quiet, started)
    if not ok:
        raise SystemExit(1)


def execute(out: Path, inputs, engine: str, workers: int | None, ray_address: str | None, quiet: bool,
            started: float) -> bool:
    """Run every stage of a prepared build and print the summary; False if a unit failed after retries."""
    from rs4m.engines import get_engine
    from rs4m.stages.build import finish_record, run_post_stages, run_stages, unseen_lines

    eng = get_engine(engine, workers=workers, address=ray_address)
    try:
        counts = run_stages(out, inputs, eng, quiet=quiet)
        # every unit failed (a full disk, say): nothing to dedup or catalog, the failures say why
        if not counts["tile"]["units_failed"] or OutputLayout(Path(out)).tile_parts():
            counts.update(run_post_stages(out, quiet=quiet))
    finally:
        eng.close()
    finish_record(out, started)
    for line in unseen_lines(counts.get("unseen", {}), inputs, out):
        click.echo(f"rs4m: note: {line}", err=True)
    report_failures(counts)
    click.echo(summary_line(counts, time.perf_counter() - started), err=True)
    return not counts["tile"]["units_failed"]


def report_failures(counts: dict) -> None:
    """One line per distinct cause of the units that failed after retries (a full disk fails them all alike)."""
    by_error: dict[str, list[int]] = {}
    for fail in counts.get("tile", {}).get("units_failed", []):
        by_error.setdefault(fail["error"], []).append(fail["unit"])
    for error, units in by_error.items():
        which = f"unit {units[0]}" if len(units) == 1 else f"{len(units)} units ({', '.join(map(str, units[:5]))}" \
            f"{', ...' if len(units) > 5 else ''})"
        click.echo(f"rs4m: {which} failed after retries: {error} (re-run the same command to retry)", err=True)


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@source_options
def scan(out, recipe, root, sources, strict, workers, engine, ray_address, force, quiet, **tile_flags):
    """Scan the sources into OUT/scenes.parquet (one row per source file)."""
    from tqdm import tqdm

    from rs4m.engines import get_engine
    from rs4m.stages.build import start_record, update_record, writing
    from rs4m.stages.scan import run_scan

    plan, inputs = prepare(out, recipe, root, sources, strict, tile_flags)
    with writing(out, "scan", settle=not force):
        start_record(out, plan, force)
        eng = get_engine(engine, workers=workers, address=ray_address)
        try:
            with tqdm(desc="scan", unit="scene", disable=quiet, leave=False) as bar:
                counts = run_scan(out, inputs, eng, progress=bar.update)
        finally:
            eng.close()
        update_record(out, stages={"scan": counts})
    click.echo(f"scanned {counts['scenes']} scenes in {counts['units']} units, errors {counts['errors']}", err=True)


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--ray-address", help="Ray cluster address (with --engine ray).")
@click.option("--force", is_flag=True, help="Redo every unit, not only the unfinished ones.")
def tile(out, workers, engine, ray_address, force):
    """Tile the scanned scenes of OUT into shards and tiles parts (resumes unfinished units)."""
    from rs4m.engines import get_engine
    from rs4m.stages.build import filters_of, read_record, tile_configs, update_record, writing
    from rs4m.stages.tile import run_tile

    with writing(out, "tile"):
        record = read_record(out)
        eng = get_engine(engine, workers=workers, address=ray_address)
        try:
            counts = run_tile(out, tile_configs(record), filters_of(record), eng, force=force)
        finally:
            eng.close()
        update_record(out, stages={"tile": counts})
    report_failures({"tile": counts})
    click.echo(summary_line({"tile": counts}, counts["seconds"]), err=True)
    if counts["units_failed"]:
        raise SystemExit(1)
