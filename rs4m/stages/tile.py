"""Tile stage: each work unit (a batch of scenes of one source) → one tar shard + one tiles part.

Pixels are decoded once per window: while a tile is in memory the stage measures nodata and blankness,
computes the richness score, encodes it, hashes the stored bytes and the pixels (sha256, pHash, dHash) and
appends it to the unit's shard. Filtered tiles are rows with a ``filter_reason`` and no bytes.

A unit is done when its tiles part exists (written last, after its shard and its errors part); a restart
skips done units and redoes the others from scratch, so a killed build resumes with nothing lost or doubled.
Units are pure functions of their inputs: the output is identical whatever the engine or worker count.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc
import shapely

from rs4m import manifest as mf
from rs4m.codec import encode
from rs4m.config import FilterConfig, TileConfig
from rs4m.engines import Engine, UnitFailure
from rs4m.errors import BadInput
from rs4m.hashing import hashes_with_canonical, pixel_hash
from rs4m.layout import OutputLayout, leftover_files
from rs4m.raster import open_scene
from rs4m.richness import tile_richness
from rs4m.shards import ShardWriter
from rs4m.stages.errors_table import replace_stage_errors
from rs4m.tiling import Window, grid_windows, random_windows
from rs4m.sources import SceneRef

HASH_BATCH = 64
SCENE_COLUMNS = ["scene_id", "source", "source_root", "scene_path", "band_paths", "rgb_bands", "split",
                 "licence", "bands", "dtype", "gsd_m", "crs", "width", "height", "unit"]


@dataclass(frozen=True)
class UnitTask:
    """Everything one work unit needs (picklable): its scenes and the source's tiling and filters."""

    unit: int
    out: str
    tile: TileConfig
    filters: FilterConfig
    scenes: tuple[dict, ...]


def scene_windows(scene: dict, cfg: TileConfig) -> list[Window]:
    """The windows of a scene under ``cfg`` (grid or seeded random crops)."""
    width, height = scene["width"], scene["height"]
    if cfg.mode == "random":
        seed = int(scene["scene_id"][:12], 16) ^ cfg.seed
        return random_windows(width, height, cfg.crop_min, cfg.crop_max, seed)
    return grid_windows(width, height, cfg.tile_size, cfg.stride_px)


def filter_reason(rgb: np.ndarray, valid: np.ndarray, richness: float | None, f: FilterConfig) -> str | None:
    """Why a tile is dropped, in words, or None to keep it."""
    nodata = 1.0 - float(valid.mean()) if valid.size else 1.0
    if nodata > f.max_nodata_frac:
        return f"mostly nodata ({nodata:.0%} of the tile)"
    if f.drop_blank:
        pix = rgb[valid] if nodata > 0 else rgb.reshape(-1, 3)
        if pix.size == 0 or bool((pix.min(axis=0) == pix.max(axis=0)).all()):
            return "blank tile (one constant colour)"
    if richness is not None and richness < f.min_richness:
        return f"low richness ({richness:.3g} < {f.min_richness:g})"
    return None


def _base_row(scene: dict, win: Window) -> dict:
    return {
        "tile_id": mf.make_tile_id(scene["source"], scene["scene_path"], *win),
        "scene_id": scene["scene_id"], "source": scene["source"], "scene_path": scene["scene_path"],
        "split": scene["split"], "licence": scene["licence"], "x": win.x, "y": win.y,
        "width": win.width, "height": win.height, "bands": scene["bands"], "dtype": scene["dtype"],
        "gsd_m": scene["gsd_m"], "crs": scene["crs"],
    }


def _store_batch(batch: list[tuple[dict, np.ndarray]], writer: ShardWriter, cfg: TileConfig, shard: str) -> None:
    """Encode, hash and append a batch of kept tiles (rows are completed in place)."""
    phashes, dhashes, pcanon, dcanon = hashes_with_canonical([rgb for _, rgb in batch])
    for (row, rgb), ph, dh, pc, dc in zip(batch, phashes, dhashes, pcanon, dcanon):
        data = encode(rgb, cfg.format, cfg.quality)
        meta = {k: row[k] for k in ("tile_id", "source", "scene_path", "x", "y", "width", "height", "licence")}
        loc = writer.add(row["tile_id"], cfg.format, data, meta)
        row.update(sha256=hashlib.sha256(data).hexdigest(), pixel_sha256=pixel_hash(rgb), phash=int(ph),
                   dhash=int(dh), phash_canonical=int(pc), dhash_canonical=int(dc), shard=shard, offset=loc.offset, length=loc.length, format=cfg.format)


def tile_scene(scene: dict, task: UnitTask, writer: ShardWriter, shard: str, rows: list[dict]) -> None:
    """Cut one scene into tiles, appending rows (kept and filtered) to ``rows``; raises :class:`BadInput`."""
    cfg, root = task.tile, Path(scene["source_root"])
    ref = SceneRef(scene["scene_path"], scene["split"], tuple(scene["band_paths"] or ()),
                   tuple(scene["rgb_bands"]) if scene["rgb_bands"] else None)
    out_size = (cfg.out_size, cfg.out_size) if cfg.out_size else None
    batch: list[tuple[dict, np.ndarray]] = []
    with open_scene(root, ref, max_pixels=cfg.max_pixels) as reader:
        for win in scene_windows(scene, cfg):
            rgb, valid = reader.read_window(win.x, win.y, win.width, win.height, out_size=out_size)
            row = _base_row(scene, win)
            if out_size:
                row.update(out_width=rgb.shape[1], out_height=rgb.shape[0])
            footprint = reader.window_footprint(*win)
            row["geometry"] = shapely.to_wkb(footprint) if footprint is not None else None
            row["nodata_frac"] = 1.0 - float(valid.mean())
            reason = filter_reason(rgb, valid, None, task.filters)
            if reason is None:
                row["richness"] = tile_richness(rgb)
                reason = filter_reason(rgb, valid, row["richness"], task.filters)
            rows.append(row)
            if reason is not None:
                row["filter_reason"] = reason
                continue
            batch.append((row, rgb))
            if len(batch) == HASH_BATCH:
                _store_batch(batch, writer, cfg, shard)
                batch = []
    if batch:
        _store_batch(batch, writer, cfg, shard)


def tile_unit(task: UnitTask) -> dict:
    """Run one work unit: write its shard, errors part and tiles part (in that order). Returns counts."""
    layout = OutputLayout(Path(task.out))
    shard = layout.shard_name(task.unit)
    rows: list[dict] = []
    errors: list[dict] = []
    with ShardWriter(layout.shard(task.unit)) as writer:
        for scene in task.scenes:
            before = len(rows)
            try:
                tile_scene(scene, task, writer, shard, rows)
            except BadInput as err:
                stored = sum(1 for r in rows[before:] if r.get("shard"))
                detail = err.detail + (f" ({stored} tiles stored before the failure)" if stored else "")
                errors.append({"path": scene["scene_path"], "source": scene["source"], "stage": "tile",
                               "reason": err.reason, "detail": detail})
    info = writer.info
    mf.write_table(mf.table_from_rows(errors, mf.ERRORS_SCHEMA), layout.unit_errors(task.unit), mf.ERRORS_SCHEMA)
    mf.write_table(mf.table_from_rows(rows, mf.TILES_SCHEMA), layout.tile_part(task.unit), mf.TILES_SCHEMA,
                   metadata={"shard": info.__dict__})
    kept = sum(1 for r in rows if r.get("shard"))
    return {"tiles": len(rows), "kept": kept, "filtered": len(rows) - kept, "errors": len(errors)}


def unit_tasks(out: Path, recipe_sources: dict[str, dict], filters: FilterConfig) -> list[UnitTask]:
    """Work units from ``scenes.parquet``; ``recipe_sources`` maps source → its TileConfig fields."""
    layout = OutputLayout(out)
    scenes = mf.read_table(layout.scenes, mf.SCENES_SCHEMA, columns=SCENE_COLUMNS).to_pylist()
    by_unit: dict[int, list[dict]] = {}
    for s in scenes:
        by_unit.setdefault(s["unit"], []).append(s)
    return [UnitTask(u, str(out), TileConfig(**recipe_sources[rows[0]["source"]]), filters, tuple(rows))
            for u, rows in sorted(by_unit.items())]


def clean_partial(layout: OutputLayout, done: set[int]) -> None:
    """Remove files of units that did not finish (a shard without its part) and stray temp files."""
    for tmp in leftover_files(layout.root):  # only temp names of the files a build writes
        if tmp.name.endswith(".tmp") and tmp.parent != layout.root:
            tmp.unlink(missing_ok=True)
    if layout.shards_dir.is_dir():
        for path in layout.shards_dir.glob("rs4m-[0-9][0-9][0-9][0-9][0-9].tar"):  # only names it writes
            unit = int(path.stem.split("-")[1])
            if unit not in done:
                path.unlink()


def done_units(layout: OutputLayout) -> set[int]:
    """Units whose tiles part and shard both exist."""
    return {int(p.stem.split("-")[1]) for p in layout.tile_parts()
            if layout.shard(int(p.stem.split("-")[1])).exists()}


def write_shards_table(layout: OutputLayout) -> int:
    """``shards.parquet`` from the shard facts each tiles part carries; returns the number of shards."""
    infos = [mf.read_metadata(p, "shard") for p in layout.tile_parts()]
    mf.write_table(mf.table_from_rows([i for i in infos if i], mf.SHARDS_SCHEMA), layout.shards_table)
    return len(infos)


def merge_unit_errors(layout: OutputLayout) -> int:
    """Fold the units' error parts into ``errors.parquet`` (stage ``tile``); returns their count."""
    parts = sorted(layout.unit_errors_dir.glob("part-*.parquet")) if layout.unit_errors_dir.is_dir() else []
    rows = mf.read_parts(parts, mf.ERRORS_SCHEMA).to_pylist()
    replace_stage_errors(layout, "tile", rows)
    return len(rows)


def run_tile(out: Path, recipe_sources: dict[str, dict], filters: FilterConfig, engine: Engine,
             force: bool = False, progress: Callable[[dict], None] | None = None) -> dict:
    """Tile every pending unit of ``OUT`` (all with ``force``). Returns counts for the summary."""
    layout = OutputLayout(Path(out))
    start = time.perf_counter()
    tasks = unit_tasks(Path(out), recipe_sources, filters)
    if force:
        for task in tasks:
            for path in (layout.tile_part(task.unit), layout.shard(task.unit), layout.unit_errors(task.unit)):
                path.unlink(missing_ok=True)
    done = done_units(layout)
    clean_partial(layout, done)
    pending = [t for t in tasks if t.unit not in done]
    failed = []
    for task, result in engine.map_units(tile_unit, pending):
        if isinstance(result, UnitFailure):
            failed.append({"unit": task.unit, "error": result.error})
        elif progress:
            progress(result)
    write_shards_table(layout)
    errors = merge_unit_errors(layout)
    table = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, columns=["tile_id", "filter_reason"])
    filtered = int(pc.sum(pc.is_valid(table["filter_reason"])).as_py() or 0)
    return {"units": len(tasks), "units_run": len(pending), "units_failed": failed, "tiles": table.num_rows,
            "kept": table.num_rows - filtered, "filtered": filtered, "errors": errors,
            "seconds": time.perf_counter() - start}
