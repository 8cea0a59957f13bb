"""Overlap search: features, candidate pairs, geometric verification (a crop at another scale, rotation or
mirror is found with its transform; an adjacent tile is not)."""

from __future__ import annotations

import pickle
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


def test_one_pass_detection_and_description_gives_the_features_a_later_description_gives(scene):
    from rs4m.overlap import features as ft

    grey, factor, size = ft._work_grey(scene[:512, :512], 512)
    orb, keypoints, desc = ft._detect(grey, factor, size, 112)
    one_pass, described = ft._features(keypoints, desc, factor, size), ft._describe(orb, grey, keypoints, factor, size)
    assert len(one_pass.desc) == 112
    assert np.array_equal(one_pass.desc, described.desc) and np.array_equal(one_pass.xy_q, described.xy_q)
    assert np.array_equal(extract_both(scene[:512, :512], 112, 512)[0].desc, extract(scene[:512, :512], 112).desc)


def test_detection_settings_change_the_candidates(scene):
    from rs4m.overlap import features as ft

    grey, factor, size = ft._work_grey(scene[:512, :512], 512)
    tested = {(t, c): ft._detect(grey, factor, size, 112, fast_threshold=t, candidates=c)[1]
              for t, c in ((10, 4), (40, 4), (10, 1))}
    positions = {k: {kp.pt for kp in kps} for k, kps in tested.items()}
    assert positions[(10, 4)] != positions[(40, 4)] and positions[(10, 4)] != positions[(10, 1)]
    assert len(tested[(10, 1)]) <= 112 and len(tested[(10, 4)]) == 112
    # a tile at its own scale is detected at FAST threshold 20, an enlarged one (smoother) at 10
    small = np.ascontiguousarray(scene[:256, :256])
    for image, threshold in ((scene[:512, :512], ft.FAST_THRESHOLD), (small, ft.ENLARGED_FAST_THRESHOLD)):
        assert np.array_equal(extract(image, 112).desc, extract(image, 112, fast_threshold=threshold).desc)
    smooth = np.ascontiguousarray(_synthetic()[:256, :256])  # where the two thresholds detect differently
    assert not np.array_equal(extract(smooth, 112).desc, extract(smooth, 112, fast_threshold=ft.FAST_THRESHOLD).desc)


def test_rescaled_rotated_crop_is_found_with_its_transform(scene):
    a = np.ascontiguousarray(scene[100:420, 100:420])  # 320² at the scene's scale
    b = np.ascontiguousarray(np.rot90(_crop(scene, 200, 180, 400, 320)))  # 1.25× coarser, rotated by 90°
    m = verify(extract(a), extract(b))
    assert m is not None and not m.mirrored
    assert m.scale == pytest.approx(400 / 320, rel=0.05)
    assert min(abs(m.rotation_deg - r) for r in (90, -90)) < 3
    # b's ground (200..600) overlaps a's (100..420) on 220 × 240 of a's pixels, over a's 320² (a is smaller)
    assert m.overlap_frac == pytest.approx(220 * 240 / 320**2, abs=0.05)


def test_crop_at_twice_the_scale_is_found(scene):
    """A 256² crop and 512² of ground around it shrunk to 256² (2× coarser): with ORB's 31-px border and no
    enlarging of images below the working size neither synthetic nor aerial pair is found."""
    a = np.ascontiguousarray(scene[250:506, 250:506])
    b = _crop(scene, 150, 130, 512, 256)
    m = verify(extract(a), *extract_both(b))
    assert m is not None and m.inliers >= 8
    assert m.scale == pytest.approx(2.0, rel=0.05)
    assert m.overlap_frac == pytest.approx(1.0, abs=0.05)  # a lies inside b's ground


def test_small_images_are_enlarged_at_most_twice_and_large_ones_reduced():
    from rs4m.overlap.features import _work_grey

    for side, work in ((100, 200), (256, 512), (400, 512), (1024, 512)):
        grey, factor, size = _work_grey(np.zeros((side, side, 3), np.uint8), 512)
        assert grey.shape == (work, work) and factor == pytest.approx(work / side) and size == (side, side)
    f = extract(_synthetic()[:200, :300])
    assert (f.width, f.height) == (300, 200) and len(f.desc) > 50
    assert (f.xy() >= 0).all() and (f.xy()[:, 0] <= 300).all() and (f.xy()[:, 1] <= 200).all()


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


# --- in a build: features in the tile stage, overlap duplicates in dedup, overlap leakage -------------------------

import json  # noqa: E402
import os  # noqa: E402

from rs4m import manifest as mf  # noqa: E402
from tests.tiny import run, run_proc  # noqa: E402

#: ground of scene A (pixels of the canvas): 512², tiled 256² at stride 128, so A's own tiles overlap each other
A_GROUND = (0, 0, 512)
#: scene B: the canvas's (96..416, 64..384) ground, 320² shrunk to 256² (1.25× coarser) and rotated by 90°
B_GROUND = (96, 64, 320)


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    from rs4m.demo import synthetic_scene

    # dense roofs: the self-similar texture that makes adjacent ground hard to tell from overlapping ground
    return np.asarray(synthetic_scene(np.random.default_rng(4), 1024, 1024, "buildings"))


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)


@pytest.fixture(scope="module")
def scenes(canvas, tmp_path_factory) -> Path:
    """A (nine overlapping grid tiles: 256² at stride 128), B (a rescaled, rotated crop of A's ground), C
    (ground 8 px below A's, not overlapping it)."""
    src = tmp_path_factory.mktemp("overlap") / "src"
    _save(src / "a.png", canvas[:512, :512])
    x, y, side = B_GROUND
    _save(src / "b.png", np.rot90(_crop(canvas, x, y, side, 256)))
    _save(src / "c.png", canvas[520:776, :256])
    return src


def _recipe(tmp: Path, src: Path, overlap: bool) -> Path:
    path = tmp / f"overlap-{overlap}.toml"
    path.write_text(f'[build]\ntile_size = 256\nstride = 128\nscenes_per_unit = 1\nformat = "png"\n'
                    f'[dedup]\noverlap = {str(overlap).lower()}\n'
                    f'[[sources]]\nname = "folder"\npath = "{src}"\n')
    return path


def _build(out: Path, recipe: Path, *flags) -> None:
    result = run("build", out, "--recipe", recipe, "--workers", 1, "-q", "--keep-dropped", *flags)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def overlap_build(scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "out"
    _build(out, _recipe(out.parent, scenes, True))
    return out


def _dedup_rows(out: Path) -> list[dict]:
    return mf.read_table(out / "dedup.parquet", mf.DEDUP_OVERLAP_SCHEMA).to_pylist()


def test_build_finds_a_rescaled_rotated_crop_of_another_scene(overlap_build):
    rows = _dedup_rows(overlap_build)
    scene = {r["tile_id"]: r["scene_path"] for r in rows}
    dups = [r for r in rows if r["dup_reason"] == "overlap"]
    assert len(dups) == 1, dups  # B and the A tile it shows most of; nothing else
    dup = dups[0]
    assert {scene[dup["tile_id"]], scene[dup["dup_of"]]} == {"a.png", "b.png"}
    # B's pixel is 1.25 of A's; seen from the A tile, 0.8
    assert dup["overlap_scale"] == pytest.approx(1.25 if scene[dup["tile_id"]] == "b.png" else 0.8, rel=0.05)
    assert abs(abs(dup["overlap_rotation"]) - 90) < 3
    # the A tile at (128, 128) lies wholly inside B's ground: all of the smaller tile is shared
    a_tile = dup["dup_of"] if scene[dup["dup_of"]] == "a.png" else dup["tile_id"]
    tiles = {r["tile_id"]: r for r in mf.read_parts(sorted((overlap_build / "tiles").glob("part-*.parquet")),
                                                    mf.TILES_SCHEMA).to_pylist()}
    assert (tiles[a_tile]["x"], tiles[a_tile]["y"]) == (128, 128)
    assert dup["overlap_frac"] == pytest.approx(1.0, abs=0.05)
    assert dup["distance"] == pytest.approx(1 - dup["overlap_frac"], abs=1e-6)


def test_adjacent_ground_and_same_scene_tiles_are_not_paired(overlap_build):
    rows = _dedup_rows(overlap_build)
    grouped = [r for r in rows if r["dup_group"] is not None]
    assert all(r["scene_path"] != "c.png" for r in rows if r["dup_group"] is not None)  # 8 px away: no pair
    # A's nine tiles overlap each other by a quarter to a half, yet at most one of them is in a group (with B)
    assert sum(r["scene_path"] == "a.png" for r in grouped) == 1
    report = json.loads((overlap_build / "dedup.json").read_text())
    assert report["overlap"]["features"] == 11 and report["overlap"]["pairs"] == 1
    assert report["pairs_by_source"] == {"folder/src | folder/src": {"overlap": 1}}


def test_features_are_compact_and_one_row_per_stored_tile(overlap_build):
    parts = sorted((overlap_build / "features").glob("part-*.parquet"))
    assert len(parts) == 3  # one per unit (one scene each)
    feats = mf.read_parts(parts, mf.FEATURES_SCHEMA).to_pylist()
    assert len(feats) == 11 and not any(f["feature_error"] for f in feats)
    sizes = [len(f["desc"]) + len(f["xy"]) + len(f["mirror_desc"]) + len(f["mirror_xy"]) for f in feats]
    assert max(sizes) <= 4096 and min(sizes) > 2000


def test_overlap_off_writes_no_features_and_the_same_outputs(overlap_build, scenes, tmp_path):
    out = tmp_path / "off"
    _build(out, _recipe(tmp_path, scenes, False))
    assert not (out / "features").exists()
    assert mf.read_table(out / "dedup.parquet").schema.names == mf.DEDUP_SCHEMA.names
    assert not [r for r in mf.read_table(out / "dedup.parquet").to_pylist() if r["dup_group"] is not None]
    for name in ("a", "b", "c"):  # the shards do not depend on the features
        shard = f"shards/rs4m-{'abc'.index(name):05d}.tar"
        assert (out / shard).read_bytes() == (overlap_build / shard).read_bytes()
    # the same build turned on later computes the features of its done units, and finds the same
    _build(out, _recipe(tmp_path, scenes, False), "--overlap")
    assert _dedup_rows(out) == _dedup_rows(overlap_build)


def _unit_rows(out: Path) -> dict[str, list]:
    read = {"tiles": mf.TILES_SCHEMA, "features": mf.FEATURES_SCHEMA}
    return {k: sorted(mf.read_parts(sorted((out / k).glob("part-*.parquet")), schema).to_pylist(),
                      key=lambda r: r["tile_id"]) for k, schema in read.items()}


def test_killed_after_a_features_part_resumes_consistent(overlap_build, scenes, tmp_path):
    out, recipe = tmp_path / "killed", _recipe(tmp_path, scenes, True)
    env = {**os.environ, "RS4M_KILL_AT": "tile:features#2"}
    killed = run_proc("build", out, "--recipe", recipe, "--workers", 1, "-q", "--keep-dropped", env=env)
    assert killed.returncode == -9
    assert (out / "features/part-00001.parquet").exists() and not (out / "tiles/part-00001.parquet").exists()
    (out / "features/part-00000.parquet").write_bytes(b"garbled")  # a damaged features part: its unit is redone
    _build(out, recipe)
    assert _unit_rows(out) == _unit_rows(overlap_build)
    assert _dedup_rows(out) == _dedup_rows(overlap_build)


def test_leakage_reports_a_rescaled_flipped_crop(overlap_build, canvas, tmp_path):
    bench = tmp_path / "bench"
    crop = _crop(canvas, 120, 120, 280, 200)  # 280² of A's ground shrunk to 200² (1.4× coarser), then flipped
    _save(bench / "test/leak.png", np.ascontiguousarray(np.rot90(crop[:, ::-1])))
    _save(bench / "test/other.png", canvas[700:940, 600:840])  # ground no tile shows
    hashes_only = run("leakage", overlap_build, "--against", f"bench={bench}", "--no-overlap", "--json")
    assert hashes_only.exit_code == 0, hashes_only.output
    assert json.loads(hashes_only.stdout)["leaked_tiles"] == 0  # a rescaled crop escapes the hashes
    result = run("leakage", overlap_build, "--against", f"bench={bench}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["by_benchmark"]["bench"]["by_kind"]["overlap"] >= 1
    leaks = mf.read_table(overlap_build / "leakage.parquet", mf.LEAKAGE_OVERLAP_SCHEMA).to_pylist()
    assert leaks and {r["benchmark_image"] for r in leaks} == {"test/leak.png"}
    assert {r["kind"] for r in leaks} == {"overlap"}
    tiles = {r["tile_id"]: r for r in mf.read_parts(sorted((overlap_build / "tiles").glob("part-*.parquet")),
                                                    mf.TILES_SCHEMA).to_pylist()}
    by_tile = {(tiles[r["tile_id"]]["scene_path"], tiles[r["tile_id"]]["x"], tiles[r["tile_id"]]["y"]): r
               for r in leaks}
    # A's tile at (128, 128) shows 256² of the image's 280² of ground, at 1.4 of its pixels per image pixel
    assert by_tile["a.png", 128, 128]["overlap_frac"] == pytest.approx(256**2 / 280**2, abs=0.05)
    assert by_tile["a.png", 128, 128]["overlap_scale"] == pytest.approx(1.4, rel=0.05)
    # B (1.25 canvas pixels a pixel) shows 280 × 264 of them
    assert by_tile["b.png", 0, 0]["overlap_frac"] == pytest.approx(264 / 280, abs=0.05)
    assert by_tile["b.png", 0, 0]["overlap_scale"] == pytest.approx(1.4 / 1.25, rel=0.05)
    assert all(r["overlap_frac"] >= 0.2 for r in leaks)
    stats = json.loads(run("stats", overlap_build, "--json").stdout)
    assert stats["leaked"]["by_benchmark_source"] == {"bench | folder/src": {"overlap": len(leaks)}}
    assert stats["duplicates"]["by_source_pair"] == {"folder/src | folder/src": {"overlap": 1}}
    assert stats["duplicates"]["by_reason"] == {"overlap": 1}


def test_inspect_dups_outlines_the_shared_ground_on_both_tiles(overlap_build, tmp_path):
    from rs4m.report.inspect import OUTLINE, PAD_PX

    sheet_path = tmp_path / "dups.png"
    result = run("inspect", overlap_build, "--dups", "--grid", sheet_path, "--thumb", 128, "--json")
    assert result.exit_code == 0, result.output
    (group,) = json.loads(result.stdout)["groups"]
    kept, dup = group["tiles"]
    assert dup["dup_reason"] == "overlap" and dup["overlap_scale"] is not None
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    red = (sheet == OUTLINE).all(axis=-1)
    cells = [red[PAD_PX : PAD_PX + 128, x : x + 128].sum() for x in (PAD_PX, 2 * PAD_PX + 128)]
    # the A tile lies wholly inside B's ground: its whole border is outlined; on B, a 256/320 square turned 90°
    assert cells[0] > 300 and cells[1] > 300, cells


def test_a_tile_whose_features_fail_is_a_row_without_features(scenes, tmp_path, monkeypatch):
    from rs4m.overlap import features as feats

    real, b_pixels = feats.extract_both, np.asarray(Image.open(scenes / "b.png").convert("RGB"))

    def fails_on_b(rgb, *args):
        if np.array_equal(rgb, b_pixels):
            raise RuntimeError("extractor crashed")
        return real(rgb, *args)

    monkeypatch.setattr(feats, "extract_both", fails_on_b)
    out = tmp_path / "out"
    result = run("build", out, "--recipe", _recipe(tmp_path, scenes, True), "--workers", 1, "--keep-dropped")
    assert result.exit_code == 0 and "tiles without features 1" in result.stderr
    rows = _unit_rows(out)
    failed = [r for r in rows["features"] if r["feature_error"]]
    assert len(failed) == 1 and "extractor crashed" in failed[0]["feature_error"] and failed[0]["desc"] is None
    assert len(rows["features"]) == len(rows["tiles"]) == 11  # the tile and its scene stay in the build
    assert not [r for r in _dedup_rows(out) if r["dup_reason"] == "overlap"]  # B had no features to match


def test_overlap_settings_are_checked_and_missing_features_named(scenes, tmp_path):
    from rs4m.config import DedupConfig, from_mapping
    from rs4m.errors import ConfigError

    with pytest.raises(ConfigError, match="overlap_frac must be within"):
        from_mapping(DedupConfig, {"overlap": True, "overlap_frac": 1.5}, "[dedup]")
    with pytest.raises(ConfigError, match="overlap must be bool"):
        from_mapping(DedupConfig, {"overlap": "yes"}, "[dedup]")
    out = tmp_path / "plain"
    _build(out, _recipe(tmp_path, scenes, False))
    result = run("dedup", out, "--overlap")
    assert result.exit_code != 0 and "rs4m build" in result.output and "--overlap" in result.output


def test_features_of_an_older_extraction_are_refused_then_made_again(overlap_build, scenes, tmp_path):
    import shutil

    from rs4m.overlap.store import settings

    out = tmp_path / "old"
    shutil.copytree(overlap_build, out)
    part = out / "features/part-00001.parquet"
    table = mf.read_table(part, mf.FEATURES_SCHEMA)
    old = {**mf.read_metadata(part, "features"), "version": settings()["version"] - 1}
    mf.write_table(table, part, mf.FEATURES_SCHEMA, metadata={"features": old})
    result = run("dedup", out, "--overlap")
    assert result.exit_code != 0 and "part-00001.parquet" in result.output and "rs4m build" in result.output
    _build(out, _recipe(tmp_path, scenes, True))  # the unit with outdated features is tiled again
    assert mf.read_metadata(part, "features")["version"] == settings()["version"]
    assert _dedup_rows(out) == _dedup_rows(overlap_build)


def test_verify_accepts_and_force_removes_the_features(scenes, tmp_path):
    out = tmp_path / "out"
    _build(out, _recipe(tmp_path, scenes, True))
    assert run("verify", out).exit_code == 0
    _build(out, _recipe(tmp_path, scenes, False), "--force")
    assert not (out / "features").exists()


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
def test_lsh_keys_are_the_sampled_bytes_high_first(bits):
    from rs4m.overlap.candidates import byte_columns

    desc = np.random.default_rng(5).integers(0, 256, (50, 16), dtype=np.uint8)
    keys = lsh_keys(desc, tables=6, bits=bits)
    for t, cols in enumerate(byte_columns(6, bits, 16)):
        want = [int.from_bytes(bytes(row[cols].tolist()), "big") for row in desc]
        assert keys[:, t].tolist() == want


def test_in_memory_dedup_writes_what_the_bounded_one_writes(overlap_build, tmp_path):
    import shutil

    from rs4m.config import DedupConfig
    from rs4m.stages.dedup import run_dedup

    out = tmp_path / "copy"
    shutil.copytree(overlap_build, out)
    (out / "leakage.parquet").unlink(missing_ok=True)
    config = DedupConfig(overlap=True)
    run_dedup(out, config, bounded=True)
    bounded = _dedup_rows(out)
    run_dedup(out, config, bounded=False)
    assert _dedup_rows(out) == bounded and [r for r in bounded if r["dup_reason"] == "overlap"]


class ShuffledCluster:
    """A cluster engine run in this process that ships each unit and result through pickle (as to a worker),
    hands results back last unit first (a cluster returns them in the order they finish) and remembers which
    functions and how many units it ran."""

    name, cluster = "shuffled-cluster", True

    def __init__(self) -> None:
        self.ran: list[tuple[str, int]] = []

    def map_units(self, fn, units, retries=2):
        units = list(units)
        self.ran.append((fn.__name__, len(units)))
        def shipped(unit):
            return pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(unit)))))

        return reversed([(u, shipped(u)) for u in units])

    def close(self) -> None:
        pass


def test_verification_on_a_cluster_writes_what_one_process_writes(overlap_build, tmp_path, monkeypatch):
    import shutil

    from rs4m.config import DedupConfig
    from rs4m.overlap import search
    from rs4m.stages.dedup import run_dedup

    config = DedupConfig(overlap=True)
    here, spread = (shutil.copytree(overlap_build, tmp_path / name) for name in ("here", "spread"))
    run_dedup(here, config)
    monkeypatch.setattr(search, "VERIFY_UNIT_PAIRS", 2)  # many small units, handed back in reverse
    engine = ShuffledCluster()
    run_dedup(spread, config, engine=engine)
    verify_runs = [n for name, n in engine.ran if name == "verify_unit"]
    assert verify_runs and verify_runs[0] > 2
    assert [name for name, _ in engine.ran].count("slice_votes") == 16  # the candidate search: one run a table
    assert [r for r in _dedup_rows(here) if r["dup_reason"] == "overlap"]
    assert (here / "dedup.parquet").read_bytes() == (spread / "dedup.parquet").read_bytes()


def test_pairs_verified_on_a_cluster_come_back_in_the_order_of_one_process(overlap_build, monkeypatch):
    from rs4m.layout import OutputLayout
    from rs4m.overlap import search
    from rs4m.overlap.store import read_features
    from rs4m.stages.overlap import feature_parts

    fs = read_features(feature_parts(OutputLayout(overlap_build)))
    here = search.find_overlaps(fs, 0.2)
    monkeypatch.setattr(search, "VERIFY_UNIT_PAIRS", 1)
    spread = search.find_overlaps(fs, 0.2, engine=ShuffledCluster())
    assert len(here) > 1
    for name in ("i", "j", "frac", "scale", "rotation", "mirrored", "inliers"):
        assert np.array_equal(getattr(here, name), getattr(spread, name)), name


def test_the_candidate_search_cut_into_slices_on_a_cluster_equals_one_process():
    from rs4m.overlap.candidates import candidate_pairs_by_table, lsh_keys

    rng = np.random.default_rng(5)
    desc = rng.integers(0, 256, (400, 200, 16), dtype=np.uint8)  # 80,000 keypoints: a table is cut into slices
    desc[:, 150:] = rng.integers(0, 4, (400, 50, 16), dtype=np.uint8)  # low bytes: runs of many tiles, real votes
    for src, dst in ((3, 7), (50, 390), (120, 121)):
        noise = np.packbits(rng.random((80, 128)) < 0.06, axis=1)
        desc[dst, :80] = desc[src, 20:100] ^ noise
    owner = np.repeat(np.arange(400, dtype=np.int32), 200)
    keys = lsh_keys(desc.reshape(-1, 16))
    here = candidate_pairs_by_table((keys[:, t] for t in range(keys.shape[1])), owner, 400, min_votes=2,
                                    max_bucket=64)
    engine = ShuffledCluster()
    engine.parallelism = 40  # more CPUs than the local search's 16 slices: 64 a table (a power of two)
    spread = candidate_pairs_by_table((keys[:, t] for t in range(keys.shape[1])), owner, 400, min_votes=2,
                                      max_bucket=64, engine=engine)
    assert [name for name, _ in engine.ran] == ["slice_votes"] * keys.shape[1]
    assert all(n > 16 for _, n in engine.ran)  # the slices, less those with fewer than two keypoints
    pairs = set(zip(here[0].tolist(), here[1].tolist(), strict=True))
    assert {(3, 7), (50, 390), (120, 121)} <= pairs and len(pairs) > 10  # the low bytes vote for many pairs
    whole = candidate_pairs_by_table((keys[:, t] for t in range(keys.shape[1])), owner, 400, min_votes=2,
                                     max_bucket=64, slices=1)
    cut = candidate_pairs_by_table((keys[:, t] for t in range(keys.shape[1])), owner, 400, min_votes=2,
                                   max_bucket=64, slices=40)
    for a, b, c, d in zip(here, spread, whole, cut, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)


def test_a_failed_candidate_search_slice_stops_the_search_with_its_reason(overlap_build):
    from rs4m.engines import UnitFailure
    from rs4m.layout import OutputLayout
    from rs4m.overlap import search
    from rs4m.overlap.store import read_features
    from rs4m.stages.overlap import feature_parts

    class Failing(ShuffledCluster):
        def map_units(self, fn, units, retries=2):
            return [(u, UnitFailure("MemoryError: worker lost")) for u in units]

    fs = read_features(feature_parts(OutputLayout(overlap_build)))
    with pytest.raises(RuntimeError, match="candidate search slice failed: MemoryError: worker lost"):
        search.find_overlaps(fs, 0.2, engine=Failing())


def test_a_failed_verification_unit_stops_the_search_with_its_reason(overlap_build, tmp_path, monkeypatch):
    import shutil

    from rs4m.config import DedupConfig
    from rs4m.engines import UnitFailure
    from rs4m.errors import OutputError
    from rs4m.overlap import search
    from rs4m.stages.dedup import run_dedup

    class Failing(ShuffledCluster):
        def map_units(self, fn, units, retries=2):
            if fn.__name__ != "verify_unit":
                return super().map_units(fn, units, retries)
            return [(u, UnitFailure("worker lost")) for u in units]

    out = shutil.copytree(overlap_build, tmp_path / "out")
    before = (out / "dedup.parquet").read_bytes()
    monkeypatch.setattr(search, "VERIFY_UNIT_PAIRS", 2)
    with pytest.raises(OutputError, match="worker lost"):
        run_dedup(out, DedupConfig(overlap=True), engine=Failing())
    assert (out / "dedup.parquet").read_bytes() == before  # nothing half-written


def test_python_api_plan_takes_the_overlap_switch(scenes, tmp_path):
    import rs4m

    assert rs4m.make_plan(sources=[f"folder={scenes}"], overlap=True).dedup.overlap is True
    assert rs4m.make_plan(sources=[f"folder={scenes}"]).dedup.overlap is False
    recipe = _recipe(tmp_path, scenes, True)
    assert rs4m.make_plan(recipe).dedup.overlap is True
    assert rs4m.make_plan(recipe, overlap=False).dedup.overlap is False  # --no-overlap wins over the recipe


def test_votes_taken_a_key_slice_at_a_time_are_the_same():
    from rs4m.overlap.candidates import _table_votes

    rng = np.random.default_rng(0)
    key = rng.integers(0, 2**32, 1 << 17, dtype=np.uint64).astype(np.uint32)
    key[: 1 << 15] = key[1 << 16 : (1 << 16) + (1 << 15)]  # a quarter of the keys shared by two keypoints
    owner = rng.integers(0, 5000, len(key))
    whole, sliced = _table_votes(key, owner, 5000, 32, slices=1), _table_votes(key, owner, 5000, 32, slices=8)
    assert len(whole) > 30000 and np.array_equal(np.sort(whole), np.sort(sliced))


def test_keys_made_in_chunks_into_a_buffer_and_int32_owners_give_the_same_votes(monkeypatch):
    from rs4m.overlap import candidates as cand

    rng = np.random.default_rng(1)
    desc = rng.integers(0, 256, (1 << 17, 16), dtype=np.uint8)
    desc[: 1 << 15] = desc[1 << 16 : (1 << 16) + (1 << 15)]  # a quarter of the descriptors shared
    cols = cand.byte_columns(1, 32, 16)[0]
    want = desc[:, cols].astype(np.uint32) @ (np.uint32(1) << np.array([24, 16, 8, 0], np.uint32))
    monkeypatch.setattr(cand, "KEY_CHUNK", 1000)  # chunks that do not divide the rows
    buffer = np.zeros(len(desc) + 7, np.uint32)
    keys = cand.table_keys(desc, cols, buffer[3 : 3 + len(desc)])
    assert np.array_equal(keys, want) and not buffer[:3].any() and not buffer[3 + len(desc) :].any()
    owner = rng.integers(0, 5000, len(desc))
    wide = cand._table_votes(keys, owner.astype(np.int64), 5000, 32)
    narrow = cand._table_votes(keys, owner.astype(cand.owner_dtype(5000)), 5000, 32)
    assert len(wide) > 30000 and np.array_equal(wide, narrow)
    with pytest.raises(ValueError, match="256"):
        cand._table_votes(keys, owner, 5000, 32, slices=257)


def test_inliers_on_a_line_span_no_area_of_the_overlap(scene):
    import shapely

    from rs4m.overlap.verify import _spread

    box = shapely.box(0, 0, 100, 100)
    assert _spread(np.array([[0.0, 0.0], [10, 10], [50, 50], [90, 90]]), box) == 0.0
    assert _spread(np.array([[0.0, 0.0], [100, 0], [100, 100], [0, 100]]), box) == pytest.approx(1.0)
    a = np.ascontiguousarray(scene[100:420, 100:420])
    m = verify(extract(a), extract(np.ascontiguousarray(scene[140:460, 160:480])))
    assert m is not None and m.spread > 0.2  # a real overlap: matches all over the shared ground


def test_excluded_overlap_leaks_leave_the_manifest(overlap_build, canvas, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(overlap_build, out)
    bench = tmp_path / "bench"
    _save(bench / "leak.png", np.rot90(_crop(canvas, 120, 120, 280, 200)))
    assert run("leakage", out, "--against", f"bench={bench}", "--overlap", "--exclude").exit_code == 0
    leaked = {r["tile_id"] for r in mf.read_table(out / "leakage.parquet", mf.LEAKAGE_SCHEMA).to_pylist()}
    assert leaked
    assert run("dedup", out).exit_code == 0 and run("catalog", out).exit_code == 0
    reasons = {r["tile_id"]: r["dup_reason"] for r in _dedup_rows(out)}
    assert all(reasons[t] == "leak" for t in leaked)
    kept = set(mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA)["tile_id"].to_pylist())
    assert kept and not kept & leaked


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_lost_features_part_beside_an_intact_tiles_part_is_refused_then_redone(overlap_build, scenes, tmp_path,
                                                                                damage):
    import shutil

    out = tmp_path / "lost"
    shutil.copytree(overlap_build, out)
    part = out / "features/part-00001.parquet"
    if damage == "deleted":
        part.unlink()
    else:
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    others = {p.name: p.read_bytes() for p in (out / "features").glob("part-*.parquet") if p != part}
    result = run("dedup", out, "--overlap")  # features of some units only: refused, naming the unit, never used
    assert result.exit_code != 0 and ("unit 1" in result.output or "part-00001" in result.output), result.output
    assert "rs4m build" in result.output and len(result.output.strip().splitlines()) == 1
    _build(out, _recipe(tmp_path, scenes, True))  # the unit is tiled again, the others are left as they were
    assert {p.name: p.read_bytes() for p in (out / "features").glob("part-*.parquet") if p != part} == others
    assert _unit_rows(out) == _unit_rows(overlap_build)
    assert _dedup_rows(out) == _dedup_rows(overlap_build)


def test_flat_tiles_without_keypoints_take_part_in_the_search_harmlessly(canvas, tmp_path):
    from rs4m.overlap.search import find_leaks, find_overlaps
    from rs4m.overlap.store import read_features, tile_features_row, write_features_part

    flat = np.full((256, 256, 3), 120, np.uint8)
    a = np.ascontiguousarray(canvas[:256, :256])
    b = np.ascontiguousarray(np.rot90(canvas[:256, :256]))
    rows = [tile_features_row("f0", "s0", flat), tile_features_row("a", "s1", a),
            tile_features_row("f1", "s2", flat.copy()), tile_features_row("b", "s3", b)]
    assert [len(r["desc"]) for r in rows][::2] == [0, 0] and all(r["desc"] for r in rows[1::2])
    write_features_part(tmp_path / "all.parquet", rows)
    write_features_part(tmp_path / "flat.parquet", rows[::2])
    every, flats = read_features([tmp_path / "all.parquet"]), read_features([tmp_path / "flat.parquet"])
    assert len(every) == 4 and len(flats) == 2 and flats.desc.shape == (0, 16)
    found = find_overlaps(every, 0.5)
    assert [(every.ids[i], every.ids[j]) for i, j in zip(found.i, found.j, strict=True)] == [("a", "b")]
    assert len(find_overlaps(flats, 0.5)) == 0
    assert len(find_leaks(flats, every, 0.2)) == 0 and len(find_leaks(every, flats, 0.2)) == 0


def test_a_features_part_killed_mid_write_leaves_nothing_used(overlap_build, scenes, tmp_path):
    import shutil

    out = tmp_path / "mid"
    shutil.copytree(overlap_build, out)
    part = out / "features/part-00001.parquet"
    temp = part.with_name(f".{part.name}.a1b2c3d4.tmp")  # what a write killed before its rename leaves
    temp.write_bytes(part.read_bytes()[:1000])
    part.unlink()
    (out / "tiles/part-00001.parquet").unlink()  # killed before the tiles part, written after the features part
    _build(out, _recipe(tmp_path, scenes, True))
    assert not temp.exists() and part.exists()
    assert _unit_rows(out) == _unit_rows(overlap_build)
    assert _dedup_rows(out) == _dedup_rows(overlap_build)


# --- the search from the features parts, without holding every descriptor ----------------------------------------


def _same_pairs(a, b) -> None:
    assert len(a) == len(b)
    for name in ("i", "j", "frac", "frac_b", "scale", "rotation", "mirrored", "inliers"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_search_in_parts_finds_what_the_search_in_memory_finds(overlap_build, tmp_path):
    from rs4m.layout import OutputLayout, is_leftover_name
    from rs4m.overlap import search
    from rs4m.overlap.store import read_features
    from rs4m.stages.overlap import feature_parts

    parts = feature_parts(OutputLayout(overlap_build))
    fs = read_features(parts)
    here = search.find_overlaps(fs, 0.2)
    stored_pairs, stored = search.find_overlaps_in_parts(parts, 0.2, tmp_path)
    assert len(here) > 1
    _same_pairs(here, stored_pairs)
    assert stored.ids == fs.ids and np.array_equal(stored.group, fs.group)
    assert not list(tmp_path.iterdir())  # the planes file is removed
    assert not list(overlap_build.glob(".*.tmp"))  # the build's search removed its planes file
    assert is_leftover_name(".", ".dedup.parquet.abcd_123.tmp")  # one a killed search leaves: the next build's


def _random_parts(tmp: Path, tiles_per_part=(30, 0, 45, 25), seed=3) -> list[Path]:
    """Features parts of random tiles (112 keypoints per orientation, some with failed extraction), where a few
    tiles of other scenes are noisy copies (descriptors and positions) of earlier ones, mirrored or not."""
    from rs4m.overlap.store import KEYPOINTS, write_features_part

    rng = np.random.default_rng(seed)
    n = sum(tiles_per_part)
    desc = rng.integers(0, 256, (n, 2, KEYPOINTS, 16), dtype=np.uint8)
    xy = rng.integers(0, 256, (n, 2, KEYPOINTS, 2), dtype=np.uint8)
    for src, dst, side in ((2, 40, 0), (5, 90, 1), (33, 71, 0), (60, 99, 1)):
        noise = np.packbits(rng.random((KEYPOINTS, 128)) < 0.04, axis=1)
        desc[dst, side] = desc[src, 0] ^ noise  # side 1: the copy's mirror image is the tile
        xy[dst, side] = xy[src, 0]
    parts, row = [], 0
    for p, count in enumerate(tiles_per_part):
        rows = []
        for r in range(row, row + count):
            item = {"tile_id": f"t{r:04d}", "scene_id": f"s{r // 3}", "width": 512, "height": 512}
            if r % 17 == 11:
                item["feature_error"] = "ValueError: no keypoints"
            else:
                item.update(desc=desc[r, 0].tobytes(), xy=xy[r, 0].tobytes(), mirror_desc=desc[r, 1].tobytes(),
                            mirror_xy=xy[r, 1].tobytes())
            rows.append(item)
        row += count
        parts.append(tmp / f"part-{p:05d}.parquet")
        write_features_part(parts[-1], rows)
    return parts


def test_search_in_parts_equals_the_search_in_memory_on_random_features_with_planted_copies(tmp_path):
    from rs4m.overlap import search
    from rs4m.overlap.candidates import candidate_pairs_by_table
    from rs4m.overlap.store import read_features, write_planes

    parts = _random_parts(tmp_path)
    fs = read_features(parts)
    tables, owner = search._index([fs], [True])
    planes = tmp_path / "planes.bin"
    with open(planes, "wb") as out:
        stored = write_planes(parts, out)
    stored_tables, stored_owner = search._stored_index(stored, planes)
    assert np.array_equal(owner, stored_owner)
    for keys, stored_keys in zip(tables, stored_tables, strict=True):
        assert np.array_equal(keys, stored_keys)
    i, j, _ = candidate_pairs_by_table(*search._index([fs], [True]), len(fs))
    assert len(i) == 4  # the planted copies (random 128-bit descriptors do not share 32-bit keys by chance)
    here = search.find_overlaps(fs, 0.2)
    assert len(here) == 4 and here.mirrored.sum() == 2  # the planted copies are verified
    stored_pairs, _ = search.find_overlaps_in_parts(parts, 0.2, tmp_path, engine=None)
    _same_pairs(here, stored_pairs)
    last = len(fs) - 1  # a row of the last part
    some = search.read_feature_rows(stored, np.array([0, 40, last]))
    assert some.ids == [fs.ids[0], fs.ids[40], fs.ids[last]]
    assert np.array_equal(some.features(1, mirrored=True).desc, fs.features(40, mirrored=True).desc)
