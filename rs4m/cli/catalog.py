"""``rs4m catalog OUT``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))
def catalog(out: Path) -> None:
    """Write OUT/manifest.parquet: the kept tiles (not filtered, not duplicate, not leaked)."""
    from rs4m.stages.build import update_record, writing
    from rs4m.stages.catalog import run_catalog

    with writing(out, "catalog"):
        counts = run_catalog(out)
        update_record(out, stages={"catalog": counts})
    click.echo(f"manifest: {counts['tiles_kept']} of {counts['tiles_total']} tiles kept "
               f"(filtered {counts['filtered']}, duplicates {counts['duplicates']}, leaked {counts['leaked']})",
               err=True)
