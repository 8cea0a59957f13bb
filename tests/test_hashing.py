"""rs4m.hashing: pHash / dHash bit-identical to imagehash, pixel hashes, dihedral variants."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from rs4m import hashing as hs
from rs4m.hamming import popcount

from .conftest import read_real

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _ref(fn, rgb: np.ndarray) -> int:
    return int(str(fn(Image.fromarray(np.ascontiguousarray(rgb)))), 16)




@pytest.fixture(scope="module")
def real_tiles() -> list[np.ndarray]:
    """Tiles of several real images at several sizes, square and not."""
    rng = np.random.default_rng(0)
    tiles = []
    for rel in ("aerial-cog/cogeo.tif", "dota-devkit/images/P1888.png", "dota-mmrotate/demo.jpg",
                "landsat7-rasterio/RGB.byte.tif", "misc/world.rgb.tif"):
        img = read_real(rel)
        for h, w in ((256, 256), (128, 200), (97, 64), (180, 300), (33, 33)):
            y, x = rng.integers(0, img.shape[0] - h + 1), rng.integers(0, img.shape[1] - w + 1)
            tiles.append(np.ascontiguousarray(img[y : y + h, x : x + w]))
    return tiles


def test_hashes_equal_imagehash_on_real_tiles(real_tiles):
    ph, dh = hs.hashes(real_tiles)
    assert ph.dtype == np.uint64 and dh.dtype == np.uint64 and len(ph) == len(real_tiles)
    assert ph.tolist() == [_ref(imagehash.phash, t) for t in real_tiles]
    assert dh.tolist() == [_ref(imagehash.dhash, t) for t in real_tiles]
    assert len(set(ph.tolist())) == len(real_tiles)  # distinct tiles, distinct hashes


@pytest.mark.parametrize("shape,value", [((64, 64), 0), ((40, 17), 200), ((1, 1), 7), ((5, 3), 255)])
def test_flat_and_tiny_images_match_imagehash(shape, value):
    # flat tiles put every AC coefficient on the median: the tie path must agree with scipy's DCT
    rgb = np.full((*shape, 3), value, np.uint8)
    rgb[0, 0] = (value + 1) % 256
    ph, dh = hs.hashes([rgb])
    assert int(ph[0]) == _ref(imagehash.phash, rgb)
    assert int(dh[0]) == _ref(imagehash.dhash, rgb)


def test_hashes_of_empty_batch_and_bad_input():
    ph, dh = hs.hashes([])
    assert ph.shape == (0,) and dh.shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        hs.hashes([np.zeros((8, 8, 3), np.float32)])


def test_bits_roundtrip():
    values = np.array([0, 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF], np.uint64)
    bits = hs.uint64_to_bits(values)
    assert bits.shape == (5, 64) and bits[2, 0] and not bits[2, 1:].any() and bits[1, 63]
    np.testing.assert_array_equal(hs.bits_to_uint64(bits), values)


def test_pixel_hash_ignores_encoding_but_not_pixels_or_shape(real_tiles):
    rgb = real_tiles[0]
    png, webp = io.BytesIO(), io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    Image.fromarray(rgb).save(webp, format="WEBP", lossless=True)
    a = np.asarray(Image.open(io.BytesIO(png.getvalue())).convert("RGB"))
    b = np.asarray(Image.open(io.BytesIO(webp.getvalue())).convert("RGB"))
    assert png.getvalue() != webp.getvalue()
    assert hs.pixel_hash(a) == hs.pixel_hash(b) == hs.pixel_hash(rgb)
    changed = rgb.copy()
    changed[5, 5, 1] ^= 1
    assert hs.pixel_hash(changed) != hs.pixel_hash(rgb)
    wide = real_tiles[1]  # 128 x 200: the same bytes read as 200 x 128 are another image
    assert hs.pixel_hash(wide.reshape(wide.shape[1], wide.shape[0], 3)) != hs.pixel_hash(wide)


def test_dihedral_hashes_are_the_hashes_of_the_transformed_pixels(real_tiles):
    rgb = real_tiles[6]  # non-square
    variants = hs.dihedral_hashes(rgb)
    assert variants.shape == (8,)
    expected = [_ref(imagehash.phash, hs.dihedral(rgb, k)) for k in range(8)]
    assert variants.tolist() == expected
    assert hs.dihedral(rgb, 5).shape == (rgb.shape[1], rgb.shape[0], 3)
    np.testing.assert_array_equal(hs.dihedral(rgb, 5), np.rot90(rgb, -1))  # rot90_cw
    np.testing.assert_array_equal(hs.dihedral(rgb, 6), np.rot90(rgb, 1))
    flipped = hs.dihedral_hashes(np.ascontiguousarray(rgb[:, ::-1]))
    assert hs.canonical_hash(flipped) == hs.canonical_hash(variants)  # exact copy, flipped: same canonical


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_canonical_hashes_find_rotated_recompressed_copies(real_tiles):
    originals = [t for t in real_tiles if t.shape[0] >= 97][:12]
    ph, dh, cp, cd = hs.hashes_with_canonical(originals)
    ref_p, ref_d = hs.hashes(originals)
    np.testing.assert_array_equal(ph, ref_p)
    np.testing.assert_array_equal(dh, ref_d)
    for k in range(1, 8):
        copies = [_jpeg(hs.dihedral(t, k), 85) for t in originals]
        _, _, cp2, cd2 = hs.hashes_with_canonical(copies)
        close = (popcount(cp ^ cp2) <= 5) & (popcount(cd ^ cd2) <= 5)
        assert close.mean() >= 0.9, (hs.DIHEDRAL_NAMES[k], close)
    # distinct tiles stay far apart in canonical space too
    iu = np.triu_indices(len(originals), 1)
    far = np.maximum(popcount(cp[:, None] ^ cp[None]), popcount(cd[:, None] ^ cd[None]))[iu]
    assert far.min() > 10


def test_estimated_dihedral_variants(real_tiles):
    rgb = real_tiles[0]
    ph, dh = hs.hashes([rgb])
    est_p, est_d = hs.phash_dihedral(ph)[0], hs.dhash_dihedral(dh)[0]
    exact_p, exact_d = hs.dihedral_hash_pairs(rgb)
    assert est_p[0] == ph[0] and est_d[0] == dh[0]
    assert int(popcount(est_p[4] ^ exact_p[4])) <= 2  # transpose: exact up to resize rounding
    assert est_d[2] == exact_d[2]  # up-down flip reverses the rows of dHash exactly
    assert int(popcount(est_p[1] ^ exact_p[1])) <= 12  # flips: the median moves, a few bits off
    assert int(popcount(est_p[1] ^ ph[0])) > 16  # ... but much closer than the unflipped hash


def test_matrix_resize_equals_pillow_on_random_shapes():
    # the thumbnails' fast path: Pillow's fixed-point LANCZOS as products, pass order probed per shape
    from rs4m import resample

    rng = np.random.default_rng(7)
    img = read_real("dota-devkit/images/P0706.png")
    grey = np.asarray(Image.fromarray(img).convert("L"))
    sizes = ((32, 32), (9, 8), (8, 9))
    shapes = [(512, 512), (256, 256), (1, 1), (3, 700), (700, 5)] + [tuple(rng.integers(1, 600, 2)) for _ in range(40)]
    vertical_first = 0
    for h, w in shapes:
        y, x = rng.integers(0, grey.shape[0] - h + 1), rng.integers(0, grey.shape[1] - w + 1)
        tile = np.ascontiguousarray(grey[y : y + h, x : x + w])
        orders = resample.pass_orders((int(h), int(w)), sizes)
        assert orders is not None, (h, w)
        vertical_first += sum(orders)
        for size, got in zip(sizes, resample.resize_all(tile, sizes, orders), strict=True):
            want = np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.LANCZOS))
            assert got.dtype == np.uint8 and np.array_equal(got, want), (h, w, size)
    assert 0 < vertical_first  # both pass orders were exercised


def test_batches_of_one_shape_take_the_fast_path_and_equal_imagehash():
    from rs4m import resample

    img = read_real("aerial-cog/cogeo.tif")
    tiles = [np.ascontiguousarray(img[y : y + 300, x : x + 260]) for y in (0, 100, 200) for x in (0, 150)]
    ph, dh, cp, cd = hs.hashes_with_canonical(tiles)
    assert resample.is_probed((300, 260), ((32, 32), (9, 8), (8, 9)))
    assert ph.tolist() == [_ref(imagehash.phash, t) for t in tiles]
    assert dh.tolist() == [_ref(imagehash.dhash, t) for t in tiles]
    lone = np.ascontiguousarray(tiles[0][:299, :257])  # a shape seen once goes through Pillow itself
    p1, d1, cp1, cd1 = hs.hashes_with_canonical([lone])
    assert not resample.is_probed((299, 257), ((32, 32), (9, 8), (8, 9)))
    assert (int(p1[0]), int(d1[0])) == (_ref(imagehash.phash, lone), _ref(imagehash.dhash, lone))
    fast = hs.hashes_with_canonical([lone] * hs.PROBE_MIN_TILES)  # now the matrix path: the same four hashes
    assert resample.is_probed((299, 257), ((32, 32), (9, 8), (8, 9)))
    for slow, quick in zip((p1, d1, cp1, cd1), fast, strict=True):
        assert quick.tolist() == [int(slow[0])] * hs.PROBE_MIN_TILES


def test_given_grey_images_give_the_same_hashes(real_tiles):
    greys = [Image.fromarray(t).convert("L") for t in real_tiles]
    want = hs.hashes_with_canonical(real_tiles)
    got = hs.hashes_with_canonical(real_tiles, greys)
    assert all(g.tolist() == w.tolist() for g, w in zip(got, want, strict=True))
    assert got[0].tolist() == [_ref(imagehash.phash, t) for t in real_tiles]
    swapped = hs.hashes_with_canonical(real_tiles, greys[::-1])  # the grey images are what is hashed
    assert swapped[0].tolist() != want[0].tolist()
    with pytest.raises(ValueError, match="grey images"):
        hs.hashes_with_canonical(real_tiles, greys[:-1])
