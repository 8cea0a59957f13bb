"""The richness score: textured beats flat, constant is zero, equal to the definition and to the trainer's twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from rs4m.richness import patch_scores, tile_richness


def reference_patch_scores(rgb: np.ndarray, patch: int = 16) -> np.ndarray:
    """The definition, written plainly (float64, explicit loops over cells): [N] scores, patches row-major.

    Gradients are taken on the 0–255 scale and the score divided by 255 at the end (the same by linearity):
    there they are exact integers, whereas on x / 255 rounding can turn gy = 0 into ±1e-17 and move a
    horizontal edge from orientation bin 0 to bin 8.
    """
    h, w = rgb.shape[0] // patch * patch, rgb.shape[1] // patch * patch
    x = rgb[:h, :w, :3].astype(np.float64).transpose(2, 0, 1)
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = sum(kx[i, j] * p[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    mag = np.sqrt(gx**2 + gy**2)
    angle = np.mod(np.arctan2(gy, gx), math.pi)
    bins = np.minimum(np.floor(angle / (math.pi / 9)), 8).astype(int)
    cells = np.zeros((3, h // 8, w // 8, 9))
    for c in range(3):
        for r in range(h // 8):
            for q in range(w // 8):
                sl = (c, slice(r * 8, r * 8 + 8), slice(q * 8, q * 8 + 8))
                cells[c, r, q] = np.bincount(bins[sl].ravel(), weights=mag[sl].ravel(), minlength=9)
    k = patch // 8
    scores = [np.linalg.norm(cells[:, i * k:(i + 1) * k, j * k:(j + 1) * k, :])
              for i in range(h // patch) for j in range(w // patch)]
    return np.array(scores) / 255.0


@pytest.fixture(scope="module")
def aerial(shared_data) -> np.ndarray:
    with Image.open(shared_data / "real" / "dota-devkit" / "images" / "P0706.png") as im:
        return np.asarray(im.convert("RGB"))


def test_textured_patch_scores_above_flat():
    img = np.full((48, 48, 3), 128, np.uint8)
    img[:16, 16:32] = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    s = patch_scores(img)
    assert s.shape == (9,) and s.dtype == np.float32
    assert s[1] > 10 * max(np.delete(s, 1))  # row-major: patch 1 is the top middle one
    assert s[6] == s[7] == s[8] == 0.0  # the bottom row does not touch the texture


def test_constant_image_scores_zero():
    assert patch_scores(np.full((64, 48, 3), 77, np.uint8)).tolist() == [0.0] * 12
    assert tile_richness(np.full((300, 500, 3), 200, np.uint8)) == 0.0


def test_equals_the_definition(aerial):
    for shape in ((64, 64), (48, 80), (50, 37)):  # the last is cropped to 48 x 32
        rgb = np.ascontiguousarray(aerial[100:100 + shape[0], 200:200 + shape[1]])
        np.testing.assert_allclose(patch_scores(rgb), reference_patch_scores(rgb), rtol=1e-5, atol=1e-6)
    rgb = np.ascontiguousarray(aerial[:64, :64])
    np.testing.assert_allclose(patch_scores(rgb, patch=32), reference_patch_scores(rgb, 32), rtol=1e-5)
    extremes = np.zeros((32, 32, 3), np.uint8)
    extremes[::2, 1::2] = 255  # the largest gradients 8-bit input can have
    np.testing.assert_allclose(patch_scores(extremes), reference_patch_scores(extremes), rtol=1e-5)


def test_tile_richness_is_the_mean_at_224_with_pillow_bilinear(aerial):
    tile = np.ascontiguousarray(aerial[:512, :512])
    resized = np.asarray(Image.fromarray(tile).resize((224, 224), Image.Resampling.BILINEAR))
    assert tile_richness(tile) == pytest.approx(float(patch_scores(resized).mean()), rel=1e-6)
    exact = np.ascontiguousarray(aerial[:224, :224])
    assert tile_richness(exact) == pytest.approx(float(patch_scores(exact).mean()), rel=1e-6)
    assert tile_richness(tile) > 0.5


def test_busy_tiles_score_above_smooth_ones(aerial):
    busy = np.ascontiguousarray(aerial[:512, :512])
    smooth = np.asarray(Image.fromarray(busy).filter(ImageFilter.GaussianBlur(4)))
    assert tile_richness(busy) > 1.5 * tile_richness(smooth) > 0



def test_bad_arguments():
    with pytest.raises(ValueError, match="uint8"):
        patch_scores(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of 8"):
        patch_scores(np.zeros((32, 32, 3), np.uint8), patch=12)
    assert patch_scores(np.zeros((8, 40, 3), np.uint8)).tolist() == [0.0]  # smaller than one patch


@pytest.mark.parametrize("shape", [(224, 224), (96, 128), (48, 32)])
def test_same_score_as_trainer(shape, shared_data):
    torch = pytest.importorskip("torch", reason="the trainer's twin needs torch (pip install 'rs4m[train]')")
    from pretrain.selection import hog_patch_scores

    with Image.open(shared_data / "real" / "dota-devkit" / "images" / "P1888.png") as im:
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"))[: shape[0], : shape[1]])
    ours = patch_scores(rgb)
    theirs = hog_patch_scores(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
