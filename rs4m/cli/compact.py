"""``rs4m compact OUT``."""

from __future__ import annotations

from pathlib import Path

import click

from rs4m.cli.common import echo_json


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def compact(out: Path, as_json: bool) -> None:
    """Rewrite the shards of OUT to hold only the manifest's tiles (duplicates and leaked tiles leave)."""
    from rs4m.compact import CompactReport
    from rs4m.plan import plan_from_record
    from rs4m.record import BuildRecord
    from rs4m.stages.build import run_build

    record = BuildRecord.load(out, missing_ok=True)
    counts = run_build(out, plan_from_record(record), ("compact",), record=record, command="compact").counts
    report = CompactReport(**counts["compact"])
    if as_json:
        echo_json(report.to_dict())
        return
    if report.resumed:
        click.echo("finished the renames of an interrupted compaction", err=True)
    click.echo(f"compact: {report.shards_rewritten} of {report.shards} shards rewritten, "
               f"{report.tiles_dropped} tiles dropped, {report.tiles_kept} kept, "
               f"{report.bytes_before} → {report.bytes_after} bytes", err=True)
