"""``rs4m stats``: what a build holds, in numbers and a picture.

:func:`compute_stats` reads the tables of a build output folder (never the pixels) and returns one plain
dict; :func:`format_stats` turns it into a table for people, :func:`plot_stats` into a PNG. The counting rules
are those of :mod:`rs4m.report.tables`; filter reasons are counted without their parenthesised detail
("mostly nodata (52% of the tile)" counts as "mostly nodata").
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rs4m import manifest as mf
from rs4m.errors import ConfigError, OutputError
from rs4m.layout import OutputLayout
from rs4m.report.tables import (
    BY_KEYS,
    DETAIL_RE,
    DISTRIBUTIONS,
    MANIFEST_COLUMNS,
    NULL_KEY,
    QUANTILES,
    key_column,
    read_frame,
    read_optional,
    read_tiles_with_status,
)

# ---------------------------------------------------------------------------------------------- counting


def quantiles(values: Iterable[float]) -> dict[str, float | int | None]:
    """``count``, ``mean``, ``min``, ``p05`` … ``p95``, ``max`` of the non-null values (None when empty)."""
    arr = pd.to_numeric(pd.Series(list(values) if not isinstance(values, pd.Series) else values),
                        errors="coerce").dropna().to_numpy(np.float64)
    out: dict[str, float | int | None] = {"count": int(arr.size)}
    stats: list[tuple[str, Callable[[np.ndarray], Any]]] = [("mean", np.mean), ("min", np.min)]
    stats += [(f"p{round(q * 100):02d}", functools.partial(np.quantile, q=q)) for q in QUANTILES]
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


def _leak_block(tiles: pd.DataFrame, layout: OutputLayout) -> dict:
    """Leaked tiles (left the manifest) and, from ``leakage.parquet``, the tiles leaking each benchmark by
    source and kind (``overlap``, ``crop``, ...), excluded or not."""
    block: dict[str, Any] = {"total": int((tiles["status"] == "leaked").sum())}
    if layout.leakage.exists():
        leaks = read_frame(layout.leakage, mf.LEAKAGE_SCHEMA, ["tile_id", "source", "benchmark", "kind"])
        pairs: dict[str, dict[str, int]] = {}
        distinct = leaks.drop_duplicates(["tile_id", "benchmark", "kind"])
        for (bench, source, kind), n in distinct.groupby(["benchmark", "source", "kind"]).size().items():
            pairs.setdefault(f"{bench} | {source}", {})[str(kind)] = int(n)
        block["by_benchmark_source"] = dict(sorted(pairs.items()))
    return block


def _error_block(errors: pd.DataFrame) -> dict:
    by_stage_reason: dict[str, dict[str, int]] = {}
    for (stage, reason), n in errors.groupby(["stage", "reason"]).size().items():
        by_stage_reason.setdefault(str(stage), {})[str(reason)] = int(n)
    return {"total": int(len(errors)), "by_stage": _counts(errors["stage"]),
            "by_reason": _counts(errors["reason"]), "by_stage_reason": dict(sorted(by_stage_reason.items()))}


def per_key(tiles: pd.DataFrame, manifest: pd.DataFrame, by: str) -> dict[str, dict[str, int]]:
    """Counts per value of column ``by``: scenes (distinct, among tiles), tiles, each status, kept bytes."""
    keys = sorted(set(key_column(tiles, by)) | set(key_column(manifest, by)))
    tkey, mkey = key_column(tiles, by), key_column(manifest, by)
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
    ``leaked`` (``total`` and ``by_reason``; duplicates also ``by_source_pair`` from ``dedup.json``, the pairs
    of each reason, ``overlap`` included; leaked also ``by_benchmark_source`` from ``leakage.parquet``: tiles
    leaking each benchmark per source and kind),
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
    manifest = read_frame(layout.manifest, mf.MANIFEST_SCHEMA, MANIFEST_COLUMNS)
    shards = read_optional(layout.shards_table, mf.SHARDS_SCHEMA)
    errors = read_optional(layout.errors, mf.ERRORS_SCHEMA)
    scenes = read_optional(layout.scenes, mf.SCENES_SCHEMA, ["scene_id"])
    dedup_report = json.loads(layout.dedup_report.read_text()) if layout.dedup_report.exists() else {}
    filtered = tiles[tiles["status"] == "filtered"]
    return {
        "out": str(layout.root), "by": by, "scenes": int(len(scenes)),
        "tiles_total": int(len(tiles)), "tiles_kept": int(len(manifest)),
        "filtered": {"total": int(len(filtered)),
                     "by_reason": _counts(filtered["filter_reason"].str.replace(DETAIL_RE, "", regex=True))},
        "duplicates": _dup_block(tiles, dedup_report),
        "leaked": _leak_block(tiles, layout),
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
    def fmt(r):
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths, strict=True)))
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
    leaks = {f"{pair}: {kind}": n for pair, kinds in stats["leaked"].get("by_benchmark_source", {}).items()
             for kind, n in kinds.items()}
    lines += _reason_lines("leaking tiles by benchmark and source", leaks)
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


