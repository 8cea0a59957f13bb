"""Window math (pure, no IO): grid tiles with stride, seeded multi-scale random crops, output sizes.

Grid: edge tiles are shifted inward so every tile is full size; nothing is padded. An image no larger than the
tile in a dimension gets windows spanning that whole dimension (so a small image is exactly one tile, whole).

Random: square crops of random edge in [crop_min, crop_max] at random places (RS-4M's multi-scale slicing),
drawn until they cover every pixel of the scene; deterministic for a given seed (see :func:`crop_seed`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: random crops are first drawn at uniform places until their total area reaches this multiple of the scene's
#: area; then crops are placed over whatever is still uncovered
RANDOM_AREA_FACTOR = 0.5
#: a gap-filling crop has the gap within this fraction of its edge from its top-left corner (random jitter
#: that keeps the crop mostly over the uncovered area that follows in row-major order)
FILL_JITTER = 0.25


class Window(NamedTuple):
    """A window in scene pixels: column ``x``, row ``y``, ``width``, ``height``."""

    x: int
    y: int
    width: int
    height: int


def axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride`` pixels, the last one shifted inward to end at ``length``."""
    if tile < 1 or stride < 1:
        raise ValueError(f"tile and stride must be at least 1, not {tile} and {stride}")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def grid_windows(width: int, height: int, tile_px: int, stride_px: int | None = None) -> list[Window]:
    """Row-major grid windows of ``tile_px`` every ``stride_px`` pixels (default: ``tile_px``).

    All windows lie inside the image and are ``min(tile_px, width)`` × ``min(tile_px, height)``; the last row
    and column are shifted inward; with ``stride_px <= tile_px`` every pixel is covered. No duplicates.
    """
    stride = stride_px or tile_px
    w, h = min(tile_px, width), min(tile_px, height)
    return [Window(x, y, w, h) for y in axis_starts(height, tile_px, stride)
            for x in axis_starts(width, tile_px, stride)]


def crop_seed(scene_id: str, seed: int) -> int:
    """The seed of a scene's random crops: the first 48 bits of its (hexadecimal) scene id xor the recipe's
    ``seed``, so the same on every run, machine and Python version, and different from scene to scene."""
    return int(scene_id[:12], 16) ^ seed


def _draw(rng: np.random.Generator, width: int, height: int, crop_min: int, crop_max: int,
          around: tuple[int, int, int, int] | None = None) -> Window:
    """One square crop (clipped to the image) at a uniform place, or, with ``around`` = pixel box (x0, y0, x1,
    y1) no larger than the crop, one that contains the box near its top-left corner."""
    edge = int(rng.integers(crop_min, crop_max + 1))
    w, h = min(edge, width), min(edge, height)
    if around is None:
        return Window(int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h)
    x0, y0, x1, y1 = around
    return Window(_start_around(rng, x0, x1, w, width), _start_around(rng, y0, y1, h, height), w, h)


def _start_around(rng: np.random.Generator, start: int, end: int, size: int, length: int) -> int:
    """A start in [0, length - size] whose span of ``size`` contains [start, end), within the jitter."""
    high = min(start, length - size)
    low = min(high, max(0, end - size, start - int(size * FILL_JITTER)))
    return int(rng.integers(low, high + 1))


class _Coverage:
    """Which cells of a coarse grid are wholly inside some crop; cells are at most half the smallest crop, so
    a crop can always be placed around any cell and "every cell covered" means every pixel is covered."""

    def __init__(self, width: int, height: int, crop_min: int) -> None:
        self.size = (width, height)
        self.cx, self.cy = max(1, min(crop_min, width) // 2), max(1, min(crop_min, height) // 2)
        self.covered = np.zeros((math.ceil(height / self.cy), math.ceil(width / self.cx)), bool)

    def _inside(self, start: int, end: int, cell: int, length: int, n: int) -> slice:
        last = n - 1 if end >= length else end // cell - 1
        return slice(-(-start // cell), last + 1)

    def add(self, win: Window) -> None:
        width, height = self.size
        rows = self._inside(win.y, win.y + win.height, self.cy, height, self.covered.shape[0])
        cols = self._inside(win.x, win.x + win.width, self.cx, width, self.covered.shape[1])
        self.covered[rows, cols] = True

    def first_gap(self, start: int) -> tuple[int, tuple[int, int, int, int]] | None:
        """(flat index, pixel box) of the first uncovered cell at or after flat index ``start``, or None."""
        rest = self.covered.ravel()[start:]
        if rest.size == 0 or rest.all():
            return None
        flat = start + int(np.argmin(rest))
        r, c = divmod(flat, self.covered.shape[1])
        width, height = self.size
        box = (c * self.cx, r * self.cy, min((c + 1) * self.cx, width), min((r + 1) * self.cy, height))
        return flat, box


def random_windows(width: int, height: int, crop_min: int, crop_max: int, seed: int,
                   count: int | None = None) -> list[Window]:
    """Seeded square crops with edges uniform in ``[crop_min, crop_max]``, clipped to the image.

    Without ``count``: crops at uniform random places until their total area reaches
    :data:`RANDOM_AREA_FACTOR` × the image area, then, for each pixel still uncovered (scanning row-major), a
    crop of random size that contains it near its top-left corner, until every pixel is covered (in all about
    1.5–2.5× the image area for 64–1024 px crops on 2000–10000 px scenes). With ``count``: ``count`` distinct
    uniform crops (fewer only if the image has fewer), no coverage guarantee. An image no larger than ``crop_min``
    in both dimensions is one window, whole. Deterministic for a given ``seed`` (use :func:`crop_seed` for a
    per-scene seed); no duplicates.
    """
    if crop_min < 1 or crop_min > crop_max:
        raise ValueError(f"need 1 <= crop_min <= crop_max, not {crop_min} and {crop_max}")
    if width <= crop_min and height <= crop_min:
        return [Window(0, 0, width, height)]
    rng = np.random.default_rng(seed)
    windows: dict[Window, None] = {}  # ordered set: the same window twice would be the same tile twice
    area, target = 0, RANDOM_AREA_FACTOR * width * height
    for _ in range(100 * (count or 1) + 10_000):  # bounded: a tiny image has few distinct windows
        if (len(windows) >= count) if count is not None else (area >= target):
            break
        win = _draw(rng, width, height, crop_min, crop_max)
        if win not in windows:
            windows[win] = None
            area += win.width * win.height
    if count is None:
        _fill_gaps(windows, rng, width, height, crop_min, crop_max)
    return list(windows)


def _fill_gaps(windows: dict[Window, None], rng: np.random.Generator, width: int, height: int,
               crop_min: int, crop_max: int) -> None:
    """Add crops around uncovered places until the crops cover every pixel."""
    coverage = _Coverage(width, height, crop_min)
    for win in windows:
        coverage.add(win)
    start = 0
    while (gap := coverage.first_gap(start)) is not None:
        start, box = gap
        win = _draw(rng, width, height, crop_min, crop_max, around=box)
        windows.setdefault(win, None)
        coverage.add(win)

