"""``rs4m inspect``: pick tiles by id, source or filter, read their bytes, draw contact sheets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rs4m import manifest as mf
from rs4m.errors import ConfigError, OutputError
from rs4m.filters import filter_frame
from rs4m.layout import OutputLayout
from rs4m.report.tables import (
    NULLABLE,
    read_frame,
    read_optional,
    read_tiles_with_status,
)

# ---------------------------------------------------------------------------------------------- selecting

#: columns printed per row by ``rs4m inspect`` (all columns go to ``--json``)
SHOW_COLUMNS = ["tile_id", "source", "scene_path", "x", "y", "width", "height", "gsd_m", "richness", "shard",
                "offset", "length"]
_STATUS_COLUMNS = ["tile_id", "dup_group", "dup_of", "dup_reason", "status"]


def load_manifest(out: Path) -> pd.DataFrame:
    """The manifest without its WKB ``geometry`` (what ``--where`` queries run on), plus ``status`` = kept."""
    layout = OutputLayout(Path(out))
    if not layout.manifest.exists():
        raise OutputError(f"{out} has no manifest.parquet; run `rs4m build` (or `rs4m catalog {out}`) first")
    columns = [n for n in mf.MANIFEST_SCHEMA.names if n != mf.GEOMETRY]
    return read_frame(layout.manifest, mf.MANIFEST_SCHEMA, columns).assign(status="kept")


def all_tiles(out: Path) -> pd.DataFrame:
    """Every tiles-part row (no geometry) with its dedup columns and ``status`` (kept / filtered / ...)."""
    layout = OutputLayout(Path(out))
    columns = [n for n in mf.TILES_SCHEMA.names if n != mf.GEOMETRY]
    tiles = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, columns).to_pandas(types_mapper=NULLABLE.get)
    status = read_tiles_with_status(layout)
    overlap = [f.name for f in mf.OVERLAP_FIELDS]
    if not layout.dedup.exists() or not set(overlap) <= set(pq.read_schema(layout.dedup).names):
        overlap = []  # a build without overlap search
    groups = read_optional(layout.dedup, mf.DEDUP_OVERLAP_SCHEMA, ["tile_id", "dup_group", *overlap])
    status = status.merge(groups, on="tile_id", how="left")[_STATUS_COLUMNS + overlap]
    return tiles.merge(status, on="tile_id", how="left")


def select_tiles(out: Path, tile_id: str | None = None, source: str | None = None,
                 where: str | None = None) -> pd.DataFrame:
    """Manifest rows matching all given conditions, in manifest order. A ``tile_id`` that left the manifest
    (filtered, duplicate, leaked) is looked up in the tiles parts, so its ``status`` says why."""
    frame = load_manifest(out)
    if tile_id is not None:
        found = frame[frame["tile_id"] == tile_id]
        if found.empty:
            tiles = all_tiles(out)
            found = tiles[tiles["tile_id"] == tile_id]
        if found.empty:
            raise OutputError(f"tile {tile_id} is in no tiles part of {out}")
        frame = found
    if source is not None:
        frame = frame[frame["source"] == source]
    if where:
        frame = filter_frame(frame, where)
    return frame


def duplicate_groups(out: Path, n_groups: int, source: str | None = None) -> list[list[dict]]:
    """The first ``n_groups`` duplicate groups (by kept tile id), each as rows with the kept tile first and its
    duplicates after (by tile id). Leak-only groups, which keep no tile, are left out. With overlap search,
    an overlap duplicate's row carries ``overlap_frac``, ``overlap_scale`` and ``overlap_rotation``."""
    tiles = all_tiles(out)
    grouped = tiles[tiles["dup_group"].notna() & (tiles["dup_reason"] != "leak")]
    if source is not None:
        wanted = set(grouped.loc[grouped["source"] == source, "dup_group"])
        grouped = grouped[grouped["dup_group"].isin(wanted)]
    groups = []
    for _, rows in grouped.groupby("dup_group", sort=False):
        rows = rows.assign(_dup=rows["dup_of"].notna()).sort_values(["_dup", "tile_id"]).drop(columns="_dup")
        if rows["dup_of"].notna().any() and rows["dup_of"].isna().iloc[0]:
            groups.append(records(rows))
    groups.sort(key=lambda g: g[0]["tile_id"])
    return groups[:n_groups]


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (nulls as None, numpy scalars as Python numbers)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in clean.to_dict("records")]


def tile_bytes(out: Path, row: Mapping[str, Any]) -> bytes:
    """The stored bytes of one tile row (one ranged read of its shard)."""
    from rs4m.shards import ShardReader

    if row.get("shard") is None or row.get("offset") is None:
        raise OutputError(f"tile {row['tile_id']} has no stored bytes ({row.get('status') or 'not stored'})")
    with ShardReader(OutputLayout(Path(out)).shards_dir) as reader:
        return reader.read_row(row)


# ---------------------------------------------------------------------------------------------- contact sheets

LABEL_LINES = 2
PAD_PX = 4


def _font(size_px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size_px)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _thumbnail(reader, row: Mapping[str, Any], thumb: int):
    """An RGB PIL image of at most ``thumb`` × ``thumb`` px, or None where the tile has no stored bytes."""
    from PIL import Image

    if row.get("shard") is None or row.get("offset") is None:
        return None
    img = Image.fromarray(reader.decode_row(row))
    img.thumbnail((thumb, thumb))
    return img


def _label(row: Mapping[str, Any], dups: bool, chars: int) -> list[str]:
    first = str(row["tile_id"])[:8]
    if dups:
        first += " kept" if row.get("dup_of") is None else f" {row.get('dup_reason')}"
    source = str(row.get("source") or "")
    return [first[:chars], source if len(source) <= chars else "…" + source[1 - chars:]]


#: colour of the shared-ground outline drawn on both tiles of an overlap duplicate
OUTLINE = (255, 40, 40)


def overlap_outlines(reader, line: Sequence[Mapping[str, Any]]) -> dict[int, list[np.ndarray]]:
    """Per cell of a duplicate group's line (kept tile first), the outlines ``float [V, 2]`` (in that tile's
    pixels) of the ground it shares with the line's overlap duplicates, matched again from their pixels
    (a duplicate joined to the kept tile only through another tile has no direct match: no outline)."""
    found: dict[int, list[np.ndarray]] = {}
    kept = line[0] if line else {}
    if not any(r.get("dup_reason") == "overlap" for r in line[1:]) or kept.get("shard") is None:
        return found
    try:
        from rs4m.overlap import extract, extract_both, verify
        from rs4m.overlap.search import MIN_INLIERS, MIN_SPREAD
        from rs4m.overlap.verify import outlines

        kept_features = extract(reader.decode_row(kept))
    except ImportError:  # the overlap extra (OpenCV) is not installed: the sheet has no outlines
        return found
    for k, row in enumerate(line[1:], 1):
        if row.get("dup_reason") != "overlap" or row.get("shard") is None:
            continue
        match = verify(kept_features, *extract_both(reader.decode_row(row)), min_inliers=MIN_INLIERS)
        if match is not None and match.spread >= MIN_SPREAD:
            in_kept, in_dup = outlines(match)
            found.setdefault(0, []).append(in_kept)
            found.setdefault(k, []).append(in_dup)
    return found


def _draw_outline(draw, poly: np.ndarray, origin: tuple[int, int], factor: float) -> None:
    if len(poly) >= 2:
        points = [(origin[0] + px * factor, origin[1] + py * factor) for px, py in poly.tolist()]
        draw.line(points, fill=OUTLINE, width=2)


def _draw_cell(sheet, draw, font, reader, row, x: int, y: int, thumb: int, dups: bool,
               outlines: Sequence[np.ndarray] = ()) -> None:
    img = _thumbnail(reader, row, thumb)
    if img is None:
        draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], fill=(90, 90, 90))
        draw.text((x + 4, y + thumb // 2 - 6), "no stored bytes", fill=(230, 230, 230), font=font)
    else:
        origin = (x + (thumb - img.width) // 2, y + (thumb - img.height) // 2)
        sheet.paste(img, origin)
        width = row.get("out_width") or row.get("width") or img.width
        for poly in outlines:
            _draw_outline(draw, poly, origin, img.width / width)
    line_h = getattr(font, "size", 10) + 2
    for k, text in enumerate(_label(row, dups, max(8, thumb // 6))):
        draw.text((x, y + thumb + 2 + k * line_h), text, fill=(20, 20, 20), font=font)


def contact_sheet(out: Path, rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
                  path: Path, thumb: int = 128, columns: int | None = None) -> Path:
    """Draw tiles read from the shards of ``out`` by offset into a PNG at ``path``; returns ``path``.

    ``rows`` is either a flat list of tile rows (a grid of ``columns`` columns, default ⌈√N⌉) or a list of
    duplicate groups from :func:`duplicate_groups` (the ``dups`` layout: one group per line, kept tile first,
    each labelled "kept" or with the reason it left; an overlap duplicate and the kept tile have the ground
    they share outlined in red, matched again from their pixels). Each cell is a ``thumb``-px thumbnail with the tile id
    prefix and source under it; the sheet is ``cols·(thumb+4)+4`` px wide and ``lines·(thumb+label+4)+4``
    px high.
    """
    from PIL import Image, ImageDraw

    from rs4m.shards import ShardReader

    dups = bool(rows) and not isinstance(rows[0], Mapping)
    lines = [list(g) for g in rows] if dups else _chunks(list(rows), columns or math.ceil(math.sqrt(len(rows))))
    if not lines or not any(lines):
        raise ConfigError("no tiles to draw; the selection is empty")
    font = _font(max(9, thumb // 11))
    label_h = LABEL_LINES * (getattr(font, "size", 10) + 2) + 2
    cols = max(len(line) for line in lines)
    size = (cols * (thumb + PAD_PX) + PAD_PX, len(lines) * (thumb + label_h + PAD_PX) + PAD_PX)
    sheet = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    with ShardReader(OutputLayout(Path(out)).shards_dir) as reader:
        for r, line in enumerate(lines):
            shared = overlap_outlines(reader, line) if dups else {}
            for c, row in enumerate(line):
                x, y = PAD_PX + c * (thumb + PAD_PX), PAD_PX + r * (thumb + label_h + PAD_PX)
                _draw_cell(sheet, draw, font, reader, row, x, y, thumb, dups, shared.get(c, ()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def _chunks(items: list, size: int) -> list[list]:
    size = max(size, 1)
    return [items[k:k + size] for k in range(0, len(items), size)]

