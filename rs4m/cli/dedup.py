"""``rs4m dedup OUT`` and ``rs4m leakage OUT --against NAME=PATH``."""

from __future__ import annotations

from pathlib import Path

import click

from rs4m.cli.common import echo_json
from rs4m.errors import ConfigError


def _plan(out: Path, **dedup_flags):
    """The build's plan from ``OUT/build.json`` (where there is one) with the dedup flags given, and the record."""
    from rs4m.plan import plan_from_record
    from rs4m.record import BuildRecord

    record = BuildRecord.load(out, missing_ok=True)
    return plan_from_record(record, dedup_flags), record


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--radius", "radius_bits", type=click.IntRange(0, 16), default=None,
              help="pHash radius in bits (default: the recipe's, else 5).")
@click.option("--dhash-radius", "dhash_radius_bits", type=click.IntRange(0, 16), default=None,
              help="dHash radius in bits (default: the recipe's, else 5).")
@click.option("--geo/--no-geo", default=None, help="Group overlapping footprints of different scenes.")
@click.option("--dihedral/--no-dihedral", default=None, help="Count flipped and rotated copies as duplicates.")
@click.option("--overlap/--no-overlap", default=None,
              help="Group tiles of different scenes that overlap without georeference (needs the features a "
                   "build with --overlap stores).")
@click.option("--overlap-frac", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Shared ground over the smaller tile's area that makes an overlap duplicate (default: the "
                   "recipe's, else 0.5).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def dedup(out: Path, radius_bits: int | None, dhash_radius_bits: int | None, geo: bool | None,
          dihedral: bool | None, overlap: bool | None, overlap_frac: float | None, as_json: bool) -> None:
    """Find exact, near-duplicate, overlapping and leaked tiles in OUT; write OUT/dedup.parquet."""
    from rs4m.stages.build import run_build
    from rs4m.stages.dedup import DedupReport

    plan, record = _plan(out, radius_bits=radius_bits, dhash_radius_bits=dhash_radius_bits, geo=geo,
                         dihedral=dihedral, overlap=overlap, overlap_frac=overlap_frac)
    report = DedupReport(**run_build(out, plan, ("dedup",), record=record, command="dedup").counts["dedup"])
    if as_json:
        echo_json(report.to_dict())
        return
    by = ", ".join(f"{k} {v}" for k, v in report.tiles_by_reason.items()) or "none"
    click.echo(f"dedup: {report.tiles} tiles, {report.groups} groups, {report.duplicates} duplicates, "
               f"{report.leaked} leaked ({by}) in {report.seconds:.1f} s", err=True)


def _parse_against(values: tuple[str, ...]) -> dict[str, Path]:
    from rs4m.stages.benchmark_images import check_name

    benchmarks: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--against {value!r}: expected NAME=PATH, e.g. --against dior=/data/DIOR (the "
                              f"adapter's test split) or --against mybench=/data/mybench/images (a folder)")
        if name in benchmarks:
            raise ConfigError(f"--against: benchmark name {name!r} given twice")
        benchmarks[check_name(name)] = Path(folder)
    return benchmarks


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--against", "against", multiple=True, required=True, metavar="NAME=PATH",
              help="A benchmark (repeatable). NAME a registered adapter (`rs4m sources`, e.g. dior=/data/DIOR): "
                   "PATH is that dataset as released and only the images of its test splits are taken (all its "
                   "images where it has none), never labels or masks; any other NAME: every image file under "
                   "the folder PATH. Files reached through symlinks out of PATH are skipped.")
@click.option("--exclude", is_flag=True, help="Make the next `rs4m dedup` drop the leaked tiles.")
@click.option("--overlap/--no-overlap", default=None,
              help="Also report tiles that show part of a benchmark image at any offset, scale, flip or rotation "
                   "(needs the features a build with --overlap stores; default: the build's setting).")
@click.option("--leak-overlap", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Share of a benchmark image's area a tile must show to leak it (default: the recipe's, else 0.2).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def leakage(out: Path, against: tuple[str, ...], exclude: bool, overlap: bool | None, leak_overlap: float | None,
            as_json: bool) -> None:
    """Find tiles of OUT that copy benchmark images (whole, flipped/rotated, cropped, or with --overlap any part
    at any scale); write OUT/leakage.parquet."""
    from rs4m.stages.build import writing
    from rs4m.stages.leakage import run_leakage

    benchmarks = _parse_against(against)
    config = _plan(out, overlap=overlap, leak_overlap=leak_overlap)[0].dedup
    with writing(out, "leakage"):
        report = run_leakage(out, benchmarks, exclude=exclude, config=config)
    if as_json:
        echo_json(report.to_dict())
        return
    for p in report.problems:
        click.echo(f"PROBLEM {p['benchmark']}/{p['path']}: {p['reason']}", err=True)
    for name, stats in report.by_benchmark.items():
        click.echo(f"leakage {name}: {stats['images']} images, {stats['leaked_tiles']} tiles leak "
                   f"{stats['by_kind'] or ''}", err=True)
    if exclude and report.leaked_tiles:
        click.echo(f"run `rs4m dedup {out}` then `rs4m catalog {out}` to drop the leaked tiles", err=True)
