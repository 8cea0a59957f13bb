"""Overlap search: features, candidate pairs, geometric verification (a crop at another scale, rotation or
mirror is found with its transform; an adjacent tile is not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the overlap extra (opencv-python-headless) is not installed")

from PIL import Image

from rs4m.overlap import (
    candidate_pairs,
    extract,
    extract_both,
    lsh_keys,
    overlap,
    verify,
)

AERIAL = Path(__file__).resolve().parents[1].parent / "shared/data/real/aerial-cog/cogeo.tif"


def _synthetic() -> np.ndarray:
    from rs4m.demo import synthetic_scene

    return np.asarray(synthetic_scene(np.random.default_rng(3), 768, 768, "mixed"))


def _aerial() -> np.ndarray:
    if not AERIAL.exists():
        pytest.skip("../shared/data is absent")
    import rasterio

    with rasterio.open(AERIAL) as ds:
        return np.ascontiguousarray(np.moveaxis(ds.read([1, 2, 3]), 0, -1))[:768, :768]


@pytest.fixture(params=["synthetic", "aerial"])
def scene(request) -> np.ndarray:
    return _synthetic() if request.param == "synthetic" else _aerial()


def _crop(scene: np.ndarray, x: int, y: int, side: int, out_px: int) -> np.ndarray:
    crop = Image.fromarray(np.ascontiguousarray(scene[y : y + side, x : x + side]))
    return np.asarray(crop.resize((out_px, out_px), Image.Resampling.LANCZOS))


def test_features_fit_in_4_kb(scene):
    f = extract(scene[:512, :512])
    assert 150 <= len(f.desc) <= 224
    assert f.nbytes <= 4096
    assert (f.xy() >= 0).all() and (f.xy() <= 512).all() and (f.width, f.height) == (512, 512)


def test_rescaled_rotated_crop_is_found_with_its_transform(scene):
    a = np.ascontiguousarray(scene[100:420, 100:420])  # 320² at the scene's scale
    b = np.ascontiguousarray(np.rot90(_crop(scene, 200, 180, 400, 320)))  # 1.25× coarser, rotated by 90°
    m = verify(extract(a), extract(b))
    assert m is not None and not m.mirrored
    assert m.scale == pytest.approx(400 / 320, rel=0.05)
    assert min(abs(m.rotation_deg - r) for r in (90, -90)) < 3
    # b's ground (200..600) overlaps a's (100..420) on 220 × 240 of a's pixels, over a's 320² (a is smaller)
    assert m.overlap_frac == pytest.approx(220 * 240 / 320**2, abs=0.05)


def test_arbitrary_rotation_is_measured(scene):
    import cv2

    a = np.ascontiguousarray(scene[150:470, 150:470])
    rot = cv2.getRotationMatrix2D((310.0, 310.0), 25.0, 1.0)  # 25° about a's centre (scene coordinates)
    b = cv2.warpAffine(np.ascontiguousarray(scene), rot, (768, 768))[150:470, 150:470]
    m = verify(extract(a), extract(b))
    assert m is not None
    assert abs(abs(m.rotation_deg) - 25) < 3 and m.scale == pytest.approx(1.0, rel=0.05)


def test_mirrored_crop_needs_and_finds_mirror_features(scene):
    a = np.ascontiguousarray(scene[100:420, 100:420])
    b = np.ascontiguousarray(scene[140:460, 160:480][:, ::-1])  # mirrored left-right, shifted
    fb, fb_mirror = extract_both(b)
    m = verify(extract(a), fb, fb_mirror)
    assert m is not None and m.mirrored
    # b's pixel (x, y) shows scene (160 + 319 - x, 140 + y), i.e. a's (379 - x, 40 + y)
    assert np.allclose(m.transform @ [10.0, 20.0, 1.0], [369, 60], atol=4)
    assert m.overlap_frac == pytest.approx(260 * 280 / 320**2, abs=0.05)


def test_adjacent_tile_is_not_an_overlap(scene):
    a = np.ascontiguousarray(scene[100:420, 100:420])
    for b in (scene[100:420, 424:744], scene[424:744, 100:420]):  # right and below, 4 px apart
        fb, fb_mirror = extract_both(np.ascontiguousarray(b))
        assert verify(extract(a), fb, fb_mirror) is None


def test_overlap_of_a_known_transform():
    half = np.array([[1.0, 0.0, 50.0], [0.0, 1.0, 0.0]])  # b shifted right by half of a's width
    poly, frac_a, frac_b = overlap(half, (100, 100), (100, 100))
    assert (frac_a, frac_b) == (0.5, 0.5) and poly.bounds == (50.0, 0.0, 100.0, 100.0)
    small = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])  # b covers a's top-left quarter
    assert overlap(small, (100, 100), (100, 100))[1:] == (0.25, 1.0)


def _naive_votes(keys: np.ndarray, owner: np.ndarray) -> dict[tuple[int, int], int]:
    votes: dict[tuple[int, int], int] = {}
    for t in range(keys.shape[1]):
        runs: dict[int, set[int]] = {}
        for k, o in zip(keys[:, t].tolist(), owner.tolist(), strict=True):
            runs.setdefault(k, set()).add(o)
        for members in runs.values():
            ms = sorted(members)
            for x in range(len(ms)):
                for y in range(x + 1, len(ms)):
                    votes[(ms[x], ms[y])] = votes.get((ms[x], ms[y]), 0) + 1
    return votes


def test_candidate_votes_equal_a_naive_count():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 12, (300, 3)).astype(np.uint64)  # few keys: many collisions, runs of many tiles
    owner = rng.integers(0, 40, 300)
    i, j, v = candidate_pairs(keys, owner, 40, min_votes=1, max_bucket=10**6)
    assert dict(zip(zip(i.tolist(), j.tolist(), strict=True), v.tolist(), strict=True)) == _naive_votes(keys, owner)
    i2, _, v2 = candidate_pairs(keys, owner, 40, min_votes=3, max_bucket=10**6)
    assert len(i2) == (v >= 3).sum() and (v2 >= 3).all()


def test_candidates_find_a_planted_noisy_copy_among_random_tiles():
    rng = np.random.default_rng(1)
    desc = rng.integers(0, 256, (500, 100, 16), dtype=np.uint8)  # 500 tiles of 100 random descriptors
    noise = np.packbits(rng.random((60, 128)) < 0.06, axis=1)  # ~8 of 128 bits flipped
    desc[7, :60] = desc[3, 40:] ^ noise  # tile 7 shares 60 keypoints with tile 3
    owner = np.repeat(np.arange(500), 100)
    i, j, _ = candidate_pairs(lsh_keys(desc.reshape(-1, 16)), owner, 500)
    assert (3, 7) in set(zip(i.tolist(), j.tolist(), strict=True))
    assert len(i) <= 5  # random 128-bit descriptors almost never share a 20-bit key twice
