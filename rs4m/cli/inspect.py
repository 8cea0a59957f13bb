"""``rs4m inspect OUT``."""

from __future__ import annotations

from pathlib import Path

import click

from rs4m.cli.common import echo_json
from rs4m.errors import ConfigError


def _show(rows: list[dict], total: int) -> None:
    """Rows as an aligned table on stdout (one tile: every field, one per line); the count on stderr."""
    from rs4m.report import SHOW_COLUMNS, text_table

    if len(rows) == 1 and total == 1:
        for key, value in rows[0].items():
            click.echo(f"{key:>16}  {value}")
        return
    cells = [[_cell(r.get(c)) for c in SHOW_COLUMNS] for r in rows]
    for line in text_table(SHOW_COLUMNS, cells):
        click.echo(line)
    click.echo(f"{len(rows)} of {total} matching tiles shown", err=True)


def resolve_prefix(out: Path, prefix: str) -> str:
    """The one tile id of the build (kept or not) that starts with ``prefix``; ``prefix`` itself when none does
    (the lookup then says the tile is in no tiles part); an error listing a few when several do."""
    from rs4m import manifest as mf
    from rs4m.layout import OutputLayout

    parts = OutputLayout(Path(out)).tile_parts()
    ids = mf.read_parts(parts, mf.TILES_SCHEMA, columns=["tile_id"])["tile_id"].to_pylist() if parts else []
    found = sorted({i for i in ids if i.startswith(prefix)})
    if len(found) > 1:
        raise ConfigError(f"--tile-id {prefix!r} matches {len(found)} tiles ({', '.join(f[:12] for f in found[:3])}"
                          f"{', ...' if len(found) > 3 else ''}); give more characters")
    return found[0] if found else prefix


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write_bytes(out: Path, rows: list[dict], total: int, path: Path) -> None:
    from rs4m.manifest import atomic_write_bytes
    from rs4m.report import tile_bytes

    if total != 1:
        raise ConfigError(f"--bytes needs exactly one tile, but {total} match; pass --tile-id ID")
    atomic_write_bytes(path, tile_bytes(out, rows[0]))
    click.echo(f"wrote {path.stat().st_size} bytes of tile {rows[0]['tile_id']} to {path}", err=True)


def _inspect_dups(out: Path, source: str | None, n: int, grid: Path | None, thumb: int, as_json: bool) -> None:
    from rs4m.report import contact_sheet, duplicate_groups

    groups = duplicate_groups(out, n, source)
    if grid is not None:
        contact_sheet(out, groups, grid, thumb=thumb)
        click.echo(f"contact sheet of {len(groups)} duplicate groups: {grid}", err=True)
    if as_json:
        echo_json({"groups": [{"dup_group": g[0]["dup_group"], "tiles": g} for g in groups]})
        return
    if not groups:
        click.echo("no duplicate groups" + (f" with tiles of {source}" if source else ""), err=True)
    for g in groups:
        members = ", ".join(f"{r['tile_id'][:8]} ({r['dup_reason']})" for r in g[1:])
        click.echo(f"group {g[0]['dup_group']}: kept {g[0]['tile_id'][:8]} {g[0]['source']}; dropped {members}")


@click.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--tile-id", default=None,
              help="One tile, by its id or any unique prefix of it (also one that left the manifest: its status "
                   "says why).")
@click.option("--source", default=None, help="Only tiles of this source.")
@click.option("--where", default=None, help="A filter on the manifest columns in rs4m's filter language, "
              "e.g. \"richness > 30 and source == 'dota'\".")
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Show (and draw) at most N tiles, or N duplicate groups with --dups.")
@click.option("--grid", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Draw the shown tiles into a contact sheet PNG.")
@click.option("--thumb", type=click.IntRange(16, 1024), default=128, show_default=True,
              help="Thumbnail size in the contact sheet, px.")
@click.option("--dups", is_flag=True, help="Show duplicate groups (kept tile first) instead of manifest rows.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--bytes", "bytes_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the stored bytes of the (one) selected tile to this file.")
def inspect(out: Path, tile_id: str | None, source: str | None, where: str | None, n: int, grid: Path | None,
            thumb: int, dups: bool, as_json: bool, bytes_path: Path | None) -> None:
    """Look at tiles of the build in OUT: their rows, a contact sheet, their stored bytes."""
    from rs4m.report import contact_sheet, records, select_tiles

    if dups:
        if tile_id or where or bytes_path:
            raise ConfigError("--dups takes only --source, -n, --grid and --json")
        return _inspect_dups(out, source, n, grid, thumb, as_json)
    if tile_id:
        tile_id = resolve_prefix(out, tile_id)
    selected = select_tiles(out, tile_id=tile_id, source=source, where=where)
    rows = records(selected.head(n))
    if bytes_path is not None:
        _write_bytes(out, rows, len(selected), bytes_path)
    if grid is not None:
        contact_sheet(out, rows, grid, thumb=thumb)
        click.echo(f"contact sheet of {len(rows)} tiles: {grid}", err=True)
    if as_json:
        echo_json({"count": int(len(selected)), "rows": rows})
    else:
        _show(rows, len(selected))
