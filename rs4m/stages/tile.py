"""Tile stage: each work unit (a batch of scenes of one source) → one tar shard + one tiles part.

Pixels are decoded once per window (a PNG of 64 MP or more row by row, holding only the band of rows its windows
need: :mod:`rs4m.png_stream`; its windows are then tiled and stored by top row, which reorders random crops, not
grid tiles, and changes no tile's bytes): while a tile is in memory the stage measures nodata and blankness,
computes the richness score, encodes it, hashes the stored bytes and the pixels (sha256, pHash, dHash) and
appends it to the unit's shard. Filtered tiles are rows with a ``filter_reason`` and no bytes.

A scene is all or nothing: its members are appended to the shard as it is tiled, and when any step of the
scene fails (whatever the exception) the shard is rolled back to where the scene began, its rows are dropped and it
becomes one error row; the unit's other scenes go on. A scene whose file changed since the scan (size, type or pixel
size) is such an error. A unit that fails all the same (its worker died: a reader that crashes) has each scene tiled
alone in a throwaway shard, and runs again with the scenes that crash alone as error rows; a unit that still fails (a
bug) is an error row of stage ``unit``.

With overlap search on (``features``), the local features of every stored tile are computed from the same pixels
(:mod:`rs4m.overlap.store`) and written to the unit's features part before its tiles part; a tile whose
features fail is a features row without features, never a failed scene.

A unit is done when its tiles part (written last, after its shard, its errors part and its features part) is
readable and its shard agrees with the facts the part records (size, and a tar header before every stored tile
naming it); a restart redoes the others from scratch, so a killed or damaged build resumes with nothing lost or doubled.
Windows whose blocks a sparse GeoTIFF does not store are skipped without a row; a scene with no stored block
at all is an error row. Units are pure functions of their inputs: the output is identical whatever the engine
or worker count.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import attrgetter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import shapely
from PIL import Image

from rs4m import manifest as mf
from rs4m.codec import encode
from rs4m.config import FilterConfig, TileConfig
from rs4m.engines import Engine, UnitFailure
from rs4m.errors import BadInput
from rs4m.hashing import hashes_with_canonical, pixel_hash
from rs4m.killpoints import kill_point
from rs4m.layout import OutputLayout
from rs4m.raster import SceneReader, open_scene
from rs4m.richness import tile_richness
from rs4m.shards import ShardWriter
from rs4m.sources import SceneRef
from rs4m.stages.unitfiles import clean_partial, done_units, merge_unit_errors, write_shards_table
from rs4m.tiling import Window, crop_seed, grid_windows, random_windows
from rs4m.whole_decode import check_regular, scene_file

HASH_BATCH = 64
SCENE_COLUMNS = ["scene_id", "source", "source_root", "scene_path", "band_paths", "rgb_bands", "split",
                 "licence", "bands", "dtype", "gsd_m", "crs", "width", "height", "bytes", "unit"]


@dataclass(frozen=True)
class UnitTask:
    """Everything one work unit needs (picklable): its scenes and the source's tiling and filters."""

    unit: int
    out: str
    tile: TileConfig
    filters: FilterConfig
    scenes: tuple[dict, ...]
    #: scene paths that killed their worker when tiled alone: error rows, never read again in this run
    crashed: tuple[str, ...] = ()
    #: compute and write the local features of every stored tile (overlap search on)
    features: bool = False


def scene_windows(scene: dict, cfg: TileConfig) -> list[Window]:
    """The windows of a scene under ``cfg`` (grid or seeded random crops)."""
    width, height = scene["width"], scene["height"]
    if cfg.mode == "random":
        return random_windows(width, height, cfg.crop_min, cfg.crop_max, crop_seed(scene["scene_id"], cfg.seed))
    return grid_windows(width, height, cfg.tile_size, cfg.stride_px)


def filter_reason(rgb: np.ndarray, valid: np.ndarray, richness: float | None, f: FilterConfig,
                  nodata: float | None = None) -> str | None:
    """Why a tile is dropped, in words, or None to keep it (the richness test only where ``richness`` is given;
    ``nodata``: :func:`nodata_fraction` of ``valid`` where the caller has it)."""
    if nodata is None:
        nodata = nodata_fraction(valid)
    if nodata > f.max_nodata_frac:
        return f"mostly nodata ({nodata:.0%} of the tile)"
    if f.drop_blank and (one_colour_where(rgb, valid) if nodata > 0 else one_colour(rgb)):
        return "blank tile (one constant colour)"
    return richness_reason(richness, f)


def nodata_fraction(valid: np.ndarray) -> float:
    """The share of invalid pixels of a bool mask ``[h, w]`` (1.0 for an empty one).

    A count, not ``valid.mean()``: the same float (an exact count over the size, rounded once) ~20× faster,
    as the mean sums the mask in float64.
    """
    return 1.0 - int(np.count_nonzero(valid)) / valid.size if valid.size else 1.0


def richness_reason(richness: float | None, f: FilterConfig) -> str | None:
    """The low-richness reason of :func:`filter_reason` alone (for a tile that passed the other tests)."""
    if richness is not None and richness < f.min_richness:
        return f"low richness ({richness:.3g} < {f.min_richness:g})"
    return None


def one_colour(pix: np.ndarray) -> bool:
    """Whether every pixel of ``uint8 [..., 3]`` has the same colour (True for none).

    Each byte is compared with the one 3 before it, contiguous and first on one row's worth, so a textured
    tile answers after a few hundred bytes (a per-channel min/max over axis 0 took ~5 ms per 512² tile).
    """
    flat = np.ascontiguousarray(pix).reshape(-1)
    if flat.size <= 3:
        return True
    head = flat[: 3 * 1024]
    if not np.array_equal(head[3:], head[:-3]):
        return False
    return bool(np.array_equal(flat[3:], flat[:-3]))


#: rows of a tile compared at a time by :func:`one_colour_where`
_BLANK_BLOCK_ROWS = 32


def one_colour_where(rgb: np.ndarray, valid: np.ndarray) -> bool:
    """``one_colour(rgb[valid])`` of ``uint8 [H, W, 3]`` and a bool mask ``[H, W]``, without gathering the valid
    pixels: blocks of rows are compared with the first valid pixel's colour, so a textured tile answers after
    its first block (the gather alone took ~2.5 ms per 512² tile)."""
    flat = valid.reshape(-1)
    first = int(np.argmax(flat))
    if not flat[first]:
        return True  # no valid pixel
    colour = rgb.reshape(-1, rgb.shape[-1])[first]
    for top in range(first // valid.shape[1], valid.shape[0], _BLANK_BLOCK_ROWS):
        block = rgb[top : top + _BLANK_BLOCK_ROWS]
        differs = block[..., 0] != colour[0]
        for band in range(1, rgb.shape[-1]):
            differs |= block[..., band] != colour[band]
        differs &= valid[top : top + _BLANK_BLOCK_ROWS]
        if differs.any():
            return False
    return True


class OutputWriteError(Exception):
    """The unit's shard cannot be written (disk full, read-only OUT): the unit fails, not the scene."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _base_row(scene: dict, win: Window) -> dict:
    return {
        "tile_id": mf.make_tile_id(scene["source"], scene["scene_path"], *win),
        "scene_id": scene["scene_id"], "source": scene["source"], "scene_path": scene["scene_path"],
        "split": scene["split"], "licence": scene["licence"], "x": win.x, "y": win.y,
        "width": win.width, "height": win.height, "bands": scene["bands"], "dtype": scene["dtype"],
        "gsd_m": scene["gsd_m"], "crs": scene["crs"],
    }


#: a kept tile waiting for its batch: its row, its pixels and their Pillow ``L`` image (for the hashes)
Kept = tuple[dict, np.ndarray, Image.Image]


def _store_batch(batch: list[Kept], writer: ShardWriter, cfg: TileConfig, shard: str) -> None:
    """Encode, hash and append a batch of kept tiles (rows are completed in place)."""
    phashes, dhashes, pcanon, dcanon = hashes_with_canonical([rgb for _, rgb, _ in batch],
                                                             [grey for _, _, grey in batch])
    for (row, rgb, _), ph, dh, p_canon, d_canon in zip(batch, phashes, dhashes, pcanon, dcanon, strict=True):
        want = (row.get("out_height") or row["height"], row.get("out_width") or row["width"], 3)
        if rgb.shape != want:  # never store pixels that disagree with their row
            raise BadInput("the decoded tile does not have the size of its window",
                           f"tile {row['tile_id']}: pixels {rgb.shape}, row {want}")
        data = encode(rgb, cfg.format, cfg.quality)
        meta = {k: row[k] for k in ("tile_id", "source", "scene_path", "x", "y", "width", "height", "licence")}
        try:
            loc = writer.add(row["tile_id"], cfg.format, data, meta)
        except OSError as err:
            raise OutputWriteError(err) from err
        row.update(sha256=hashlib.sha256(data).hexdigest(), pixel_sha256=pixel_hash(rgb), phash=int(ph),
                   dhash=int(dh), phash_canonical=int(p_canon), dhash_canonical=int(d_canon), shard=shard,
                   offset=loc.offset, length=loc.length, format=cfg.format)


def check_unchanged(scene: dict) -> None:
    """Refuse a scene whose file(s) are no longer regular files of the size the scan recorded."""
    root = Path(scene["source_root"])
    rels = scene["band_paths"] or [scene["scene_path"]]
    files = [scene_file(root, rel) for rel in rels]
    sizes = [check_regular(path) for path in files]
    same_files = all(f == root / r for f, r in zip(files, rels, strict=True))
    if scene["bytes"] is not None and same_files and sum(sizes) != scene["bytes"]:
        raise BadInput(f"the file changed since the scan ({scene['bytes']} bytes then, {sum(sizes)} now); "
                       "scan again to include it", scene["scene_path"])


def _check_size(scene: dict, reader: SceneReader) -> None:
    if (reader.info.width, reader.info.height) != (scene["width"], scene["height"]):
        raise BadInput(f"the file changed since the scan ({scene['width']}x{scene['height']} pixels then, "
                       f"{reader.info.width}x{reader.info.height} now); scan again to include it")


def _flush(batch: list[Kept], writer: ShardWriter, cfg: TileConfig, shard: str,
           features: list[dict] | None) -> None:
    """Store a batch of kept tiles and, with ``features`` (a list), append their features rows to it."""
    _store_batch(batch, writer, cfg, shard)
    if features is not None:
        from rs4m.overlap.store import tile_features_row

        features.extend(tile_features_row(row["tile_id"], row["scene_id"], rgb) for row, rgb, _ in batch)


def tile_scene(scene: dict, task: UnitTask, writer: ShardWriter, shard: str,
               features: list[dict] | None = None) -> list[dict]:
    """Cut one scene into tiles, storing the kept ones; returns the rows (kept and filtered). With
    ``features`` (a list), the features rows of the stored tiles are appended to it.

    Raises :class:`BadInput` (or anything else) with members of the scene possibly stored: the caller rolls
    the shard back.
    """
    cfg, root = task.tile, Path(scene["source_root"])
    ref = SceneRef(scene["scene_path"], scene["split"], tuple(scene["band_paths"] or ()),
                   tuple(scene["rgb_bands"]) if scene["rgb_bands"] else None)
    out_size = (cfg.out_size, cfg.out_size) if cfg.out_size else None
    rows: list[dict] = []
    batch: list[Kept] = []
    check_unchanged(scene)
    windows = scene_windows(scene, cfg)
    window_rows = max((win.height for win in windows), default=0)
    with open_scene(root, ref, max_pixels=cfg.max_pixels, max_scene_pixels=cfg.max_scene_pixels,
                    max_scene_bytes=cfg.max_scene_bytes, window_rows=window_rows) as reader:
        _check_size(scene, reader)
        if reader.row_ordered:  # a large PNG decoded row by row: its windows by top row (grid ones already are)
            windows = sorted(windows, key=attrgetter("y"))
        for win in windows:
            if reader.window_is_empty(*win):  # a sparse file stores nothing there: no pixels, no row
                continue
            rgb, valid = reader.read_window(win.x, win.y, win.width, win.height, out_size=out_size)
            row = _base_row(scene, win)
            if out_size:
                row.update(out_width=rgb.shape[1], out_height=rgb.shape[0])
            footprint = reader.window_footprint(*win)
            row["geometry"] = shapely.to_wkb(footprint) if footprint is not None else None
            row["nodata_frac"] = nodata_fraction(valid)
            reason = filter_reason(rgb, valid, None, task.filters, row["nodata_frac"])
            image = None
            if reason is None:  # nodata and blank tests passed: only the richness test is left
                image = Image.fromarray(rgb)  # one Pillow copy for the richness resize and the hashes' L image
                row["richness"] = tile_richness(rgb, image)
                reason = richness_reason(row["richness"], task.filters)
            rows.append(row)
            if reason is not None or image is None:  # no image only where a filter test failed
                row["filter_reason"] = reason
                continue
            batch.append((row, rgb, image.convert("L")))
            if len(batch) == HASH_BATCH:
                _flush(batch, writer, cfg, shard, features)
                batch = []
    if batch:
        _flush(batch, writer, cfg, shard, features)
    if windows and not rows:
        raise BadInput(f"the file declares {scene['width']}x{scene['height']} pixels but stores none of them "
                       "(every block is empty)", scene["scene_path"])
    return rows


def scene_error(scene: dict, err: Exception) -> dict:
    """The error row of a scene that failed with ``err`` (any exception: a bad file is never a crash)."""
    if isinstance(err, BadInput):
        reason, detail = err.reason, err.detail
    elif isinstance(err, MemoryError):
        reason, detail = "out of memory while tiling the scene", "MemoryError"
    else:
        reason = f"the scene could not be tiled: unexpected {type(err).__name__}"
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
    return {"path": scene["scene_path"], "source": scene["source"], "stage": "tile", "reason": reason,
            "detail": detail}


def tile_unit(task: UnitTask) -> dict:
    """Run one work unit: write its shard, errors part, features part (with ``task.features``) and tiles part
    (in that order). Returns counts."""
    layout = OutputLayout(Path(task.out))
    shard = layout.shard_name(task.unit)
    rows: list[dict] = []
    errors: list[dict] = []
    feature_rows: list[dict] = []
    with ShardWriter(layout.shard(task.unit)) as writer:
        for scene in task.scenes:
            if scene["scene_path"] in task.crashed:
                errors.append({"path": scene["scene_path"], "source": scene["source"], "stage": "tile",
                               "reason": "tiling the scene crashed its worker process (a reader bug?); "
                                         "it is left out", "detail": ""})
                continue
            mark = writer.mark()
            scene_features: list[dict] | None = [] if task.features else None
            try:
                rows.extend(tile_scene(scene, task, writer, shard, scene_features))
                feature_rows.extend(scene_features or ())
            except OutputWriteError as err:
                raise err.error from None
            except Exception as err:  # noqa: BLE001 - any per-scene failure is that scene's error row
                writer.rollback(mark)
                errors.append(scene_error(scene, err))
    info = writer.info
    mf.write_table(mf.table_from_rows(errors, mf.ERRORS_SCHEMA), layout.unit_errors(task.unit), mf.ERRORS_SCHEMA)
    if task.features:
        from rs4m.overlap.store import write_features_part

        write_features_part(layout.feature_part(task.unit), feature_rows)
        kill_point("tile:features")  # a kill here leaves a features part without its tiles part: the unit is redone
    mf.write_table(mf.table_from_rows(rows, mf.TILES_SCHEMA), layout.tile_part(task.unit), mf.TILES_SCHEMA,
                   metadata={"shard": info.__dict__})
    kept = sum(1 for r in rows if r.get("shard"))
    return {"tiles": len(rows), "kept": kept, "filtered": len(rows) - kept, "errors": len(errors),
            "feature_errors": sum(1 for r in feature_rows if r.get("feature_error"))}


def unit_tasks(out: Path, recipe_sources: dict[str, dict], filters: FilterConfig,
               features: bool = False) -> list[UnitTask]:
    """Work units from ``scenes.parquet``; ``recipe_sources`` maps source → its TileConfig fields."""
    layout = OutputLayout(out)
    scenes = mf.read_table(layout.scenes, mf.SCENES_SCHEMA, columns=SCENE_COLUMNS).to_pylist()
    by_unit: dict[int, list[dict]] = {}
    for s in scenes:
        by_unit.setdefault(s["unit"], []).append(s)
    return [UnitTask(u, str(out), TileConfig(**recipe_sources[rows[0]["source"]]), filters, tuple(rows),
                     features=features) for u, rows in sorted(by_unit.items())]


def trial_scene(task: UnitTask) -> bool:
    """Tile the one scene of ``task`` into a throwaway shard: returns when it does not kill its worker."""
    with tempfile.TemporaryDirectory(prefix="rs4m-trial-") as tmp:
        writer = ShardWriter(Path(tmp) / "trial.tar")
        try:
            tile_scene(task.scenes[0], task, writer, "trial.tar")
        except Exception:  # noqa: BLE001, S110 - in the real run this is the scene's error row, not a crash
            pass
        finally:
            writer.abort()
    return True


def rerun_without_crashers(engine: Engine, failed: list[tuple[UnitTask, str]]):
    """Units that failed as a whole: each scene is tiled alone (a trial) to find those that kill their worker,
    and the units holding any run again with those scenes as error rows. Yields (task, result) of the reruns
    and (task, UnitFailure) of units none of whose scenes crashes alone (their failure is not a scene's)."""
    trials = [replace(task, scenes=(scene,)) for task, _ in failed for scene in task.scenes]
    crashed: dict[int, set[str]] = {}
    for trial, result in engine.map_units(trial_scene, trials):
        if isinstance(result, UnitFailure):
            crashed.setdefault(trial.unit, set()).add(trial.scenes[0]["scene_path"])
    for task, error in failed:
        if task.unit not in crashed:
            yield task, UnitFailure(error)
    reruns = [replace(task, crashed=tuple(sorted(crashed[task.unit]))) for task, _ in failed if task.unit in crashed]
    yield from engine.map_units(tile_unit, reruns)


def unit_error(layout: OutputLayout, task: UnitTask, error: str) -> dict:
    """The error row (stage ``unit``) of a work unit that failed as a whole: none of its scenes is in the build."""
    part = layout.tile_part(task.unit)
    first = error.strip().splitlines()[-1] if error.strip() else "unknown error"
    return {"path": f"{part.parent.name}/{part.name}", "source": task.scenes[0]["source"], "stage": "unit",
            "reason": f"work unit {task.unit} ({len(task.scenes)} scenes) failed and wrote no tiles: {first}",
            "detail": error}


def run_tile(out: Path, recipe_sources: dict[str, dict], filters: FilterConfig, engine: Engine,
             force: bool = False, progress: Callable[[dict], None] | None = None, features: bool = False) -> dict:
    """Tile every pending unit of ``OUT`` (all with ``force``). With ``features`` (overlap search on) a unit is
    pending also when its features part is missing or incomplete. Returns counts for the summary."""
    layout = OutputLayout(Path(out))
    start = time.perf_counter()
    tasks = unit_tasks(Path(out), recipe_sources, filters, features)
    if force:
        for task in tasks:
            for path in layout.unit_files(task.unit):
                path.unlink(missing_ok=True)
    done = done_units(layout, features)
    clean_partial(layout, done, [t.unit for t in tasks])
    pending = [t for t in tasks if t.unit not in done]
    first_failures = []
    feature_errors = 0
    for task, result in engine.map_units(tile_unit, pending):
        if isinstance(result, UnitFailure):
            first_failures.append((task, result.error))
            continue
        feature_errors += result.get("feature_errors", 0)
        if progress:
            progress(result)
    failed, unit_rows = [], []
    for task, result in rerun_without_crashers(engine, first_failures) if first_failures else ():
        if isinstance(result, UnitFailure):
            failed.append({"unit": task.unit, "error": result.error})
            unit_rows.append(unit_error(layout, task, result.error))
            continue
        feature_errors += result.get("feature_errors", 0)
        if progress:
            progress(result)
    write_shards_table(layout)
    errors = merge_unit_errors(layout, unit_rows)
    table = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, columns=["tile_id", "filter_reason"])
    filtered = int(pc.sum(pc.is_valid(table["filter_reason"])).as_py() or 0)
    counts = {"units": len(tasks), "units_run": len(pending), "units_failed": failed, "tiles": table.num_rows,
              "kept": table.num_rows - filtered, "filtered": filtered, "errors": errors,
              "seconds": time.perf_counter() - start}
    if features:  # only then: the counts of a build without overlap search stay as they were
        counts["feature_errors"] = feature_errors
    return counts
