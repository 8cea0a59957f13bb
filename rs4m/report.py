"""What a build holds, in numbers and pictures: ``rs4m stats`` and ``rs4m inspect``.

:func:`compute_stats` reads the tables of a build output folder (never the pixels) and returns one plain
dict; :func:`format_stats` turns it into a table for people, :func:`plot_stats` into a PNG.
:func:`contact_sheet` draws tiles read from the shards by offset, either as a grid or one duplicate group
per row.

Counting rules (the catalog's): every row of the tiles parts is one tile. A tile with a ``filter_reason`` is
*filtered*; else one whose ``dup_reason`` is ``leak`` is *leaked*; else one with a ``dup_of`` is a
*duplicate*. The *kept* tiles are the rows of ``manifest.parquet``. Filter reasons are counted without their
parenthesised detail ("mostly nodata (52% of the tile)" counts as "mostly nodata").
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from rs4m import manifest as mf
from rs4m.errors import ConfigError, OutputError
from rs4m.filters import filter_frame
from rs4m.layout import OutputLayout

#: ``--by`` value → name of the per-key object in the stats
BY_KEYS = {"source": "sources", "licence": "licences", "format": "formats"}
#: the value shown for a null key ("format" is null for filtered tiles, which have no stored bytes)
NULL_KEY = "(none)"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DISTRIBUTIONS = ("width", "height", "gsd_m", "richness")
STATUSES = ("kept", "filtered", "duplicate", "leaked")

TILE_COLUMNS = ["tile_id", "scene_id", "source", "licence", "format", "filter_reason", "length"]
DEDUP_COLUMNS = ["tile_id", "dup_of", "dup_reason"]
MANIFEST_COLUMNS = ["tile_id", "scene_id", "source", "licence", "format", "length", *DISTRIBUTIONS]
_DETAIL_RE = re.compile(r"\s*\(.*\)\s*$")
#: integer columns stay exact integers with nulls (uint64 hashes and int64 group ids would lose bits as floats)
_NULLABLE = {pa.int8(): pd.Int8Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
             pa.uint64(): pd.UInt64Dtype()}


# ---------------------------------------------------------------------------------------------- reading


def _read(path: Path, schema, columns: list[str] | None = None) -> pd.DataFrame:
    return mf.read_table(path, schema, columns).to_pandas(types_mapper=_NULLABLE.get)


def _read_optional(path: Path, schema, columns: list[str] | None = None) -> pd.DataFrame:
    if path.exists():
        return _read(path, schema, columns)
    names = columns or schema.names
    return mf.read_parts([], schema, names).to_pandas(types_mapper=_NULLABLE.get)


def read_tiles_with_status(layout: OutputLayout) -> pd.DataFrame:
    """Every tiles-part row (``TILE_COLUMNS``) with its dedup columns and a ``status`` column (see module doc)."""
    tiles = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, TILE_COLUMNS).to_pandas(types_mapper=_NULLABLE.get)
    dedup = _read_optional(layout.dedup, mf.DEDUP_SCHEMA, DEDUP_COLUMNS)
    tiles = tiles.merge(dedup, on="tile_id", how="left")
    status = np.where(tiles["filter_reason"].notna(), "filtered",
                      np.where(tiles["dup_reason"] == "leak", "leaked",
                               np.where(tiles["dup_of"].notna(), "duplicate", "kept")))
    return tiles.assign(status=status)


def _key(frame: pd.DataFrame, by: str) -> pd.Series:
    return frame[by].fillna(NULL_KEY).astype(str)


# ---------------------------------------------------------------------------------------------- counting


def quantiles(values: Iterable[float]) -> dict[str, float | int | None]:
    """``count``, ``mean``, ``min``, ``p05`` … ``p95``, ``max`` of the non-null values (None when empty)."""
    arr = pd.to_numeric(pd.Series(list(values) if not isinstance(values, pd.Series) else values),
                        errors="coerce").dropna().to_numpy(np.float64)
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    stats = [("mean", np.mean), ("min", np.min)]
    stats += [(f"p{round(q * 100):02d}", lambda a, q=q: np.quantile(a, q)) for q in QUANTILES]
    stats += [("max", np.max)]
    for name, fn in stats:
        out[name] = round(float(fn(arr)), 6) if arr.size else None
    return out


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(series.value_counts().items())}


def _dup_block(tiles: pd.DataFrame, dedup_report: Mapping[str, Any]) -> dict:
    dups = tiles[tiles["status"] == "duplicate"]
    return {"total": int(len(dups)), "by_reason": _counts(dups["dup_reason"].fillna(NULL_KEY)),
            "by_source_pair": dict(dedup_report.get("pairs_by_source", {}))}


def _error_block(errors: pd.DataFrame) -> dict:
    by_stage_reason: dict[str, dict[str, int]] = {}
    for (stage, reason), n in errors.groupby(["stage", "reason"]).size().items():
        by_stage_reason.setdefault(str(stage), {})[str(reason)] = int(n)
    return {"total": int(len(errors)), "by_stage": _counts(errors["stage"]),
            "by_reason": _counts(errors["reason"]), "by_stage_reason": dict(sorted(by_stage_reason.items()))}


def per_key(tiles: pd.DataFrame, manifest: pd.DataFrame, by: str) -> dict[str, dict[str, int]]:
    """Counts per value of column ``by``: scenes (distinct, among tiles), tiles, each status, kept bytes."""
    keys = sorted(set(_key(tiles, by)) | set(_key(manifest, by)))
    tkey, mkey = _key(tiles, by), _key(manifest, by)
    out = {}
    for key in keys:
        t, m = tiles[tkey == key], manifest[mkey == key]
        out[key] = {"scenes": int(t["scene_id"].nunique()), "tiles_total": int(len(t)),
                    "tiles_kept": int(len(m)),
                    "filtered": int((t["status"] == "filtered").sum()),
                    "duplicates": int((t["status"] == "duplicate").sum()),
                    "leaked": int((t["status"] == "leaked").sum()),
                    "bytes_kept": int(m["length"].fillna(0).sum())}
    return out


def compute_stats(out: Path, by: str = "source") -> dict:
    """Counts, sizes and distributions of the build in ``out`` (see the module doc for the rules).

    Returns a JSON-ready dict: ``scenes``, ``tiles_total``, ``tiles_kept``, ``filtered`` / ``duplicates`` /
    ``leaked`` (``total`` and ``by_reason``; duplicates also ``by_source_pair`` from ``dedup.json``),
    ``errors`` (``total``, ``by_stage``, ``by_reason``), ``shards``, ``bytes``, ``distributions`` (quantiles
    of the kept tiles' ``width``, ``height``, ``gsd_m``, ``richness``) and the per-key object named by
    :data:`BY_KEYS` (``sources``, ``licences`` or ``formats``) with the same counts per key.
    """
    if by not in BY_KEYS:
        raise ConfigError(f"--by must be one of {', '.join(BY_KEYS)}, not {by!r}")
    layout = OutputLayout(Path(out))
    if not layout.manifest.exists():
        raise OutputError(f"{out} has no manifest.parquet; run `rs4m build` (or `rs4m catalog {out}`) first")
    tiles = read_tiles_with_status(layout)
    manifest = _read(layout.manifest, mf.MANIFEST_SCHEMA, MANIFEST_COLUMNS)
    shards = _read_optional(layout.shards_table, mf.SHARDS_SCHEMA)
    errors = _read_optional(layout.errors, mf.ERRORS_SCHEMA)
    scenes = _read_optional(layout.scenes, mf.SCENES_SCHEMA, ["scene_id"])
    dedup_report = json.loads(layout.dedup_report.read_text()) if layout.dedup_report.exists() else {}
    filtered = tiles[tiles["status"] == "filtered"]
    return {
        "out": str(layout.root), "by": by, "scenes": int(len(scenes)),
        "tiles_total": int(len(tiles)), "tiles_kept": int(len(manifest)),
        "filtered": {"total": int(len(filtered)),
                     "by_reason": _counts(filtered["filter_reason"].str.replace(_DETAIL_RE, "", regex=True))},
        "duplicates": _dup_block(tiles, dedup_report),
        "leaked": {"total": int((tiles["status"] == "leaked").sum())},
        "errors": _error_block(errors),
        "shards": int(len(shards)),
        "bytes": {"shards": int(shards["bytes"].sum()), "stored": int(tiles["length"].fillna(0).sum()),
                  "kept": int(manifest["length"].fillna(0).sum())},
        "distributions": {name: quantiles(manifest[name]) for name in DISTRIBUTIONS},
        BY_KEYS[by]: per_key(tiles, manifest, by),
    }


# ---------------------------------------------------------------------------------------------- text


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers, two spaces between columns."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths)))
    return [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]


def _reason_lines(title: str, counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return []
    return ["", title] + [f"  {n:>8}  {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])]


def format_stats(stats: Mapping[str, Any]) -> str:
    """A human-readable report of :func:`compute_stats`' result: totals, a per-key table, reasons, quantiles."""
    group = BY_KEYS[stats["by"]]
    lines = [f"build {stats['out']}",
             f"  scenes {stats['scenes']}, tiles {stats['tiles_total']}, kept {stats['tiles_kept']}, "
             f"filtered {stats['filtered']['total']}, duplicates {stats['duplicates']['total']}, "
             f"leaked {stats['leaked']['total']}, errors {stats['errors']['total']}",
             f"  shards {stats['shards']} ({_size(stats['bytes']['shards'])}), "
             f"kept tiles {_size(stats['bytes']['kept'])}", ""]
    rows = [[key, c["scenes"], c["tiles_total"], c["tiles_kept"], c["filtered"], c["duplicates"], c["leaked"],
             _size(c["bytes_kept"])] for key, c in stats[group].items()]
    rows.append(["total", stats["scenes"], stats["tiles_total"], stats["tiles_kept"],
                 stats["filtered"]["total"], stats["duplicates"]["total"], stats["leaked"]["total"],
                 _size(stats["bytes"]["kept"])])
    lines += text_table([stats["by"], "scenes", "tiles", "kept", "filtered", "dups", "leaked", "kept bytes"], rows)
    lines += _reason_lines("filtered by reason", stats["filtered"]["by_reason"])
    lines += _reason_lines("duplicates by reason", stats["duplicates"]["by_reason"])
    pairs = {f"{pair}: {reason}": n for pair, reasons in stats["duplicates"]["by_source_pair"].items()
             for reason, n in reasons.items()}
    lines += _reason_lines("duplicate pairs by source pair", pairs)
    lines += _reason_lines("errors by stage and reason", {
        f"{stage}: {reason}": n for stage, reasons in stats["errors"]["by_stage_reason"].items()
        for reason, n in reasons.items()})
    dist = stats["distributions"]
    cols = ["count", "min", "p05", "p25", "p50", "p75", "p95", "max"]
    lines += ["", "kept tiles"] + ["  " + s for s in text_table(
        ["", *cols], [[name, *(_num(dist[name][c]) for c in cols)] for name in DISTRIBUTIONS])]
    return "\n".join(lines)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


# ---------------------------------------------------------------------------------------------- pictures


def _box_stats(q: Mapping[str, Any], label: str) -> dict:
    """One ``Axes.bxp`` entry from stored quantiles: box p25–p75, whiskers p05–p95, line at the median."""
    return {"label": label, "med": q["p50"], "q1": q["p25"], "q3": q["p75"], "whislo": q["p05"],
            "whishi": q["p95"], "mean": q["mean"], "fliers": [q["min"], q["max"]]}


def _stacked_bars(ax, stats: Mapping[str, Any]) -> None:
    group = stats[BY_KEYS[stats["by"]]]
    keys = list(group)[::-1]  # first key on top
    left = np.zeros(len(keys))
    colours = {"tiles_kept": "#2a9d8f", "filtered": "#e9c46a", "duplicates": "#e76f51", "leaked": "#6d597a"}
    for column, colour in colours.items():
        widths = np.array([group[k][column] for k in keys], dtype=float)
        ax.barh(keys, widths, left=left, color=colour, label=column.replace("tiles_", ""))
        left += widths
    ax.set_xlabel("tiles")
    ax.set_title(f"tiles per {stats['by']}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="small", frameon=False)


def plot_stats(stats: Mapping[str, Any], path: Path) -> Path:
    """Draw :func:`compute_stats`' result into a PNG: stacked kept / filtered / duplicate / leaked bars per key
    (the figure grows 0.35 in per key) above box plots of the kept tiles' size, GSD and richness quantiles
    (box p25–p75, whiskers p05–p95, dots at min and max). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n_keys = len(stats[BY_KEYS[stats["by"]]])
    bar_h = 1.2 + 0.35 * max(n_keys, 1)
    fig = Figure(figsize=(10, bar_h + 3.0), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[bar_h, 3.0])
    _stacked_bars(fig.add_subplot(grid[0, :]), stats)
    dist = stats["distributions"]
    panels = [("size (px)", ["width", "height"]), ("gsd_m", ["gsd_m"]), ("richness", ["richness"])]
    for k, (title, names) in enumerate(panels):
        ax = fig.add_subplot(grid[1, k])
        boxes = [_box_stats(dist[n], n) for n in names if dist[n]["count"]]
        if boxes:
            ax.bxp(boxes, showmeans=True, showfliers=True)
            lows = [b["fliers"][0] for b in boxes]
            if min(lows) > 0 and max(b["fliers"][1] for b in boxes) / min(lows) > 20:
                ax.set_yscale("log")  # mixed sources span decades of GSD
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


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
    return _read(layout.manifest, mf.MANIFEST_SCHEMA, columns).assign(status="kept")


def all_tiles(out: Path) -> pd.DataFrame:
    """Every tiles-part row (no geometry) with its dedup columns and ``status`` (kept / filtered / ...)."""
    layout = OutputLayout(Path(out))
    columns = [n for n in mf.TILES_SCHEMA.names if n != mf.GEOMETRY]
    tiles = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, columns).to_pandas(types_mapper=_NULLABLE.get)
    status = read_tiles_with_status(layout)
    groups = _read_optional(layout.dedup, mf.DEDUP_SCHEMA, ["tile_id", "dup_group"])
    status = status.merge(groups, on="tile_id", how="left")[_STATUS_COLUMNS]
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
    duplicates after (by tile id). Leak-only groups, which keep no tile, are left out."""
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
        return reader.read(row["shard"], int(row["offset"]), int(row["length"]))


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

    from rs4m.codec import decode

    if row.get("shard") is None or row.get("offset") is None:
        return None
    data = reader.read(row["shard"], int(row["offset"]), int(row["length"]))
    img = Image.fromarray(decode(data, row.get("format")))
    img.thumbnail((thumb, thumb))
    return img


def _label(row: Mapping[str, Any], dups: bool, chars: int) -> list[str]:
    first = str(row["tile_id"])[:8]
    if dups:
        first += " kept" if row.get("dup_of") is None else f" {row.get('dup_reason')}"
    source = str(row.get("source") or "")
    return [first[:chars], source if len(source) <= chars else "…" + source[1 - chars:]]


def _draw_cell(sheet, draw, font, reader, row, x: int, y: int, thumb: int, dups: bool) -> None:
    img = _thumbnail(reader, row, thumb)
    if img is None:
        draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], fill=(90, 90, 90))
        draw.text((x + 4, y + thumb // 2 - 6), "no stored bytes", fill=(230, 230, 230), font=font)
    else:
        sheet.paste(img, (x + (thumb - img.width) // 2, y + (thumb - img.height) // 2))
    line_h = getattr(font, "size", 10) + 2
    for k, text in enumerate(_label(row, dups, max(8, thumb // 6))):
        draw.text((x, y + thumb + 2 + k * line_h), text, fill=(20, 20, 20), font=font)


def contact_sheet(out: Path, rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
                  path: Path, thumb: int = 128, columns: int | None = None) -> Path:
    """Draw tiles read from the shards of ``out`` by offset into a PNG at ``path``; returns ``path``.

    ``rows`` is either a flat list of tile rows (a grid of ``columns`` columns, default ⌈√N⌉) or a list of
    duplicate groups from :func:`duplicate_groups` (the ``dups`` layout: one group per line, kept tile first,
    each labelled "kept" or with the reason it left). Each cell is a ``thumb``-px thumbnail with the tile id
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
            for c, row in enumerate(line):
                x, y = PAD_PX + c * (thumb + PAD_PX), PAD_PX + r * (thumb + label_h + PAD_PX)
                _draw_cell(sheet, draw, font, reader, row, x, y, thumb, dups)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def _chunks(items: list, size: int) -> list[list]:
    size = max(size, 1)
    return [items[k:k + size] for k in range(0, len(items), size)]
