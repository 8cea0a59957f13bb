"""Work units: the sorted scene list cut into batches, each of which becomes one shard and one tiles part.

A unit holds the scenes of one source. By default it closes after ``scenes_per_unit`` scenes. With
``shard_bytes`` set (recipe key, per source or in ``[build]``) it closes instead once the estimated stored
bytes of its scenes reach ``shard_bytes``, so that a dataset of small images yields shards of a size that
suits streaming from object storage (WebDataset, LitData and Mosaic suggest 64 MB – 1 GB) rather than
thousands of shards of a few MB, and one of huge scenes yields no multi-GB shards.

The estimate is made at scan time from each scene's pixel size and the source's tiling (the windows the tile
stage will cut, or ``out_size``), times the bytes one RGB pixel takes in the tile format, plus the tar
headers of each tile. It only decides where units end: tiles, tile ids and their bytes do not depend on it.
"""

from __future__ import annotations

from rs4m.config import TileConfig
from rs4m.tiling import grid_windows

#: stored bytes per RGB pixel, the upper end measured on 256² tiles of four real aerial/satellite images
#: (jpg q95: 0.24–0.60, png level 1: 0.90–1.90, lossless webp: 0.59–1.27)
BYTES_PER_PIXEL = {"jpg": 0.6, "png": 1.9, "webp": 1.3}
#: two tar headers (image + json), the json member and the average padding of each tile
TAR_BYTES_PER_TILE = 3 * 512 + 512


def stored_pixels(scene: dict, cfg: TileConfig) -> tuple[int, int]:
    """``(tiles, pixels)`` the tile stage will store for a scene row (``width``, ``height``) under ``cfg``.

    Grid mode counts the actual windows; random mode, whose windows depend on a per-scene seed, is
    estimated as covering the scene once.
    """
    width, height = int(scene["width"]), int(scene["height"])
    if cfg.mode == "grid":
        windows = grid_windows(width, height, cfg.tile_size, cfg.stride_px)
        tiles = len(windows)
        pixels = sum(w.width * w.height for w in windows)
    else:
        side = (cfg.crop_min + cfg.crop_max) // 2
        tiles = max(1, (width * height) // (side * side))
        pixels = width * height
    return tiles, (tiles * cfg.out_size * cfg.out_size if cfg.out_size else pixels)


def estimated_bytes(scene: dict, cfg: TileConfig) -> int:
    """Estimated bytes a scene adds to its shard."""
    tiles, pixels = stored_pixels(scene, cfg)
    return int(pixels * BYTES_PER_PIXEL[cfg.format]) + tiles * TAR_BYTES_PER_TILE


def assign_units(rows: list[dict], configs: dict[str, TileConfig]) -> list[dict]:
    """Sort scene rows by (source, scene_path) and number work units in that order (``row["unit"]``).

    ``configs`` maps each source to its tiling; a unit never spans two sources and holds at least one scene.
    """
    rows.sort(key=lambda r: (r["source"], r["scene_path"]))
    unit, count, size, current = -1, 0, 0, None
    for row in rows:
        cfg = configs[row["source"]]
        full = size >= cfg.shard_bytes if cfg.shard_bytes else count == cfg.scenes_per_unit
        if row["source"] != current or full:
            unit, count, size, current = unit + 1, 0, 0, row["source"]
        row["unit"] = unit
        count += 1
        size += estimated_bytes(row, cfg) if cfg.shard_bytes else 0
    return rows
