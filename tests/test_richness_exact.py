"""The richness score is bit-identical to its previous implementation (frozen below) on every kind of tile, and
its orientation bins equal the atan2 definition over every integer gradient 8-bit images can have."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from PIL import Image

from rs4m.richness import orientation_bins, patch_scores, tile_richness

from .conftest import read_real

# ---------------------------------------------------------------- the previous implementation, frozen as it was

_GRAD_MAX = 4 * 255
_GRAD_SPAN = 2 * _GRAD_MAX + 1


@functools.lru_cache(maxsize=1)
def _frozen_bin_lut() -> np.ndarray:
    g = np.arange(-_GRAD_MAX, _GRAD_MAX + 1, dtype=np.float64)
    angle = np.mod(np.arctan2(g[None, :], g[:, None]), math.pi)  # [gx, gy]
    return np.minimum(np.floor(angle / (math.pi / 9)), 8).astype(np.uint8).ravel()


def _frozen_sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    smooth_rows = p[:, :-2, :] + 2 * p[:, 1:-1, :] + p[:, 2:, :]
    gx = smooth_rows[:, :, 2:] - smooth_rows[:, :, :-2]
    smooth_cols = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    gy = smooth_cols[:, 2:, :] - smooth_cols[:, :-2, :]
    return gx, gy


def _frozen_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    index = gx.astype(np.int32)
    index *= _GRAD_SPAN
    index += gy
    index += _GRAD_MAX * _GRAD_SPAN + _GRAD_MAX
    return np.take(_frozen_bin_lut(), index)


def _frozen_offsets(c: int, h: int, w: int) -> np.ndarray:
    cells_w = w // 8
    cell = (np.arange(h)[:, None] // 8) * cells_w + np.arange(w)[None, :] // 8
    return ((np.arange(c)[:, None, None] * (cell.size // 64) + cell[None]) * 9).ravel()


def frozen_patch_scores(rgb: np.ndarray, patch: int = 16) -> np.ndarray:
    h, w = (rgb.shape[0] // patch) * patch, (rgb.shape[1] // patch) * patch
    if h == 0 or w == 0:
        return np.zeros(1, np.float32)
    x = np.ascontiguousarray(rgb[:h, :w, :3].transpose(2, 0, 1), dtype=np.int16)
    gx, gy = _frozen_sobel(x)
    mag = gx.astype(np.float32)
    mag *= mag
    mag += np.square(gy, dtype=np.float32)
    np.sqrt(mag, out=mag)
    c = x.shape[0]
    index = _frozen_offsets(c, h, w) + _frozen_bins(gx, gy).ravel()
    hist = np.bincount(index, weights=mag.ravel(), minlength=c * (h // 8) * (w // 8) * 9)
    k = patch // 8
    hist = hist.reshape(c, h // patch, k, w // patch, k, 9).transpose(1, 3, 0, 2, 4, 5)
    return (np.linalg.norm(hist.reshape((h // patch) * (w // patch), -1), axis=1) / 255.0).astype(np.float32)


def frozen_tile_richness(rgb: np.ndarray) -> float:
    if rgb.shape[0] != 224 or rgb.shape[1] != 224:
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).resize(
            (224, 224), Image.Resampling.BILINEAR))
    return float(frozen_patch_scores(rgb).mean())


# ---------------------------------------------------------------------------------------------------- tiles


def _smooth_noise(rng: np.random.Generator, h: int, w: int, px: int) -> np.ndarray:
    """Noise blurred over ``px`` pixels: the small gradients of real imagery, in every direction."""
    small = rng.integers(0, 256, (max(1, h // px), max(1, w // px), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def _synthetic_tiles() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    shapes = [(512, 512), (224, 224), (300, 500), (513, 257), (50, 37), (16, 16), (15, 15), (17, 33), (8, 40),
              (1, 1), (256, 256), (272, 272), (288, 288), (1024, 96), (16, 10000)]  # last: int32 offsets
    tiles = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in shapes]
    tiles += [_smooth_noise(rng, *s, px) for s in shapes[:4] for px in (4, 32)]
    tiles += [np.full((512, 512, 3), v, np.uint8) for v in (0, 77, 255)] + [np.full((224, 224, 3), 3, np.uint8)]
    checker = np.zeros((512, 512, 3), np.uint8)
    checker[::2, 1::2] = 255  # the largest gradients 8-bit input can have
    tiles.append(checker)
    yy, xx = np.mgrid[:224, :224]
    for deg in range(0, 180, 5):  # straight edges at every bin boundary and between them
        t = math.radians(deg)
        tiles.append(np.repeat(((np.cos(t) * xx + np.sin(t) * yy) % 64 < 32)[..., None] * 200, 3, 2).astype(np.uint8))
    return tiles


@pytest.fixture(scope="module")
def real_tiles() -> list[np.ndarray]:
    tiles = []
    for rel in ("aerial-cog/cogeo.tif", "dota-devkit/images/P0706.png", "dota-devkit/images/P1888.png"):
        img = read_real(rel)
        for y in range(0, img.shape[0] - 511, 256):
            for x in range(0, img.shape[1] - 511, 256):
                tiles.append(np.ascontiguousarray(img[y : y + 512, x : x + 512]))
        tiles.append(np.ascontiguousarray(img[3:3 + 333, 5:5 + 411]))
    return tiles


# ---------------------------------------------------------------------------------------------------- tests


def test_orientation_bins_equal_atan2_over_every_integer_gradient():
    g = np.arange(-_GRAD_MAX, _GRAD_MAX + 1, dtype=np.int16)
    gx, gy = np.repeat(g, g.size), np.tile(g, g.size)  # flat [(gx + 1020) * 2041 + gy + 1020], the table's order
    got = orientation_bins(gx, gy)
    assert got.dtype == np.uint8
    assert np.array_equal(got, _frozen_bin_lut())
    assert np.bincount(got).tolist()[0] > 0 and len(np.bincount(got)) == 9  # every bin occurs


def test_bit_identical_on_synthetic_tiles():
    for rgb in _synthetic_tiles():
        assert tile_richness(rgb) == frozen_tile_richness(rgb), rgb.shape
        for patch in (8, 16, 32):
            got, want = patch_scores(rgb, patch), frozen_patch_scores(rgb, patch)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (rgb.shape, patch)


def test_bit_identical_on_real_tiles(real_tiles):
    assert len(real_tiles) >= 10
    scores = [tile_richness(rgb) for rgb in real_tiles]
    assert scores == [frozen_tile_richness(rgb) for rgb in real_tiles]
    assert len(set(scores)) == len(scores) and min(scores) > 0
    for rgb in real_tiles[:4]:
        assert patch_scores(rgb).tobytes() == frozen_patch_scores(rgb).tobytes()


def test_bit_identical_on_views_and_extra_bands(real_tiles):
    rgb = real_tiles[0]
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    for view in (rgb[::2, ::2], rgb[:, ::-1], rgb[17:-3, 5:], rgb.swapaxes(0, 1), rgba, rgba[:224, :224]):
        assert tile_richness(view) == frozen_tile_richness(view), view.shape
        assert patch_scores(view).tobytes() == frozen_patch_scores(view).tobytes(), view.shape


def test_a_given_pillow_image_gives_the_same_score(real_tiles):
    for rgb in real_tiles[:3] + _synthetic_tiles()[:3]:
        assert tile_richness(rgb, Image.fromarray(rgb)) == frozen_tile_richness(rgb)
