"""``rs4m verify OUT``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rs4m.cli.common import echo_json


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--no-decode", is_flag=True, help="Skip hashing and decoding every tile (the slow part).")
def verify(out: Path, as_json: bool, no_decode: bool) -> None:
    """Check every shard and row of the build in OUT; exit 0 iff everything checks out."""
    from rs4m.verify import verify_output

    report = verify_output(out, decode_tiles=not no_decode)
    if as_json:
        echo_json(report.to_dict())
    else:
        for p in report.problems:
            where = " ".join(f"{k}={p[k]}" for k in ("shard", "tile_id") if p[k])
            click.echo(f"PROBLEM {where}: {p['problem']}")
        state = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
        click.echo(f"verify {state}: {report.shards_checked} shards, {report.rows_checked} rows checked")
    sys.exit(0 if report.ok else 1)
