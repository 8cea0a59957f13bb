"""``rs4m catalog OUT``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))
def catalog(out: Path) -> None:
    """Write OUT/manifest.parquet: the kept tiles (not filtered, not duplicate, not leaked)."""
    from rs4m.plan import plan_from_record
    from rs4m.record import BuildRecord
    from rs4m.stages.build import run_build

    record = BuildRecord.load(out, missing_ok=True)
    counts = run_build(out, plan_from_record(record), ("catalog",), record=record, command="catalog").counts["catalog"]
    click.echo(f"manifest: {counts['tiles_kept']} of {counts['tiles_total']} tiles kept "
               f"(filtered {counts['filtered']}, duplicates {counts['duplicates']}, leaked {counts['leaked']})",
               err=True)
