"""A build a user can grow: new sources and new files are scanned and tiled alone (the existing units kept
byte for byte), changed [dedup] or [filters] settings rerun only what they affect, and every result equals a
build made from scratch with the final recipe. What changes a build's identity is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rs4m import manifest as mf
from rs4m.layout import OutputLayout
from tests.tiny import make_images, run, stderr_lines

UNIT_FILES = ("tiles/part-*.parquet", "shards/*.tar", "tiles/errors/part-*.parquet")


def recipe(path: Path, sources: list[Path], dedup: str = 'source_priority = ["folder/a"]', filters: str = "",
           tile_size: int = 32) -> Path:
    text = f'[build]\ntile_size = {tile_size}\nscenes_per_unit = 2\nformat = "png"\n'
    text += f"[dedup]\n{dedup}\n[filters]\n{filters}\n"
    text += "".join(f'[[sources]]\nname = "folder"\npath = "{s}"\n' for s in sources)
    path.write_text(text)
    return path


def build(out: Path, rec: Path, *flags: str):
    result = run("build", out, "--recipe", rec, "--workers", 1, "-q", *flags)
    assert result.exit_code == 0, result.output
    return result


def shard_keys(out: Path) -> list[str]:
    """The sample keys every shard holds, as webdataset reads them."""
    import webdataset as wds

    shards = [str(p) for p in sorted((out / "shards").glob("*.tar")) if p.stat().st_size]
    return sorted(s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False))


def units(out: Path) -> dict[str, tuple[bytes, int]]:
    """Every unit file's bytes and mtime_ns."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for pattern in UNIT_FILES for p in sorted(out.glob(pattern))}


def manifest_rows(out: Path) -> list[dict]:
    """The manifest's rows by content (where a tile's bytes sit, shard and offset, depends on the units)."""
    table = mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA).drop_columns(["shard", "offset"])
    return sorted(table.to_pylist(), key=lambda r: r["tile_id"])


def noisy_copy(src: Path, dst: Path, std: float = 10.0) -> None:
    """The same picture with mild noise: new bytes and pixels, hashes a few bits apart (a near duplicate)."""
    with Image.open(src) as im:
        pixels = np.asarray(im) + np.random.default_rng(9).normal(0, std, (im.height, im.width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(dst)


@pytest.fixture()
def two_sources(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    make_images(a, n=3, size=64, seed=1)
    make_images(b, n=2, size=64, seed=2, copies=0)
    (b / "from_a.png").write_bytes((a / "img01.png").read_bytes())  # a copy across sources: dedup must rerun
    return a, b


def test_added_source_is_scanned_and_tiled_alone(tmp_path, two_sources):
    a, b = two_sources
    out = tmp_path / "out"
    build(out, recipe(tmp_path / "a.toml", [a]))
    before = units(out)
    result = build(out, recipe(tmp_path / "ab.toml", [a, b]))
    assert "rs4m: note: growing the build: 1 source unchanged, 1 new (folder/b)" in stderr_lines(result)
    after = units(out)
    assert {k: after[k] for k in before} == before  # A's parts, shards and error parts: same bytes, untouched
    assert len(after) > len(before)
    assert shard_keys(out) == [r["tile_id"] for r in manifest_rows(out)]  # final shards: B's copy of A left
    scenes = mf.read_table(OutputLayout(out).scenes, mf.SCENES_SCHEMA).to_pylist()
    first_new = max(s["unit"] for s in scenes if s["source"] == "folder/a") + 1
    assert min(s["unit"] for s in scenes if s["source"] == "folder/b") == first_new
    dedup = mf.read_table(out / "dedup.parquet", mf.DEDUP_SCHEMA).to_pylist()
    assert any(r["source"] == "folder/b" and r["dup_reason"] == "exact" for r in dedup)  # B's copy of A found
    scratch = tmp_path / "scratch"
    build(scratch, recipe(tmp_path / "ab.toml", [a, b]))
    assert manifest_rows(out) == manifest_rows(scratch)
    record = json.loads((out / "build.json").read_text())
    assert [s["fingerprint"]["files"] for s in record["sources"]] == [4, 3]
    assert run("verify", out).exit_code == 0


def test_added_files_are_found_and_tiled_as_new_units(tmp_path, two_sources):
    a, _ = two_sources
    out = tmp_path / "out"
    rec = recipe(tmp_path / "a.toml", [a])
    build(out, rec)
    before = units(out)
    make_images(a / "later", n=3, size=64, seed=5, copies=0)
    result = build(out, rec)
    assert "rs4m: note: growing the build: 0 sources unchanged, 3 new files in folder/a" in stderr_lines(result)
    after = units(out)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 2 * 3  # 2 new units
    again = build(out, rec)  # nothing new: no note, nothing tiled
    assert not [line for line in stderr_lines(again) if "growing" in line] and units(out) == after
    scratch = tmp_path / "scratch"
    build(scratch, rec)
    assert manifest_rows(out) == manifest_rows(scratch)


def test_changed_dedup_radius_reruns_only_dedup_and_catalog(tmp_path, two_sources):
    a, _ = two_sources
    noisy_copy(a / "img02.png", a / "img02_noisy.png")
    out = tmp_path / "out"
    build(out, recipe(tmp_path / "r0.toml", [a], dedup="radius_bits = 0\ndhash_radius_bits = 0"), "--keep-dropped")
    before, scenes = units(out), (out / "scenes.parquet").stat().st_mtime_ns
    strict = manifest_rows(out)
    rec = recipe(tmp_path / "r8.toml", [a], dedup="radius_bits = 8\ndhash_radius_bits = 8")
    build(out, rec, "--keep-dropped")
    assert units(out) == before and (out / "scenes.parquet").stat().st_mtime_ns == scenes
    assert json.loads((out / "dedup.json").read_text())["config"]["radius_bits"] == 8
    loose = manifest_rows(out)
    assert len(loose) < len(strict)  # tiles of the noisy copy are near duplicates at 8 bits, not at 0
    scratch = tmp_path / "scratch"
    build(scratch, rec)
    assert loose == manifest_rows(scratch)


def test_changed_filters_refilter_from_stored_facts(tmp_path, two_sources):
    a, _ = two_sources
    out = tmp_path / "out"
    base = recipe(tmp_path / "f0.toml", [a])
    build(out, base, "--keep-dropped")
    original = manifest_rows(out)
    shards = {k: v for k, v in units(out).items() if k.startswith("shards/")}
    cut = float(np.median([r["richness"] for r in original]))
    strict = recipe(tmp_path / "f1.toml", [a], filters=f"min_richness = {cut}")
    result = build(out, strict, "--keep-dropped")
    assert any("tiles parts re-filtered from their stored facts, 0 units tiled again" in line
               for line in stderr_lines(result))
    assert {k: v for k, v in units(out).items() if k.startswith("shards/")} == shards  # no shard touched
    scratch = tmp_path / "scratch"
    build(scratch, strict)
    assert manifest_rows(out) == manifest_rows(scratch) and len(manifest_rows(out)) < len(original)
    assert run("verify", out).exit_code == 0
    # loosened again: the tiles dropped before had no stored pixels, so they are tiled again
    result = build(out, base, "--keep-dropped")
    assert any("units tiled again" in line and " 0 units" not in line for line in stderr_lines(result))
    assert manifest_rows(out) == original
    assert run("verify", out).exit_code == 0


def test_final_shards_and_a_dedup_change_that_keeps_compacted_tiles(tmp_path, two_sources):
    a, _ = two_sources
    noisy_copy(a / "img02.png", a / "img02_noisy.png")
    out = tmp_path / "out"
    loose = recipe(tmp_path / "r8.toml", [a], dedup="radius_bits = 8\ndhash_radius_bits = 8")
    build(out, loose)
    n_loose = len(manifest_rows(out))
    assert shard_keys(out) == [r["tile_id"] for r in manifest_rows(out)]  # the build ends with final shards
    index = json.loads((out / "shards" / "wids-index.json").read_text())  # rewritten after the compaction
    assert index["complete"] is True and sum(e["nsamples"] for e in index["shardlist"]) == n_loose
    strict = recipe(tmp_path / "r0.toml", [a], dedup="radius_bits = 0\ndhash_radius_bits = 0")
    result = build(out, strict)  # keeps the noisy copy's tiles, whose bytes the compaction dropped
    assert any("units tiled again: dedup keeps tiles of theirs" in line for line in stderr_lines(result))
    rows = manifest_rows(out)
    assert all(r["length"] for r in rows) and run("verify", out).exit_code == 0
    assert shard_keys(out) == [r["tile_id"] for r in rows]
    scratch = tmp_path / "scratch"
    build(scratch, strict)
    assert rows == manifest_rows(scratch) and len(rows) > n_loose
    kept_dropped = tmp_path / "kept"
    build(kept_dropped, loose, "--keep-dropped")
    assert len(shard_keys(kept_dropped)) > len(manifest_rows(kept_dropped))  # --keep-dropped: all stay


@pytest.mark.parametrize("change", ["removed source", "tiling", "file gone"])
def test_identity_changes_are_refused_in_one_line(tmp_path, two_sources, change):
    a, b = two_sources
    out = tmp_path / "out"
    build(out, recipe(tmp_path / "ab.toml", [a, b]))
    before = units(out)
    if change == "removed source":
        rec, fragment = recipe(tmp_path / "a.toml", [a]), "source folder/b is in this build but not in the plan"
    elif change == "tiling":
        rec, fragment = recipe(tmp_path / "t.toml", [a, b], tile_size=16), "source folder/a changed (tile_size 32 → 16)"
    else:
        (b / "img00.png").unlink()
        rec, fragment = tmp_path / "ab.toml", "1 files of source folder/b are gone since the build (e.g. img00.png)"
    result = run("build", out, "--recipe", rec, "--workers", 1, "-q")
    assert result.exit_code == 2
    lines = [line for line in stderr_lines(result) if line.startswith("rs4m:")]
    assert len(lines) == 1 and fragment in lines[0] and "--force rebuilds it" in lines[0], lines
    assert units(out) == before
