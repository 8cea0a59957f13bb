"""The richness score: textured beats flat, constant is zero, identical to the trainer's patch score."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rs4m.richness import patch_scores, tile_richness


def test_textured_patch_scores_above_flat():
    img = np.full((32, 32, 3), 128, np.uint8)
    img[:16, 16:] = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    s = patch_scores(img)
    assert s.shape == (4,)
    assert s[1] > 10 * max(s[0], s[2], s[3])  # row-major: patch 1 is top-right
    assert patch_scores(np.full((64, 48, 3), 77, np.uint8)).tolist() == [0.0] * 12


def test_tile_richness_orders_real_tiles(shared_data):
    with Image.open(shared_data / "real" / "dota-devkit" / "images" / "P0706.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    busy = rgb[:512, :512]
    flat = np.full_like(busy, 90)
    assert tile_richness(busy) > 0.5 and tile_richness(flat) == 0.0
    assert tile_richness(busy[:224, :224]) == pytest.approx(float(patch_scores(busy[:224, :224]).mean()))


@pytest.mark.parametrize("shape", [(224, 224), (96, 128), (48, 32)])
def test_same_score_as_trainer(shape, shared_data):
    torch = pytest.importorskip("torch", reason="the trainer's twin needs torch (pip install 'rs4m[train]')")
    from pretrain.selection import hog_patch_scores

    with Image.open(shared_data / "real" / "dota-devkit" / "images" / "P1888.png") as im:
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"))[: shape[0], : shape[1]])
    ours = patch_scores(rgb)
    theirs = hog_patch_scores(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
