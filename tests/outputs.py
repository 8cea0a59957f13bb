"""Hand-made but complete build output folders for the stats / inspect / compact / verify tests.

:func:`make_corpus` writes what a build writes, file by file, with known contents: ``scenes.parquet``, one
tiles part and one shard per source (some rows filtered), ``dedup.parquet`` + ``dedup.json`` with exact,
near, geo and leak groups (one of them across sources), ``errors.parquet`` with scan and tile rows and a
``build.json``; then it runs the real catalog stage, which writes ``manifest.parquet`` and ``shards.parquet``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rs4m import manifest as mf
from rs4m.codec import encode
from rs4m.layout import OutputLayout
from rs4m.record import update_record
from rs4m.shards import ShardWriter
from rs4m.stages.catalog import run_catalog


@dataclass(frozen=True)
class FakeSource:
    """One source of the fake corpus: its licence, GSD, format, window and stored tile size."""

    name: str
    licence: str
    gsd_m: float | None
    fmt: str
    window: tuple[int, int]
    stored: tuple[int, int]
    scenes: int


SOURCES = (
    FakeSource("alpha", "CC-BY-4.0", 0.5, "png", (32, 32), (32, 32), 2),
    FakeSource("beta", "CC0-1.0", 10.0, "jpg", (48, 48), (32, 32), 2),
    FakeSource("gamma", "academic", None, "png", (40, 24), (40, 24), 1),
)
TILES_PER_SCENE = 4
#: (source, scene, index in scene) → why the tile is filtered
FILTERED = {
    ("alpha", 1, 3): "mostly nodata (61% of the tile)",
    ("beta", 0, 3): "blank tile (one constant colour)",
    ("beta", 1, 2): "low richness (0.01 < 0.05)",
    ("gamma", 0, 3): "mostly nodata (80% of the tile)",
}
#: dedup groups: (kept (source, scene, index) or None for a leak group, [(member, reason)])
GROUPS = (
    (("alpha", 0, 0), [(("alpha", 0, 1), "exact")]),
    (("alpha", 0, 2), [(("beta", 0, 0), "near"), (("beta", 0, 1), "near")]),
    (None, [(("gamma", 0, 0), "leak")]),
    (("beta", 1, 0), [(("gamma", 0, 1), "geo")]),
)
ERRORS = (
    {"path": "broken.tif", "source": "gamma", "stage": "scan", "reason": "not a raster GDAL can open"},
    {"path": "cut.tif", "source": "beta", "stage": "tile", "reason": "truncated file"},
    {"path": "six.tif", "source": "beta", "stage": "tile", "reason": "6 bands, none marked red/green/blue"},
)


@dataclass
class Corpus:
    """What :func:`make_corpus` wrote: the folder and the stored bytes of every stored tile by ``tile_id``."""

    out: Path
    data: dict[str, bytes] = field(default_factory=dict)
    key_of: dict[tuple[str, int, int], str] = field(default_factory=dict)

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout(self.out)


def _pixels(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random RGB image ``uint8 [H, W, 3]`` (compresses like imagery, not like noise)."""
    base = rng.integers(0, 256, (max(height // 8, 1) + 1, max(width // 8, 1) + 1, 3)).astype(np.float32)
    ys = np.linspace(0, base.shape[0] - 1, height).astype(int)
    xs = np.linspace(0, base.shape[1] - 1, width).astype(int)
    noise = rng.integers(0, 24, (height, width, 3))
    return np.clip(base[ys][:, xs] + noise, 0, 255).astype(np.uint8)


def _tile_row(src: FakeSource, scene: int, k: int, unit: int) -> dict:
    scene_path = f"{src.name}/scene{scene}.tif"
    w, h = src.window
    x = k * w
    row = {"tile_id": mf.make_tile_id(src.name, scene_path, x, 0, w, h),
           "scene_id": mf.make_scene_id(src.name, scene_path), "source": src.name, "scene_path": scene_path,
           "split": "train", "licence": src.licence, "x": x, "y": 0, "width": w, "height": h, "bands": 3,
           "dtype": "uint8", "gsd_m": src.gsd_m, "crs": "EPSG:32618" if src.gsd_m else None,
           "nodata_frac": 0.0, "richness": float(5 + 7 * unit + 3 * scene + k)}
    if src.stored != src.window:
        row.update(out_width=src.stored[0], out_height=src.stored[1])
    return row


def _write_unit(corpus: Corpus, src: FakeSource, unit: int, rng: np.random.Generator) -> None:
    layout = corpus.layout
    rows = []
    with ShardWriter(layout.shard(unit)) as writer:
        for scene in range(src.scenes):
            for k in range(TILES_PER_SCENE):
                row = _tile_row(src, scene, k, unit)
                corpus.key_of[(src.name, scene, k)] = row["tile_id"]
                rows.append(row)
                reason = FILTERED.get((src.name, scene, k))
                if reason:
                    row.update(filter_reason=reason, richness=None)
                    continue
                data = encode(_pixels(rng, *src.stored), src.fmt)
                loc = writer.add(row["tile_id"], src.fmt, data, {"tile_id": row["tile_id"], "source": src.name})
                corpus.data[row["tile_id"]] = data
                row.update(sha256=hashlib.sha256(data).hexdigest(), phash=int(rng.integers(0, 2**63)),
                           dhash=int(rng.integers(0, 2**63)), shard=layout.shard_name(unit),
                           offset=loc.offset, length=loc.length, format=src.fmt)
    mf.write_table(mf.table_from_rows(rows, mf.TILES_SCHEMA), layout.tile_part(unit), mf.TILES_SCHEMA,
                   metadata={"shard": writer.info.__dict__})


def _dedup_rows(corpus: Corpus) -> list[dict]:
    """One dedup row per stored tile, with the groups of :data:`GROUPS`."""
    tiles = mf.read_parts(corpus.layout.tile_parts(), mf.TILES_SCHEMA, ["tile_id", "source", "scene_path",
                                                                         "filter_reason"]).to_pylist()
    by_id = {t["tile_id"]: {"tile_id": t["tile_id"], "source": t["source"], "scene_path": t["scene_path"]}
             for t in tiles if t["filter_reason"] is None}
    for group, (kept, members) in enumerate(GROUPS, start=101):
        if kept is not None:
            by_id[corpus.key_of[kept]].update(dup_group=group)
        for member, reason in members:
            of = corpus.key_of[kept] if kept is not None else None
            by_id[corpus.key_of[member]].update(dup_group=group, dup_of=of, dup_reason=reason,
                                                distance=0.0 if reason in ("exact", "leak") else 3.0)
    return sorted(by_id.values(), key=lambda r: r["tile_id"])


def _build_record(corpus: Corpus) -> None:
    tiles = mf.read_parts(corpus.layout.tile_parts(), mf.TILES_SCHEMA, ["filter_reason"])
    filtered = sum(1 for r in tiles["filter_reason"].to_pylist() if r)
    update_record(corpus.out, sources=[{"source": s.name, "licence": s.licence, "tile": {"format": s.fmt}}
                                       for s in SOURCES],
                  stages={"scan": {"scenes": sum(s.scenes for s in SOURCES), "errors": 1},
                          "tile": {"tiles": tiles.num_rows, "kept": tiles.num_rows - filtered,
                                   "filtered": filtered, "errors": 2}})


def make_corpus(out: Path, seed: int = 0, catalog: bool = True) -> Corpus:
    """Write the fake corpus into ``out`` (see the module docstring); ``catalog`` runs the catalog stage."""
    corpus = Corpus(Path(out))
    layout = corpus.layout
    rng = np.random.default_rng(seed)
    scenes = [{"scene_id": mf.make_scene_id(s.name, f"{s.name}/scene{i}.tif"), "source": s.name,
               "source_root": f"/data/{s.name}", "scene_path": f"{s.name}/scene{i}.tif", "licence": s.licence,
               "unit": unit} for unit, s in enumerate(SOURCES) for i in range(s.scenes)]
    mf.write_table(mf.table_from_rows(scenes, mf.SCENES_SCHEMA), layout.scenes, mf.SCENES_SCHEMA)
    for unit, src in enumerate(SOURCES):
        _write_unit(corpus, src, unit, rng)
    mf.write_table(mf.table_from_rows(_dedup_rows(corpus), mf.DEDUP_SCHEMA), layout.dedup, mf.DEDUP_SCHEMA)
    pairs = {"alpha | alpha": {"exact": 1}, "alpha | beta": {"near": 2}, "beta | beta": {"near": 1},
             "beta | gamma": {"geo": 1}}
    layout.dedup_report.write_text(json.dumps({"groups": len(GROUPS), "pairs_by_source": pairs}))
    mf.write_table(mf.table_from_rows(list(ERRORS), mf.ERRORS_SCHEMA), layout.errors, mf.ERRORS_SCHEMA)
    _build_record(corpus)
    if catalog:
        update_record(out, stages={"catalog": run_catalog(out)})
    return corpus
