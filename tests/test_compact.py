"""`rs4m compact`: kept tiles stay byte-identical, everything else leaves the shards, tables follow, verify
passes after, a crash at any point is repaired by running it again; the catalog is deterministic."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import rs4m.compact as compact_mod
from rs4m import manifest as mf
from rs4m.cli import get_cli
from rs4m.compact import run_compact
from rs4m.layout import OutputLayout
from rs4m.shards import file_sha256
from rs4m.stages.catalog import run_catalog
from rs4m.verify import verify_output


def run_cli(*args):
    return CliRunner().invoke(get_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory, aerial_sources) -> Path:
    """Landsat-like GeoTIFFs (duplicates and filtered tiles, one shard) and DOTA-like PNGs (no duplicates, its own
    shard)."""
    out = tmp_path_factory.mktemp("compact") / "out"
    result = run_cli("build", out, "--source", f"folder={aerial_sources.landsat}",
                     "--source", f"folder={aerial_sources.dota}",
                     "--tile-size", 256, "--workers", 1, "-q", "--keep-dropped")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture()
def out(built, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(built, copy)
    return copy


def members(path: Path) -> dict[str, bytes]:
    """name → bytes of every member, read with the standard tarfile module."""
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def all_members(out: Path) -> dict[str, dict[str, bytes]]:
    return {p.name: members(p) for p in sorted((out / "shards").glob("*.tar"))}


def manifest_rows(out: Path) -> list[dict]:
    return mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()


def tiles_rows(out: Path) -> list[dict]:
    return mf.read_parts(OutputLayout(out).tile_parts(), mf.TILES_SCHEMA).to_pylist()


def file_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_compact_keeps_kept_bytes_drops_the_rest(out):
    before = all_members(out)
    kept = {r["tile_id"]: r for r in manifest_rows(out)}
    stored = [r for r in tiles_rows(out) if r["shard"] is not None]
    dropped = {r["tile_id"] for r in stored} - set(kept)
    assert len(dropped) > 0 and len(kept) > 0
    report = run_compact(out)
    after = all_members(out)
    assert report.tiles_dropped == len(dropped) and report.tiles_kept == len(kept)
    for shard, names in after.items():
        expected = {n for n in before[shard] if n.split(".")[0] in kept}
        assert set(names) == expected
        for name, data in names.items():
            assert data == before[shard][name]  # image and json members byte-identical
    assert not {n.split(".")[0] for names in after.values() for n in names} & dropped
    for row in manifest_rows(out):
        data = (out / "shards" / row["shard"]).read_bytes()[row["offset"]:row["offset"] + row["length"]]
        assert data == before[row["shard"]][f"{row['tile_id']}.{row['format']}"]
    assert verify_output(out).to_dict() == {"ok": True, "shards_checked": 2, "rows_checked": len(kept),
                                            "problems": []}


def test_tables_follow_the_new_shards(out):
    old_tiles = {r["tile_id"]: r for r in tiles_rows(out)}
    run_compact(out)
    kept = {r["tile_id"]: r for r in manifest_rows(out)}
    for row in tiles_rows(out):
        if row["tile_id"] in kept:
            assert {k: row[k] for k in ("shard", "offset", "length")} == \
                   {k: kept[row["tile_id"]][k] for k in ("shard", "offset", "length")}
        else:
            assert (row["shard"], row["offset"], row["length"]) == (None, None, None)
            old = old_tiles[row["tile_id"]]
            assert {k: v for k, v in row.items() if k not in ("shard", "offset", "length")} == \
                   {k: v for k, v in old.items() if k not in ("shard", "offset", "length")}
    shards = mf.read_table(out / "shards.parquet", mf.SHARDS_SCHEMA).to_pylist()
    for s in shards:
        path = out / "shards" / s["shard"]
        assert s["sha256"] == file_sha256(path) and s["bytes"] == path.stat().st_size
        assert s["samples"] == sum(1 for r in kept.values() if r["shard"] == s["shard"])
    for part in OutputLayout(out).tile_parts():
        info = mf.read_metadata(part, "shard")
        assert info == next(s for s in shards if s["shard"] == info["shard"])


def test_untouched_shard_and_second_run_change_nothing(out, built):
    report = run_compact(out)
    assert (report.shards, report.shards_rewritten) == (2, 1)
    dota = [p for p in (out / "shards").glob("*.tar") if (built / "shards" / p.name).read_bytes() == p.read_bytes()]
    assert len(dota) == 1  # the DOTA shard holds no duplicate, so it was left alone
    first = file_bytes(out)
    again = run_compact(out)
    assert (again.shards_rewritten, again.tiles_dropped) == (0, 0) and file_bytes(out) == first


def test_catalog_after_compact_gives_the_same_manifest(out):
    run_compact(out)
    compacted = (out / "manifest.parquet").read_bytes()
    run_catalog(out)
    assert (out / "manifest.parquet").read_bytes() == compacted


def test_catalog_twice_is_byte_identical(out):
    run_catalog(out)
    first = (out / "manifest.parquet").read_bytes(), (out / "shards.parquet").read_bytes()
    run_catalog(out)
    assert ((out / "manifest.parquet").read_bytes(), (out / "shards.parquet").read_bytes()) == first


def test_crash_before_commit_point_leaves_build_unchanged(out, monkeypatch):
    before = file_bytes(out)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(compact_mod.mf, "atomic_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        run_compact(out)
    monkeypatch.undo()
    staged = [p for p in out.rglob("*.compact")]
    assert staged  # new files exist only under staged names
    assert {k: v for k, v in file_bytes(out).items() if not k.endswith(".compact")} == before
    assert verify_output(out).ok
    run_compact(out)
    assert not list(out.rglob("*.compact")) and verify_output(out).ok


def test_crash_during_renames_is_finished_by_the_next_run(out, tmp_path, built, monkeypatch):
    clean = tmp_path / "clean"
    shutil.copytree(built, clean)
    run_compact(clean)
    calls = []
    real_replace = compact_mod.os.replace

    def dying_replace(src, dst):
        if str(src).endswith(".compact"):  # a rename of the swap, not a temp file of an atomic write
            calls.append(dst)
            if len(calls) == 2:  # the new shard is in place, its tiles part is not
                raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(compact_mod.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        run_compact(out)
    monkeypatch.undo()
    report = verify_output(out, decode_tiles=False)
    assert not report.ok and any("compact.json" in p["problem"] for p in report.problems)
    resumed = run_compact(out)
    assert resumed.resumed and not (out / "compact.json").exists()
    assert verify_output(out).ok
    assert file_bytes(out) == {k: v for k, v in file_bytes(clean).items()}


def test_compact_cli(out):
    result = run_cli("compact", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["shards_rewritten"] == 1 and report["bytes_after"] < report["bytes_before"]
    assert json.loads((out / "build.json").read_text())["stages"]["compact"] == report
    assert run_cli("verify", out).exit_code == 0


def test_compact_without_manifest_is_one_line(tmp_path):
    result = run_cli("compact", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "manifest.parquet" in result.stderr


def test_shard_without_kept_tiles_becomes_empty(out):
    """The manifest is the truth: with every DOTA tile taken out of it, the DOTA shard keeps no sample but stays
    (its unit is still done for the tile stage), and the build verifies."""
    rows = manifest_rows(out)
    dota = {r["shard"] for r in rows if r["source"] == "folder/images"}
    assert len(dota) == 1
    left = [r for r in rows if r["source"] != "folder/images"]
    mf.write_table(mf.table_from_rows(left, mf.MANIFEST_SCHEMA), out / "manifest.parquet", mf.MANIFEST_SCHEMA)
    record = json.loads((out / "build.json").read_text())
    record["stages"]["catalog"]["tiles_kept"] = len(left)
    (out / "build.json").write_text(json.dumps(record))
    report = run_compact(out)
    assert report.shards_rewritten == 2
    (shard,) = dota
    assert members(out / "shards" / shard) == {}
    info = {s["shard"]: s for s in mf.read_table(out / "shards.parquet", mf.SHARDS_SCHEMA).to_pylist()}
    assert info[shard]["samples"] == 0 and info[shard]["bytes"] == (out / "shards" / shard).stat().st_size
    assert all(r["shard"] is None for r in tiles_rows(out) if r["source"] == "folder/images")
    assert verify_output(out).ok
