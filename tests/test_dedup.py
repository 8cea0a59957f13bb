"""rs4m.hamming, rs4m.dedup, rs4m.leakage and the dedup stage / CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rs4m import dedup as dd
from rs4m import manifest as mf
from rs4m.hamming import brute_force_pairs, hamming_pairs, hamming_pairs_between, popcount
from rs4m.hashing import dihedral, hashes, hashes_with_canonical, pixel_hash
from rs4m.layout import OutputLayout

from .conftest import read_real
from .scenes import aerial

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
LANDSAT = ("RGB.byte.tif", "rgb-byte-tenth.tif", "rgb1.tif", "rgb2.tif", "rgb3.tif", "rgb4.tif")




# ---------------------------------------------------------------- Hamming search


def _noisy_hashes(seed: int, n: int, k: int, flip_p: float) -> np.ndarray:
    """``[n, k]`` hashes drawn around n // 3 centres, so that many pairs are near."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**64, (max(n // 3, 1), k), dtype=np.uint64, endpoint=False)
    noise = np.zeros((n, k), np.uint64)
    for bit in range(64):
        noise |= (rng.random((n, k)) < flip_p).astype(np.uint64) << np.uint64(bit)
    return centres[rng.integers(0, len(centres), n)] ^ noise


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), radii=st.lists(st.integers(0, 14), min_size=1,
                                                                              max_size=2),
       flip_p=st.sampled_from([0.0, 0.03, 0.1, 0.5]))
def test_mih_equals_brute_force(seed, n, radii, flip_p):
    h = _noisy_hashes(seed, n, len(radii), flip_p)
    got, want = hamming_pairs(h, radii), brute_force_pairs(h, radii)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 120), cut=st.floats(0, 1),
       radii=st.lists(st.integers(0, 12), min_size=2, max_size=2))
def test_mih_between_equals_brute_force(seed, n, cut, radii):
    h = _noisy_hashes(seed, n, 2, 0.05)
    q, ix = h[: int(n * cut)], h[int(n * cut) :]
    qi, ii, dist = hamming_pairs_between(q, ix, radii)
    full = np.stack([popcount(q[:, None, k] ^ ix[None, :, k]) for k in range(2)], -1)
    want = np.argwhere((full <= radii).all(-1)) if full.size else np.zeros((0, 2), int)
    np.testing.assert_array_equal(np.stack([qi, ii], 1).reshape(-1, 2), want)
    np.testing.assert_array_equal(dist, full[qi, ii] if full.size else dist)


def test_mih_finds_planted_pairs_among_many_random():
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**64, (20000, 2), dtype=np.uint64)
    planted = h[:300].copy()
    for row in planted:  # 5 and 4 random bit flips
        for col, flips in ((0, 5), (1, 4)):
            for bit in rng.choice(64, flips, replace=False):
                row[col] ^= np.uint64(1) << np.uint64(bit)
    i, j, dist = hamming_pairs(np.concatenate([h, planted]), [5, 5])
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert {(k, 20000 + k) for k in range(300)} <= found
    assert len(found) == 300 and dist[:, 0].max() == 5 and dist[:, 1].max() == 4


def test_mih_rejects_bad_radii():
    with pytest.raises(ValueError, match="radii"):
        hamming_pairs(np.zeros((3, 2), np.uint64), [4])


# ---------------------------------------------------------------- real imagery: exact / near / dihedral


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def distinct_tiles() -> list[np.ndarray]:
    """Non-overlapping 256² grid tiles of real images (no two show the same ground)."""
    tiles = []
    for rel in ("aerial-cog/cogeo.tif", "dota-mmrotate/demo.jpg", "dota-devkit/images/P0706.png"):
        img = read_real(rel)
        for y in range(0, img.shape[0] - 255, 256):
            for x in range(0, img.shape[1] - 255, 256):
                tiles.append(np.ascontiguousarray(img[y : y + 256, x : x + 256]))
    return tiles


def _edges_set(edges: dd.Edges) -> set[tuple[int, int]]:
    return set(zip(edges.i.tolist(), edges.j.tolist(), strict=True))


def test_distinct_real_tiles_are_not_grouped(distinct_tiles):
    ph, dh = hashes(distinct_tiles)
    assert len(distinct_tiles) >= 40
    assert len(dd.near_edges(ph, dh, 5, 5)) == 0
    assert len(dd.exact_edges([pixel_hash(t) for t in distinct_tiles])) == 0


def test_planted_copies_are_found(distinct_tiles):
    originals = distinct_tiles[:12]
    rng = np.random.default_rng(0)
    copies = {
        "exact": [o.copy() for o in originals],
        "jpeg": [_jpeg(o, int(rng.integers(50, 91))) for o in originals],
        "resize": [np.asarray(Image.fromarray(o).resize((int(256 * f),) * 2, Image.Resampling.BILINEAR))
                   for o, f in zip(originals, rng.uniform(0.5, 0.9, len(originals)), strict=True)],
        "brightness": [np.clip(o.astype(int) + d, 0, 255).astype(np.uint8)
                       for o, d in zip(originals, rng.choice([-20, -12, 12, 20], len(originals)), strict=True)],
    }
    tiles = distinct_tiles + [c for kind in copies.values() for c in kind]
    ph, dh = hashes(tiles)
    near = _edges_set(dd.near_edges(ph, dh, 5, 5))
    exact = _edges_set(dd.exact_edges([pixel_hash(t) for t in tiles]))
    n = len(distinct_tiles)
    for k, kind in enumerate(copies):
        expected = {(o, n + k * len(originals) + o) for o in range(len(originals))}
        assert expected <= near, kind
        assert (expected <= exact) == (kind == "exact"), kind
    labels = dd.connected_components(len(tiles), *zip(*near, strict=True)) if near else np.arange(len(tiles))
    assert len(np.unique(labels)) == n  # every copy joins its original, no two originals join


def test_downscaled_scene_is_near_the_full_scene():
    full, tenth = (read_real(f"landsat7-rasterio/{f}") for f in LANDSAT[:2])
    ph, dh = hashes([full, tenth])
    edges = dd.near_edges(ph, dh, 5, 5)
    assert _edges_set(edges) == {(0, 1)} and edges.reason == "near"
    assert 0 < edges.distance[0] <= 5


def test_flipped_and_rotated_copies_in_dihedral_mode(distinct_tiles):
    originals = distinct_tiles[:8]
    copies = [_jpeg(dihedral(o, k), 90) for k in (1, 2, 3, 5, 6) for o in originals]
    ph, dh, cp, cd = hashes_with_canonical(originals + copies)
    assert len(dd.near_edges(ph, dh, 5, 5)) == 0  # plain hashes miss every flip and rotation
    found = _edges_set(dd.near_edges(cp, cd, 5, 5))
    expected = {(o, 8 + 8 * v + o) for v in range(5) for o in range(8)}
    assert len(expected & found) >= 0.9 * len(expected)
    assert all(a % 8 == b % 8 for a, b in found)  # only an original with its own copies
    # without canonical hashes, flips are estimated from pHash/dHash alone
    est = _edges_set(dd.flip_estimate_edges(ph, dh, 8, 8))
    flips = {(o, 8 + 8 * v + o) for v in range(3) for o in range(8)}
    assert len(flips & est) >= 0.5 * len(flips) and all(a % 8 == b % 8 for a, b in est)


def test_exact_edges_star_to_first_member():
    edges = dd.exact_edges(["a", None, "b", "a", None, "a", "c", "b"])
    assert sorted(zip(edges.i.tolist(), edges.j.tolist(), strict=True)) == [(0, 3), (0, 5), (2, 7)]
    assert len(dd.exact_edges([])) == 0 and len(dd.exact_edges([None, None])) == 0


# ---------------------------------------------------------------- geo


@pytest.fixture(scope="module", params=["generated", "real"])
def landsat_footprints(request) -> tuple[list[bytes], np.ndarray]:
    """Footprints and pixel sizes of a scene, its tenth-resolution copy and its four quadrants (in that order):
    the generated Landsat-like ones, and the real Landsat files where the shared data is present."""
    import rasterio
    from rasterio.warp import transform_bounds

    if request.param == "real":
        read_real(f"landsat7-rasterio/{LANDSAT[0]}")  # skips when the shared data is absent
        paths = [REAL / "landsat7-rasterio" / name for name in LANDSAT]
    else:
        sources = request.getfixturevalue("aerial_sources")
        paths = [sources.scene(name).path for name in ("scene.tif", "scene-tenth.tif", "q1.tif", "q2.tif",
                                                       "q3.tif", "q4.tif")]
    footprints, gsd = [], []
    for path in paths:
        with rasterio.open(path) as ds:
            footprints.append(shapely.to_wkb(shapely.box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))))
            gsd.append(abs(ds.transform.a))
    return footprints, np.array(gsd)


def test_quadrants_group_with_full_scene_by_containment(landsat_footprints):
    footprints, gsd = landsat_footprints
    assert gsd[1] / gsd[0] > 9 and (gsd[2:] == gsd[0]).all()
    scenes = [f"scene{k}" for k in range(6)]
    edges = dd.geo_edges(footprints, scenes, gsd)
    # the tenth-resolution copy is 10x coarser: not a geo duplicate (it is a near one)
    assert _edges_set(edges) == {(0, 2), (0, 3), (0, 4), (0, 5)}
    np.testing.assert_allclose(edges.distance, 0.0, atol=1e-9)  # each quadrant lies inside the full scene
    labels = dd.connected_components(6, edges.i, edges.j)
    assert (labels[[0, 2, 3, 4, 5]] == 0).all() and labels[1] == 1
    # IoU would not group them (≈ 0.25 each)
    assert len(dd.geo_edges(footprints, scenes, gsd, measure="iou")) == 0
    # the same scene never pairs with itself, unknown GSD does not block
    assert len(dd.geo_edges(footprints, ["s"] * 6, gsd)) == 0
    # (the tenth copy then also pairs with the full scene and with each quadrant)
    assert len(dd.geo_edges(footprints, scenes, np.full(6, np.nan))) == 9


def test_touching_or_null_footprints_do_not_pair():
    boxes = [shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1), shapely.box(1.6, 0, 2.6, 1), None]
    wkb = [shapely.to_wkb(b) if b is not None else None for b in boxes]
    edges = dd.geo_edges(wkb, ["a", "b", "c", "d"], np.ones(4))
    assert _edges_set(edges) == set()  # touching: 0 overlap; b, c: 0.4 < 0.5
    edges = dd.geo_edges(wkb, ["a", "b", "c", "d"], np.ones(4), min_overlap=0.3)
    assert _edges_set(edges) == {(1, 2)}
    np.testing.assert_allclose(edges.distance, [0.6])


# ---------------------------------------------------------------- union-find, keep policy, resolve


def test_connected_components_chain_and_singletons():
    labels = dd.connected_components(7, np.array([5, 4, 3, 0]), np.array([6, 5, 4, 1]))
    assert labels.tolist() == [0, 0, 2, 3, 3, 3, 3]
    assert dd.connected_components(3, np.zeros(0, int), np.zeros(0, int)).tolist() == [0, 1, 2]


def test_keep_rank_policy():
    sources = ["b", "a", "a", "a", "zz", "a"]
    gsd = np.array([0.1, 0.5, 0.3, 0.3, 0.01, np.nan])
    area = np.array([1, 1, 100, 400, 1, 10**6])
    ids = ["t0", "t1", "t2", "t3", "t4", "t5"]
    rank = dd.keep_rank(sources, ["a", "b"], gsd, area, ids)
    # source a first (smaller gsd, then larger area, unknown gsd last), then b, then unlisted
    assert np.argsort(rank).tolist() == [3, 2, 1, 5, 0, 4]
    tie = dd.keep_rank(["a", "a"], [], np.array([1.0, 1.0]), np.array([4, 4]), ["y", "x"])
    assert tie.tolist() == [1, 0]


def test_resolve_reasons_precedence_and_stable_groups():
    ids = [f"t{k}" for k in range(7)]
    edges = [dd.Edges(np.array([0, 1]), np.array([1, 2]), np.array([3.0, 2.0]), "near"),
             dd.Edges(np.array([1]), np.array([2]), np.array([0.0]), "exact"),
             dd.Edges(np.array([3]), np.array([4]), np.array([0.25]), "geo")]
    rank = np.array([2, 0, 1, 3, 4, 5, 6])  # t1 is preferred in its group, t3 in the other
    g = dd.resolve(ids, edges, rank)
    assert g.dup_of.tolist() == ["t1", None, "t1", None, "t3", None, None]
    assert g.dup_reason.tolist() == ["near", None, "exact", None, "geo", None, None]
    np.testing.assert_allclose(g.distance[[0, 2, 4]], [3.0, 0.0, 0.25])
    assert np.isnan(g.distance[[1, 3, 5, 6]]).all()
    assert g.dup_group[0] == g.dup_group[1] == g.dup_group[2] == dd.group_id("t1")
    assert g.dup_group[3] == g.dup_group[4] == dd.group_id("t3") and (g.dup_group[5:] == -1).all()
    # leak: the whole group goes, a lone leaked tile gets a group of its own
    leak = np.array([np.nan, np.nan, 4.0, np.nan, np.nan, 0.0, np.nan])
    g = dd.resolve(ids, edges, rank, leak_distance=leak)
    assert g.dup_reason.tolist() == ["leak", "leak", "leak", None, "geo", "leak", None]
    assert g.dup_of[[0, 1, 2, 5]].tolist() == [None] * 4 and g.dup_group[5] == dd.group_id("t5")
    assert g.distance[2] == 4.0 and g.distance[5] == 0.0


# ---------------------------------------------------------------- the stage and the CLI


@pytest.fixture(scope="module")
def scene_tiles() -> list[np.ndarray]:
    """Non-overlapping 256² grid tiles of generated aerial-like scenes (no two show the same ground)."""
    tiles = []
    for seed, kind in enumerate(("mixed", "buildings", "agricultural")):
        img = aerial(seed, 768, 768, kind).transpose(1, 2, 0)
        for y in range(0, img.shape[0] - 255, 256):
            for x in range(0, img.shape[1] - 255, 256):
                tiles.append(np.ascontiguousarray(img[y : y + 256, x : x + 256]))
    return tiles


def test_distinct_scene_tiles_are_not_grouped(scene_tiles):
    """What the stage tests below take for granted of the generated tiles."""
    ph, dh = hashes(scene_tiles)
    assert len(dd.near_edges(ph, dh, 5, 5)) == 0
    assert len(dd.exact_edges([pixel_hash(t) for t in scene_tiles])) == 0


def _tile_row(tile_id, scene, rgb, source="src", gsd=1.0, geom=None, richness=1.0, filt=None):
    ph, dh = hashes([rgb])
    return {"tile_id": tile_id, "scene_id": scene, "source": source, "scene_path": f"{scene}.tif",
            "width": rgb.shape[1], "height": rgb.shape[0], "gsd_m": gsd, "sha256": f"sha-{tile_id}",
            "pixel_sha256": pixel_hash(rgb), "phash": int(ph[0]), "dhash": int(dh[0]), "richness": richness,
            "geometry": shapely.to_wkb(geom) if geom is not None else None, "filter_reason": filt}


@pytest.fixture()
def hand_build(tmp_path, scene_tiles) -> tuple[Path, list[np.ndarray]]:
    """Two tiles parts: 5 distinct tiles, an exact copy, a JPEG copy from a preferred source, a filtered
    tile, two overlapping footprints of different scenes, and a flat tile below the richness threshold."""
    t = scene_tiles
    flat = np.full((64, 64, 3), 90, np.uint8)
    flat[0, 0] = 91
    rows0 = [_tile_row(f"t{k}", f"s{k}", t[k]) for k in range(5)]
    rows0.append(_tile_row("t5", "s5", t[0].copy()))
    rows1 = [_tile_row("t6", "s6", _jpeg(t[1], 70), source="best"),
             _tile_row("t7", "s7", t[0].copy(), filt="blank tile (one constant colour)"),
             _tile_row("t8", "s8", t[10], geom=shapely.box(0, 0, 1, 1)),
             _tile_row("t9", "s9", t[11], geom=shapely.box(0.1, 0.1, 0.9, 0.9)),
             _tile_row("ta", "s10", flat, richness=0.0), _tile_row("tb", "s11", flat.copy() + 0, richness=0.0)]
    rows1[-1]["pixel_sha256"] = "different-on-purpose"
    layout = OutputLayout(tmp_path / "out")
    layout.tiles_dir.mkdir(parents=True)
    mf.write_table(mf.table_from_rows(rows0, mf.TILES_SCHEMA), layout.tile_part(0))
    mf.write_table(mf.table_from_rows(rows1, mf.TILES_SCHEMA), layout.tile_part(1))
    return layout.root, t


def test_run_dedup_writes_expected_table(hand_build):
    from rs4m.stages.dedup import DedupConfig, run_dedup

    out, _ = hand_build
    report = run_dedup(out, DedupConfig(min_richness=0.5, source_priority=("best",)))
    table = mf.read_table(out / "dedup.parquet", mf.DEDUP_SCHEMA)
    rows = {r["tile_id"]: r for r in table.to_pylist()}
    assert set(rows) == {"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t8", "t9", "ta", "tb"}  # t7 filtered
    assert (rows["t5"]["dup_of"], rows["t5"]["dup_reason"], rows["t5"]["distance"]) == ("t0", "exact", 0.0)
    assert rows["t0"]["dup_of"] is None and rows["t0"]["dup_group"] == rows["t5"]["dup_group"] == dd.group_id("t0")
    assert (rows["t1"]["dup_of"], rows["t1"]["dup_reason"]) == ("t6", "near")  # the preferred source stays
    assert rows["t1"]["distance"] <= 5 and rows["t6"]["dup_reason"] is None
    assert (rows["t9"]["dup_of"], rows["t9"]["dup_reason"]) == ("t8", "geo")
    assert rows["t9"]["distance"] == pytest.approx(0.0, abs=1e-6)
    for tid in ("t2", "t3", "t4", "ta", "tb"):  # flat tiles below min_richness take no part in near search
        assert rows[tid]["dup_group"] is None and rows[tid]["dup_reason"] is None
    assert (report.tiles, report.searched, report.groups, report.duplicates) == (11, 9, 3, 3)
    assert report.tiles_by_reason == {"exact": 1, "geo": 1, "near": 1}
    assert report.pairs_by_source == {"best | src": {"near": 1}, "src | src": {"exact": 1, "near": 1, "geo": 1}}
    saved = json.loads((out / "dedup.json").read_text())
    assert saved["duplicates"] == 3 and saved["config"]["min_richness"] == 0.5
    # re-runnable: a second run with other settings replaces the results
    report = run_dedup(out, DedupConfig(geo=False, min_richness=0.5))
    assert report.tiles_by_reason == {"exact": 1, "near": 1}
    rows = {r["tile_id"]: r for r in mf.read_table(out / "dedup.parquet", mf.DEDUP_SCHEMA).to_pylist()}
    assert rows["t9"]["dup_reason"] is None and rows["t6"]["dup_of"] == "t1"  # no priority, same gsd and size


def test_leakage_then_dedup_excludes(hand_build, tmp_path):
    from rs4m.stages.dedup import DedupConfig, run_dedup
    from rs4m.stages.leakage import run_leakage

    out, t = hand_build
    bench = tmp_path / "bench"
    (bench / "test").mkdir(parents=True)
    Image.fromarray(t[2]).save(bench / "test" / "same.png")  # pixel-identical to tile t2
    Image.fromarray(np.ascontiguousarray(t[3][:, ::-1])).save(bench / "test" / "mirrored.jpg", quality=95)
    big = np.concatenate([np.concatenate([t[20], t[4]], 1), np.concatenate([t[21], t[22]], 1)], 0)
    Image.fromarray(big).save(bench / "test" / "scene.png")  # tile t4 is its top-right crop
    (bench / "test" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (bench / "labels.txt").write_text("not an image")
    report = run_leakage(out, {"bench": bench}, exclude=True)
    assert [p["path"] for p in report.problems] == ["test/broken.png"]
    assert report.images == 3 and report.leaked_tiles == 3
    leaks = mf.read_table(out / "leakage.parquet", mf.LEAKAGE_SCHEMA).to_pylist()
    got = {(r["tile_id"], r["benchmark_image"], r["kind"]) for r in leaks}
    assert got == {("t2", "test/same.png", "exact"), ("t3", "test/mirrored.jpg", "near"),
                   ("t4", "test/scene.png", "crop")}
    assert mf.read_metadata(out / "leakage.parquet", "exclude") is True
    run_dedup(out, DedupConfig(min_richness=0.5))
    rows = {r["tile_id"]: r for r in mf.read_table(out / "dedup.parquet", mf.DEDUP_SCHEMA).to_pylist()}
    assert [rows[k]["dup_reason"] for k in ("t2", "t3", "t4")] == ["leak"] * 3
    assert rows["t2"]["dup_of"] is None and rows["t2"]["dup_group"] is not None
    # without --exclude the next dedup keeps them
    run_leakage(out, {"bench": bench}, exclude=False)
    run_dedup(out, DedupConfig(min_richness=0.5))
    rows = {r["tile_id"]: r for r in mf.read_table(out / "dedup.parquet", mf.DEDUP_SCHEMA).to_pylist()}
    assert rows["t2"]["dup_reason"] is None


def _loveda_release(root: Path, t: list[np.ndarray], outside: Path) -> None:
    """A LoveDA layout: a test image, its mask, a train image, a link out of the root and a broken test image."""
    for rel, rgb in (("Test/Urban/images_png/1.png", t[2]), ("Test/Urban/masks_png/1.png", t[3]),
                     ("Train/Rural/images_png/2.png", t[4])):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / rel)
    Image.fromarray(t[0]).save(outside)
    (root / "Test/Rural/images_png").mkdir(parents=True)
    (root / "Test/Rural/images_png/3.png").symlink_to(outside)
    (root / "Test/Rural/images_png/4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def test_leakage_against_an_adapter_takes_its_test_split_only(hand_build, tmp_path):
    from rs4m.stages.leakage import run_leakage

    out, t = hand_build
    root = tmp_path / "LoveDA"
    _loveda_release(root, t, tmp_path / "elsewhere.png")
    report = run_leakage(out, {"loveda": root})
    got = {(r["tile_id"], r["benchmark_image"], r["kind"])
           for r in mf.read_table(out / "leakage.parquet", mf.LEAKAGE_SCHEMA).to_pylist()}
    assert got == {("t2", "Test/Urban/images_png/1.png", "exact")}  # not the mask, the train image, the link
    problems = {p["path"]: p["reason"] for p in report.problems}
    assert set(problems) == {"Test/Rural/images_png/3.png", "Test/Rural/images_png/4.png"}
    assert "outside" in problems["Test/Rural/images_png/3.png"]
    # another NAME reads the same folder as a folder: the mask and the train image too, never the link out of it
    report = run_leakage(out, {"mybench": root})
    got = {(r["tile_id"], r["benchmark_image"])
           for r in mf.read_table(out / "leakage.parquet", mf.LEAKAGE_SCHEMA).to_pylist()}
    assert got == {("t2", "Test/Urban/images_png/1.png"), ("t3", "Test/Urban/masks_png/1.png"),
                   ("t4", "Train/Rural/images_png/2.png")}
    assert "outside" in {p["path"]: p["reason"] for p in report.problems}["Test/Rural/images_png/3.png"]


def test_cli_leakage_against_a_wrong_folder_is_one_line(hand_build, tmp_path):
    from click.testing import CliRunner

    from rs4m.cli import get_cli

    out, t = hand_build
    runner = CliRunner()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/readme.txt").write_text("no images here")
    Image.fromarray(t[2]).save(tmp_path / "notes/1.png")  # an image, but not in a LoveDA layout
    for against, says in ((f"loveda={tmp_path / 'notes'}", "no LoveDA images under"),
                          (f"mybench={tmp_path / 'empty'}", "does not exist")):
        result = runner.invoke(get_cli(), ["leakage", str(out), "--against", against])
        assert result.exit_code == 2 and says in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    train_only = tmp_path / "train_only/Train/Urban/images_png"
    train_only.mkdir(parents=True)
    Image.fromarray(t[4]).save(train_only / "2.png")
    result = runner.invoke(get_cli(), ["leakage", str(out), "--against", f"loveda={tmp_path / 'train_only'}"])
    assert result.exit_code == 2 and "none in its test split(s) test" in result.stderr, result.output


def test_cli_dedup_and_leakage(hand_build, tmp_path):
    from click.testing import CliRunner

    from rs4m.cli import get_cli

    out, _ = hand_build
    runner = CliRunner()
    result = runner.invoke(get_cli(), ["dedup", str(out), "--no-geo", "--radius", "4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # default min_richness 0: the two flat tiles now pair as near duplicates
    assert report["tiles_by_reason"] == {"exact": 1, "near": 2} and report["dihedral"] == "canonical"  # default on
    off = json.loads(runner.invoke(get_cli(), ["dedup", str(out), "--no-geo", "--radius", "4", "--no-dihedral",
                                               "--json"]).stdout)
    assert off["dihedral"] == "off" and off["tiles_by_reason"] == {"exact": 1, "near": 2}
    assert json.loads((out / "dedup.json").read_text())["config"]["radius_bits"] == 4
    result = runner.invoke(get_cli(), ["leakage", str(out), "--against", "nonsense"])
    assert result.exit_code == 2 and "NAME=PATH" in result.stderr
    result = runner.invoke(get_cli(), ["leakage", str(out), "--against", f"x={tmp_path / 'missing'}"])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(get_cli(), ["dedup", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "rs4m tile" in result.stderr


def test_dedup_config_rejects_bad_values():
    from rs4m.errors import ConfigError
    from rs4m.stages.dedup import DedupConfig

    with pytest.raises(ConfigError, match="geo_measure"):
        DedupConfig(geo_measure="area")
    with pytest.raises(ConfigError, match="radius_bits"):
        DedupConfig(radius_bits=40)


def test_dedup_parquet_is_one_row_per_unfiltered_tile(hand_build):
    from rs4m.stages.dedup import run_dedup

    out, _ = hand_build
    run_dedup(out)
    assert pq.read_table(out / "dedup.parquet").num_rows == 11


def _files_and_times(out: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(out).as_posix(), p.stat().st_mtime_ns) for p in out.rglob("*"))


def test_cli_leakage_refuses_hostile_benchmark_names_writing_nothing(hand_build, tmp_path):
    from click.testing import CliRunner

    from rs4m.cli import get_cli

    out, t = hand_build
    bench = tmp_path / "bänch mark"  # a PATH with a space and a non-ASCII letter is read as any other
    bench.mkdir()
    Image.fromarray(t[2]).save(bench / "é 1.png")
    before = _files_and_times(out)
    for name in ("a/b", "../x", "a\nb", "x y", "", "LoveDA"):  # the last: an adapter's name in other letters
        result = CliRunner().invoke(get_cli(), ["leakage", str(out), "--against", f"{name}={bench}"])
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (name, result.output)
        assert _files_and_times(out) == before, name  # nothing written on refusal
    result = CliRunner().invoke(get_cli(), ["leakage", str(out), "--against", f"my_bench-2.0={bench}"])
    assert result.exit_code == 0 and "1 images, 1 tiles leak" in result.stderr, result.output


def test_leakage_folder_with_symlink_loops_and_an_unreadable_folder_says_so(hand_build, tmp_path, monkeypatch):
    import os

    from rs4m.stages.leakage import run_leakage

    out, t = hand_build
    bench = tmp_path / "bench"
    (bench / "d").mkdir(parents=True)
    (bench / "locked").mkdir()
    Image.fromarray(t[2]).save(bench / "1.png")
    Image.fromarray(t[3]).save(bench / "locked" / "2.png")
    (bench / "d" / "up").symlink_to(bench)  # a folder loop: not entered
    (bench / "self.png").symlink_to(bench / "self.png")  # a file loop: resolving it raises, it must not crash
    (bench / "x.png").symlink_to(bench / "y.png")
    (bench / "y.png").symlink_to(bench / "x.png")
    real_scandir = os.scandir

    def scandir(path="."):  # tests run as root, whom permissions do not stop: the folder is refused here
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = run_leakage(out, {"bench": bench})
    problems = {p["path"]: p["reason"] for p in report.problems}
    assert set(problems) == {"locked", "self.png", "x.png", "y.png"}  # the unreadable folder is not silently skipped
    assert "cannot be listed" in problems["locked"] and "loop" in problems["self.png"]
    assert report.images == 1 and report.leaked_tiles == 1


@pytest.mark.parametrize("link", ["outside", "loop"])
def test_leakage_never_reads_a_split_list_linked_from_outside_the_benchmark(hand_build, tmp_path, link):
    from rs4m.errors import ConfigError
    from rs4m.stages.leakage import run_leakage

    out, t = hand_build
    root = tmp_path / "HRSC2016"
    (root / "FullDataSet/AllImages").mkdir(parents=True)
    (root / "ImageSets").mkdir()
    Image.fromarray(t[2]).save(root / "FullDataSet/AllImages/1.bmp")
    Image.fromarray(t[3]).save(root / "FullDataSet/AllImages/2.bmp")
    (root / "ImageSets/train.txt").write_text("2\n")
    if link == "outside":
        (tmp_path / "elsewhere.txt").write_text("1\n")  # would make image 1 a test image
        (root / "ImageSets/test.txt").symlink_to(tmp_path / "elsewhere.txt")
    else:
        (root / "ImageSets/test.txt").symlink_to(root / "ImageSets/test.txt")
    with pytest.raises(ConfigError, match="none in its test split"):  # only the list inside it is read
        run_leakage(out, {"hrsc2016": root})
    (root / "ImageSets/test.txt").unlink()
    (root / "ImageSets/test.txt").write_text("1\n")
    report = run_leakage(out, {"hrsc2016": root})
    assert report.images == 1 and report.leaked_tiles == 1
