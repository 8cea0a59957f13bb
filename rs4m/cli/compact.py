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
    from rs4m.compact import run_compact
    from rs4m.stages.build import update_record, writing

    # the journal is finished by run_compact itself, which reports it as resumed
    with writing(out, "compact", settle=False):
        report = run_compact(out)
        if report.shards_rewritten:
            update_record(out, stages={"compact": report.to_dict()})
    if as_json:
        echo_json(report.to_dict())
        return
    if report.resumed:
        click.echo("finished the renames of an interrupted compaction", err=True)
    click.echo(f"compact: {report.shards_rewritten} of {report.shards} shards rewritten, "
               f"{report.tiles_dropped} tiles dropped, {report.tiles_kept} kept, "
               f"{report.bytes_before} → {report.bytes_after} bytes", err=True)
