"""Window math: full coverage, inward edges, no padding, deterministic multi-scale random crops."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rs4m.config import TileConfig
from rs4m.stages.tile import scene_windows
from rs4m.tiling import Window, axis_starts, crop_seed, grid_windows, random_windows


def coverage(wins: list[Window], width: int, height: int) -> np.ndarray:
    """How many windows cover each pixel → int [height, width]."""
    count = np.zeros((height, width), np.int32)
    for w in wins:
        count[w.y:w.y + w.height, w.x:w.x + w.width] += 1
    return count


def assert_inside(wins: list[Window], width: int, height: int) -> None:
    for w in wins:
        assert 0 <= w.x and w.x + w.width <= width and 0 <= w.y and w.y + w.height <= height, w
        assert w.width >= 1 and w.height >= 1


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(16, 1024), st.floats(0.25, 1.0))
def test_grid_covers_every_pixel_with_full_tiles(width, height, tile, stride_frac):
    stride = max(1, int(tile * stride_frac))  # a stride larger than the tile leaves gaps by design
    wins = grid_windows(width, height, tile, stride)
    assert len(set(wins)) == len(wins)
    assert_inside(wins, width, height)
    assert all(w.width == min(tile, width) and w.height == min(tile, height) for w in wins)
    cols, rows = np.zeros(width, bool), np.zeros(height, bool)  # a grid covers the image iff both axes are
    for w in wins:
        cols[w.x:w.x + w.width] = True
        rows[w.y:w.y + w.height] = True
    assert cols.all() and rows.all()
    assert len(wins) == len({w.x for w in wins}) * len({w.y for w in wins})


def test_known_counts():
    assert len(grid_windows(791, 718, 256)) == 4 * 3
    assert axis_starts(791, 256, 256) == [0, 256, 512, 535]  # last tile shifted inward, full size
    assert axis_starts(718, 256, 128) == [0, 128, 256, 384, 462]
    assert len(grid_windows(791, 718, 256, 128)) == 6 * 5
    assert grid_windows(1024, 1024, 512) == [Window(0, 0, 512, 512), Window(512, 0, 512, 512),
                                             Window(0, 512, 512, 512), Window(512, 512, 512, 512)]
    assert len(grid_windows(1024, 1024, 512, 256)) == 9
    assert axis_starts(512, 512, 256) == [0]  # exactly one tile: no duplicate from the stride


def test_small_images_are_one_whole_window():
    assert grid_windows(100, 80, 512) == [Window(0, 0, 100, 80)]
    assert grid_windows(512, 512, 512) == [Window(0, 0, 512, 512)]
    assert grid_windows(1, 1, 256) == [Window(0, 0, 1, 1)]
    # smaller than the tile in one dimension only: that dimension's full extent
    assert grid_windows(1000, 300, 512) == [Window(0, 0, 512, 300), Window(488, 0, 512, 300)]
    assert random_windows(50, 40, 64, 256, seed=3) == [Window(0, 0, 50, 40)]


def test_bad_arguments():
    with pytest.raises(ValueError):
        grid_windows(100, 100, 0)
    with pytest.raises(ValueError):
        random_windows(100, 100, 300, 200, seed=0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 1500), st.integers(1, 1500), st.integers(8, 200), st.integers(0, 600), st.integers(0, 2**63))
def test_random_windows_cover_every_pixel_inside_and_deterministic(width, height, crop_min, extra, seed):
    crop_max = crop_min + extra
    wins = random_windows(width, height, crop_min, crop_max, seed)
    assert wins == random_windows(width, height, crop_min, crop_max, seed)
    assert len(set(wins)) == len(wins) >= 1
    assert_inside(wins, width, height)
    for w in wins:  # square unless clipped by the image; sizes within [crop_min, crop_max] (clipped)
        assert w.width == w.height or w.width == width or w.height == height
        assert min(crop_min, width) <= w.width and min(crop_min, height) <= w.height
        assert max(w.width, w.height) <= crop_max
    assert coverage(wins, width, height).min() >= 1


def test_random_windows_are_multiscale_and_not_wasteful():
    wins = random_windows(3000, 2000, 64, 1024, seed=7)
    sizes = np.array([w.width for w in wins])
    assert sizes.min() < 300 and sizes.max() > 800  # multi-scale
    cov = coverage(wins, 3000, 2000)
    assert cov.min() >= 1 and 1.2 < cov.mean() < 4.0  # covered, about twice over, not ten times
    assert random_windows(3000, 2000, 64, 1024, seed=8) != wins


def test_random_windows_with_count():
    wins = random_windows(2000, 2000, 64, 1024, seed=1, count=5)
    assert len(wins) == len(set(wins)) == 5
    assert_inside(wins, 2000, 2000)
    assert wins == random_windows(2000, 2000, 64, 1024, seed=1, count=5)
    # a 65 x 65 image has only 4 distinct 64 px crops (plus the whole image): asking for more stops
    few = random_windows(65, 65, 64, 65, seed=0, count=50)
    assert 1 <= len(few) <= 5 and len(set(few)) == len(few)


def test_crop_seed_is_stable_across_processes_and_differs_between_scenes():
    ids = ["0f3a9c2e71b4d5e6a7b8", "c0ffee0012345678abcd"]
    here = [crop_seed(s, 3) for s in ids]
    code = f"from rs4m.tiling import crop_seed; print([crop_seed(s, 3) for s in {ids!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert there.stdout.strip() == str(here)
    assert len(set(here)) == 2 and crop_seed(ids[0], 4) != here[0] and all(0 <= s < 2**63 for s in here)


def test_the_tile_stage_draws_random_crops_from_crop_seed():
    scene = {"scene_id": "0f3a9c2e71b4d5e6a7b8", "width": 900, "height": 700}
    cfg = TileConfig(mode="random", crop_min=64, crop_max=256, seed=7)
    drawn = scene_windows(scene, cfg)
    assert drawn == random_windows(900, 700, 64, 256, crop_seed(scene["scene_id"], 7))
    assert drawn != random_windows(900, 700, 64, 256, crop_seed(scene["scene_id"], 8))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_one_colour_is_the_per_channel_min_max_definition(h, w, seed, change, masked):
    from rs4m.stages.tile import one_colour

    rng = np.random.default_rng(seed)
    rgb = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    if change:
        rgb[rng.integers(0, h), rng.integers(0, w), rng.integers(0, 3)] ^= np.uint8(rng.integers(1, 256))
    pix = rgb[rng.random((h, w)) < 0.5] if masked else rgb.reshape(-1, 3)
    want = pix.size == 0 or bool((pix.min(axis=0) == pix.max(axis=0)).all())
    assert one_colour(pix) is want


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 600), st.integers(1, 600), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_nodata_fraction_is_one_minus_the_mean_of_the_mask(h, w, share, seed):
    from rs4m.stages.tile import nodata_fraction

    valid = np.random.default_rng(seed).random((h, w)) < share
    got = nodata_fraction(valid)
    assert type(got) is float and got == 1.0 - float(valid.mean())  # the same float, bit for bit
    assert nodata_fraction(np.zeros((0, 5), bool)) == 1.0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 80), st.integers(1, 40), st.integers(0, 2**32 - 1), st.booleans(), st.floats(0.0, 1.0))
def test_one_colour_where_is_one_colour_of_the_valid_pixels(h, w, seed, change, share):
    from rs4m.stages.tile import one_colour, one_colour_where

    rng = np.random.default_rng(seed)
    rgb = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    if change:  # one pixel of another colour, valid or not
        rgb[rng.integers(0, h), rng.integers(0, w), rng.integers(0, 3)] ^= np.uint8(rng.integers(1, 256))
    valid = rng.random((h, w)) < share
    assert one_colour_where(rgb, valid) is one_colour(rgb[valid])
    noisy = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert one_colour_where(noisy, valid) is one_colour(noisy[valid])
