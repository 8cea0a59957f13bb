"""Window math (pure): grid tiles with stride, seeded multi-scale random crops, output sizes.

Edge tiles are shifted inward so every tile is full size; nothing is padded. An image no larger than the tile
in a dimension gets one window spanning that whole dimension (so a small image is exactly one tile, whole).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Window(NamedTuple):
    """A window in scene pixels: column ``x``, row ``y``, ``width``, ``height``."""

    x: int
    y: int
    width: int
    height: int


def axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride`` pixels, the last one shifted inward to end at ``length``."""
    if tile < 1 or stride < 1:
        raise ValueError("tile and stride must be at least 1")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def grid_windows(width: int, height: int, tile_px: int, stride_px: int | None = None) -> list[Window]:
    """Row-major grid windows of ``tile_px`` every ``stride_px`` (default: ``tile_px``), all inside the image."""
    stride = stride_px or tile_px
    w, h = min(tile_px, width), min(tile_px, height)
    return [Window(x, y, w, h) for y in axis_starts(height, tile_px, stride) for x in axis_starts(width, tile_px, stride)]


def random_windows(width: int, height: int, crop_min: int, crop_max: int, seed: int,
                   count: int | None = None) -> list[Window]:
    """Seeded square crops with edges uniform in ``[crop_min, crop_max]`` (clipped to the image).

    Without ``count``, as many crops as it takes for their total area to reach twice the image area (so the
    scene is covered about twice over, as the paper's multi-scale slicing intends), at least one. An image no
    larger than ``crop_min`` in both dimensions is one window, whole. Deterministic for a given seed.
    """
    if crop_min > crop_max:
        raise ValueError("crop_min is larger than crop_max")
    if width <= crop_min and height <= crop_min:
        return [Window(0, 0, width, height)]
    rng = np.random.default_rng(seed)
    windows: dict[Window, None] = {}  # ordered set: the same window twice would be the same tile twice
    covered, target, draws = 0, 2 * width * height, 0
    while (count is None and covered < target) or (count is not None and len(windows) < count):
        draws += 1
        if draws > 100 * (count or 1) + 10_000:
            break  # a tiny image has few distinct windows
        edge = int(rng.integers(crop_min, crop_max + 1))
        w, h = min(edge, width), min(edge, height)
        win = Window(int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h)
        if win not in windows:
            windows[win] = None
            covered += w * h
    return list(windows)


def output_size(win: Window, out_size: int | None) -> tuple[int, int]:
    """Stored (width, height) of a window: ``out_size`` square when resizing, else the window's size."""
    return (out_size, out_size) if out_size else (win.width, win.height)
