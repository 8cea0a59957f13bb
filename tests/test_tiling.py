"""Window math: full coverage, inward edges, no padding, deterministic random crops."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rs4m.tiling import Window, axis_starts, grid_windows, random_windows


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(16, 1024), st.floats(0.25, 1.0))
def test_grid_covers_every_pixel_with_full_tiles(width, height, tile, stride_frac):
    stride = max(1, int(tile * stride_frac))  # a stride larger than the tile leaves gaps by design
    wins = grid_windows(width, height, tile, stride)
    assert len(set(wins)) == len(wins)
    for w in wins:
        assert 0 <= w.x and w.x + w.width <= width and 0 <= w.y and w.y + w.height <= height
        assert w.width == min(tile, width) and w.height == min(tile, height)
    cols = np.zeros(width, bool)
    rows = np.zeros(height, bool)
    for w in wins:
        cols[w.x:w.x + w.width] = True
        rows[w.y:w.y + w.height] = True
    assert cols.all() and rows.all()


def test_known_counts():
    assert len(grid_windows(791, 718, 256)) == 4 * 3
    assert axis_starts(791, 256, 256) == [0, 256, 512, 535]  # last tile shifted inward
    assert grid_windows(100, 80, 512) == [Window(0, 0, 100, 80)]  # small image: one whole tile
    assert len(grid_windows(1024, 1024, 512, 256)) == 9


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(0, 2**31))
def test_random_windows_inside_deterministic_and_covering(width, height, seed):
    wins = random_windows(width, height, 64, 1024, seed)
    assert wins == random_windows(width, height, 64, 1024, seed)
    assert len(set(wins)) == len(wins) >= 1
    for w in wins:
        assert 0 <= w.x and w.x + w.width <= width and 0 <= w.y and w.y + w.height <= height
        assert w.width == w.height or w.width == width or w.height == height
        assert min(64, width) <= w.width <= 1024 or w.width == width
    if width > 64 or height > 64:
        assert sum(w.width * w.height for w in wins) >= 2 * width * height or len(wins) > 1000


def test_random_windows_vary_with_seed_and_count():
    a = random_windows(2000, 2000, 64, 1024, 1)
    assert a != random_windows(2000, 2000, 64, 1024, 2)
    assert len(random_windows(2000, 2000, 64, 1024, 1, count=5)) == 5
    sizes = {w.width for w in a}
    assert min(sizes) < 400 and max(sizes) > 600  # multi-scale
