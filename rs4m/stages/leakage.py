"""The leakage stage: the tiles of a build that copy an image of a benchmark folder → ``leakage.parquet``.

``run_leakage`` hashes every benchmark image whole and at the sub-windows of the build's most common tile sizes
(:mod:`rs4m.leakage`), matches them against the tiles' hashes and writes one row per (tile, benchmark image).
With ``exclude`` the next dedup run (:mod:`rs4m.stages.dedup`) marks those tiles ``dup_reason = "leak"``.

With ``overlap`` on (``[dedup] overlap``, ``rs4m leakage --overlap``) it also finds tiles showing at least
``leak_overlap`` of a benchmark image's area at any offset, scale (0.5–2×), flip or rotation: local features of
both orientations of every benchmark image are searched against the features the tile stage stored
(:mod:`rs4m.overlap`). Those rows have kind ``overlap`` and the columns ``overlap_frac`` (the share of the
image's area), ``overlap_scale`` (the image's pixel in the tile's pixels) and ``overlap_rotation`` (degrees,
the image, mirrored first where that matched, onto the tile).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from rs4m import manifest as mf
from rs4m.config import DedupConfig
from rs4m.errors import ConfigError
from rs4m.layout import OutputLayout
from rs4m.stages.benchmark_images import benchmark_images, check_name
from rs4m.stages.dedup import read_tiles, searchable_rows, u64_column

#: benchmark images are also hashed at the sub-windows of this many of the most common tile sizes
MAX_CROP_SIZES = 4


@dataclass
class LeakageReport:
    """What one leakage run found; ``problems`` lists the benchmark images that could not be read."""

    images: int = 0
    leaked_tiles: int = 0
    exclude: bool = False
    by_benchmark: dict[str, dict] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _crop_sizes(table: pa.Table) -> list[tuple[int, int]]:
    sizes = Counter(zip(table["width"].to_pylist(), table["height"].to_pylist(), strict=True))
    return [s for s, _ in sizes.most_common(MAX_CROP_SIZES) if None not in s]


def hash_benchmark(name: str, folder: Path, sizes: list[tuple[int, int]], problems: list[dict],
                   features: list | None = None):
    """:class:`rs4m.leakage.BenchmarkEntries` of every readable image of one benchmark (a folder, or an
    adapter's test splits: :mod:`rs4m.stages.benchmark_images`); with
    ``features`` (a list) the (path, features, mirror's features) of every image are appended to it."""
    from rs4m.leakage import BenchmarkEntries, benchmark_entries

    parts = []
    for image in benchmark_images(name, Path(folder), problems):
        try:
            rgb = image.read()
        except Exception as err:  # any decoder failure is a per-image problem, not a stop
            problems.append({"benchmark": name, "path": image.rel, "reason": f"cannot be read as an image: {err}"})
            continue
        parts.append(benchmark_entries(image.rel, rgb, sizes))
        if features is not None:
            features.append((image.rel, *_image_features(rgb)))
    return BenchmarkEntries.concat(parts), len(parts)


def _image_features(rgb: np.ndarray):
    from rs4m.overlap.features import extract_both
    from rs4m.overlap.store import KEYPOINTS, WORK_PX

    return extract_both(rgb, KEYPOINTS, WORK_PX)


def _tile_features(layout: OutputLayout, table: pa.Table, searchable: np.ndarray):
    """The stored features of the searchable tiles of ``table`` and each one's row in ``table``."""
    from rs4m.overlap.store import read_features
    from rs4m.stages.overlap import feature_parts

    fs = read_features(feature_parts(layout))
    row_of = {t: k for k, t in enumerate(table["tile_id"].to_pylist())}
    rows = np.array([row_of.get(t, -1) for t in fs.ids], np.int64)
    usable = rows >= 0
    usable[usable] = searchable[rows[usable]]
    return fs, np.where(usable, rows, -1)


def overlap_leaks(tiles, tile_rows: np.ndarray, images: list, config: DedupConfig) -> pd.DataFrame:
    """Tiles (rows of the tiles table) showing ≥ ``leak_overlap`` of a benchmark image's area: columns
    ``tile``, ``image``, ``kind`` (``overlap``), ``distance`` (1 − the share), ``overlap_*``."""
    from rs4m.overlap.search import find_leaks
    from rs4m.overlap.store import FeatureSet

    queries = FeatureSet.from_features([rel for rel, _, _ in images], [(f, m) for _, f, m in images])
    pairs = find_leaks(tiles, queries, config.leak_overlap)
    keep = tile_rows[pairs.i] >= 0
    found = pd.DataFrame({"tile": tile_rows[pairs.i[keep]], "image": [queries.ids[k] for k in pairs.j[keep]],
                          "kind": "overlap", "distance": 1.0 - pairs.frac_b[keep],
                          "overlap_frac": pairs.frac_b[keep], "overlap_scale": pairs.scale[keep],
                          "overlap_rotation": pairs.rotation[keep]})
    return found.sort_values(["tile", "image", "distance"], kind="stable").drop_duplicates(["tile", "image"])


def _leak_rows(table: pa.Table, name: str, found: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``leakage.parquet`` rows of one benchmark's matches (``found``: rows of ``table`` and what they match)."""
    tile = found["tile"].to_numpy(np.int64)
    columns = {
        "tile_id": table["tile_id"].take(tile), "source": table["source"].take(tile),
        "scene_path": table["scene_path"].take(tile), "benchmark": pa.array([name] * len(found), pa.string()),
        "benchmark_image": pa.array(found["image"].tolist(), pa.string()),
        "distance": pa.array(found["distance"].to_numpy(np.float32)), "kind": pa.array(found["kind"].tolist()),
    }
    for extra in schema.names[len(columns):]:
        values = found[extra].to_numpy(np.float64) if extra in found else np.full(len(found), np.nan)
        columns[extra] = pa.array(values.astype(np.float32), pa.float32(), mask=np.isnan(values))
    return mf.conform(pa.table(columns), schema)


def run_leakage(out: Path, benchmarks: dict[str, Path], exclude: bool = False,
                config: DedupConfig = DedupConfig()) -> LeakageReport:
    """Find tiles of build ``out`` that copy an image of a benchmark; write ``leakage.parquet``.

    ``benchmarks`` maps a name to a path: a registered adapter's name reads the path as that dataset's release
    and takes its test-split images only, any other name every image under the folder
    (:mod:`rs4m.stages.benchmark_images`).

    With ``exclude`` the next :func:`run_dedup` marks those tiles ``dup_reason = "leak"`` (and the catalog
    drops them). See :mod:`rs4m.leakage` for what counts as a copy and the limits of crop search.
    """
    from rs4m.leakage import leak_matches

    started = time.perf_counter()
    if not benchmarks:
        raise ConfigError("no benchmark given; pass --against NAME=PATH at least once")
    for name in benchmarks:
        check_name(name)
    layout = OutputLayout(Path(out))
    table = read_tiles(layout)
    searchable = searchable_rows(table, config.min_richness)
    tile_features = _tile_features(layout, table, searchable) if config.overlap else None
    schema = mf.LEAKAGE_OVERLAP_SCHEMA if config.overlap else mf.LEAKAGE_SCHEMA
    report, rows = LeakageReport(exclude=exclude), []
    for name, folder in sorted(benchmarks.items()):
        images: list | None = [] if config.overlap else None
        entries, n_images = hash_benchmark(name, Path(folder), _crop_sizes(table), report.problems, images)
        found = leak_matches(table["pixel_sha256"].to_pylist(), u64_column(table, "phash"), u64_column(table, "dhash"),
                             entries, config.radius_bits, config.dhash_radius_bits, searchable)
        if tile_features is not None and images:
            fs, tile_rows = tile_features
            found = pd.concat([found, overlap_leaks(fs, tile_rows, images, config)], ignore_index=True)
        rows.append(_leak_rows(table, name, found, schema))
        tile = found["tile"].to_numpy(np.int64)
        report.images += n_images
        report.by_benchmark[name] = {"images": n_images, "leaked_tiles": int(len(np.unique(tile))),
                                     "by_kind": dict(sorted(Counter(found["kind"]).items()))}
    leaks = pa.concat_tables(rows) if rows else schema.empty_table()
    mf.write_table(leaks, layout.leakage, schema, metadata={"exclude": bool(exclude)})
    report.leaked_tiles = len(set(leaks["tile_id"].to_pylist()))
    report.seconds = round(time.perf_counter() - started, 3)
    return report
