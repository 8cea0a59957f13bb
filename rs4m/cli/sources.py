"""``rs4m sources``: the source adapters and their facts (licence, GSD, tiling, benchmark test splits)."""

from __future__ import annotations

import click

from rs4m.cli.common import echo_json

COLUMNS = (("name", "NAME"), ("title", "TITLE"), ("licence", "LICENCE"), ("gsd", "GSD"), ("tiling", "TILING"),
           ("test_splits", "TEST SPLITS"))


def _gsd_text(gsd_m: list[float] | None) -> str:
    if not gsd_m:
        return "-"
    low, high = gsd_m
    return f"{low:g} m" if low == high else f"{low:g}-{high:g} m"


def table_rows(facts: list[dict]) -> list[dict[str, str]]:
    """One row of display strings per adapter (the columns of :data:`COLUMNS`)."""
    return [{"name": f["name"], "title": f["title"] or "-", "licence": f["licence"], "gsd": _gsd_text(f["gsd_m"]),
             "tiling": f["tiling"], "test_splits": ", ".join(f["test_splits"]) or "-"} for f in facts]


def format_table(rows: list[dict[str, str]]) -> str:
    """Rows as a left-aligned text table with a header line."""
    widths = {key: max([len(head)] + [len(r[key]) for r in rows]) for key, head in COLUMNS}
    lines = ["  ".join(head.ljust(widths[key]) for key, head in COLUMNS).rstrip()]
    lines += ["  ".join(r[key].ljust(widths[key]) for key, _ in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the adapters' facts on stdout.")
def sources(as_json: bool) -> None:
    """List the source adapters: name, title, licence, GSD, tiling and benchmark test splits."""
    from rs4m.sources import list_sources

    facts = [cls.facts() for cls in list_sources()]
    if as_json:
        echo_json(facts)
    else:
        click.echo(format_table(table_rows(facts)))
