"""`rs4m verify` passes on a sound build and names the shard or tile of every kind of damage."""

from __future__ import annotations

import json

from click.testing import CliRunner

from rs4m import manifest as mf
from rs4m.cli import get_cli


def _verify(out):
    result = CliRunner().invoke(get_cli(), ["verify", str(out), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_verify_ok(mini_build):
    out, rows = mini_build
    code, report = _verify(out)
    assert code == 0 and report["ok"] is True
    assert report["shards_checked"] == 2 and report["rows_checked"] == len(rows) == 6
    assert report["problems"] == []


def test_flipped_byte_names_shard(mini_build):
    out, rows = mini_build
    path = out / "shards" / "rs4m-00001.tar"
    data = bytearray(path.read_bytes())
    data[rows[4]["offset"] + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    code, report = _verify(out)
    assert code == 1 and not report["ok"]
    assert [p["shard"] for p in report["problems"]] == ["rs4m-00001.tar"]
    assert "sha256" in report["problems"][0]["problem"]


def test_truncated_shard_names_shard(mini_build):
    out, rows = mini_build
    path = out / "shards" / "rs4m-00000.tar"
    path.write_bytes(path.read_bytes()[: rows[2]["offset"] + 5])
    code, report = _verify(out)
    assert code == 1
    shards = {p["shard"] for p in report["problems"]}
    assert shards == {"rs4m-00000.tar"}
    assert any("truncated" in p["problem"] for p in report["problems"])


def test_wrong_offset_names_tile(mini_build):
    out, rows = mini_build
    table = mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()
    table[1]["offset"] = table[0]["offset"]
    mf.write_table(mf.table_from_rows(table, mf.MANIFEST_SCHEMA), out / "manifest.parquet")
    code, report = _verify(out)
    assert code == 1
    assert [(p["shard"], p["tile_id"]) for p in report["problems"]] == [("rs4m-00000.tar", rows[1]["tile_id"])]


def test_stray_shard_is_reported(mini_build):
    out, _ = mini_build
    (out / "shards" / "rs4m-00009.tar").write_bytes(b"\0" * 1024)
    code, report = _verify(out)
    assert code == 1 and report["problems"][0]["shard"] == "rs4m-00009.tar"


def test_verify_missing_folder_is_one_line(tmp_path):
    result = CliRunner().invoke(get_cli(), ["verify", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "is not a folder" in result.stderr


# ---- deeper checks on a build of aerial-like scenes: manifest vs tiles parts, decoding, kept tiles only, build.json

import hashlib  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from rs4m.layout import OutputLayout  # noqa: E402
from rs4m.shards import file_sha256  # noqa: E402


@pytest.fixture(scope="module")
def scene_build(tmp_path_factory, aerial_sources):
    out = tmp_path_factory.mktemp("verify") / "out"
    src = aerial_sources.landsat
    result = CliRunner().invoke(get_cli(), ["build", str(out), "--source", f"folder={src}", "--tile-size", "256",
                                            "--workers", "1", "-q", "--keep-dropped"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture()
def built(scene_build, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(scene_build, copy)
    return copy


def _rewrite_manifest(out, change):
    rows = mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()
    change(rows)
    mf.write_table(mf.table_from_rows(rows, mf.MANIFEST_SCHEMA), out / "manifest.parquet", mf.MANIFEST_SCHEMA)
    return rows


def _rewrite_tiles(out, change):
    part = OutputLayout(out).tile_parts()[0]
    rows = mf.read_table(part, mf.TILES_SCHEMA).to_pylist()
    change(rows)
    mf.write_table(mf.table_from_rows(rows, mf.TILES_SCHEMA), part, mf.TILES_SCHEMA,
                   metadata={"shard": mf.read_metadata(part, "shard")})


def _where(report):
    return [(p["shard"], p["tile_id"]) for p in report["problems"]]


def test_sound_build_verifies(built):
    code, report = _verify(built)
    rows = mf.read_table(built / "manifest.parquet", mf.MANIFEST_SCHEMA).num_rows
    assert code == 0 and report["problems"] == [] and report["rows_checked"] == rows > 0


def test_manifest_row_differing_from_tiles_part(built):
    def bump(rows):
        rows[2]["richness"] += 1.0
        rows[2]["scene_path"] = "elsewhere.tif"
    rows = _rewrite_manifest(built, bump)
    code, report = _verify(built)
    assert code == 1 and _where(report) == [(rows[2]["shard"], rows[2]["tile_id"])]
    assert "scene_path, " in report["problems"][0]["problem"] and "richness" in report["problems"][0]["problem"]


def test_tile_that_does_not_decode(built):
    """Garbage of the right length in a tile's data, with every hash updated so only decoding can tell."""
    rows = mf.read_table(built / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()
    victim = rows[3]
    path = built / "shards" / victim["shard"]
    data = bytearray(path.read_bytes())
    garbage = bytes((k * 37) % 251 for k in range(victim["length"]))
    data[victim["offset"]:victim["offset"] + victim["length"]] = garbage
    path.write_bytes(bytes(data))
    shards = mf.read_table(built / "shards.parquet", mf.SHARDS_SCHEMA).to_pylist()
    for s in shards:
        s["sha256"] = file_sha256(built / "shards" / s["shard"])
    mf.write_table(mf.table_from_rows(shards, mf.SHARDS_SCHEMA), built / "shards.parquet")
    digest = hashlib.sha256(garbage).hexdigest()

    def rehash(rows):
        for r in rows:
            if r["tile_id"] == victim["tile_id"]:
                r["sha256"] = digest
    _rewrite_manifest(built, rehash)
    _rewrite_tiles(built, rehash)
    code, report = _verify(built)
    assert code == 1 and _where(report) == [(victim["shard"], victim["tile_id"])]
    assert "does not decode as jpg" in report["problems"][0]["problem"]
    fast = CliRunner().invoke(get_cli(), ["verify", str(built), "--json", "--no-decode"])
    assert fast.exit_code == 0


def test_wrong_recorded_size(built):
    victim = mf.read_table(built / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()[0]

    def shrink(rows):
        for r in rows:
            if r["tile_id"] == victim["tile_id"]:
                r["out_width"], r["out_height"] = 128, 128
    _rewrite_manifest(built, shrink)
    _rewrite_tiles(built, shrink)
    code, report = _verify(built)
    assert code == 1 and _where(report) == [(victim["shard"], victim["tile_id"])]
    assert report["problems"][0]["problem"] == (
        f"decodes to {victim['width']}x{victim['height']}, recorded size is 128x128")


def test_manifest_holding_a_duplicate(built):
    dups = mf.read_table(built / "dedup.parquet", mf.DEDUP_SCHEMA).to_pylist()
    dup = next(d for d in dups if d["dup_of"] is not None)
    tiles = {r["tile_id"]: r for r in mf.read_parts(OutputLayout(built).tile_parts(), mf.TILES_SCHEMA).to_pylist()}
    row = dict(tiles[dup["tile_id"]], dup_group=dup["dup_group"], dup_of=None, dup_reason=None)
    _rewrite_manifest(built, lambda rows: rows.append(row))
    update = json.loads((built / "build.json").read_text())
    update["stages"]["catalog"]["tiles_kept"] += 1
    (built / "build.json").write_text(json.dumps(update))
    code, report = _verify(built)
    assert code == 1 and _where(report) == [(row["shard"], row["tile_id"])]
    assert f"is a duplicate of {dup['dup_of']} (dedup.parquet" in report["problems"][0]["problem"]


def test_filtered_tile_in_manifest(built):
    tiles = mf.read_parts(OutputLayout(built).tile_parts(), mf.TILES_SCHEMA).to_pylist()
    filtered = next(r for r in tiles if r["filter_reason"])
    _rewrite_manifest(built, lambda rows: rows.append(dict(filtered)))
    code, report = _verify(built)
    problems = {p["problem"] for p in report["problems"] if p["tile_id"] == filtered["tile_id"]}
    assert code == 1 and any(p.startswith("is filtered (mostly nodata") for p in problems)
    assert any("no stored bytes" in p for p in problems)


def test_wrong_build_json_count(built):
    record = json.loads((built / "build.json").read_text())
    kept = record["stages"]["catalog"]["tiles_kept"]
    record["stages"]["catalog"]["tiles_kept"] = kept + 3
    (built / "build.json").write_text(json.dumps(record))
    code, report = _verify(built)
    assert code == 1 and len(report["problems"]) == 1
    assert f"tiles_kept is {kept + 3} but manifest.parquet has {kept} rows" in report["problems"][0]["problem"]


def test_kept_tile_missing_from_manifest_is_reported(tmp_path, aerial_sources):
    out = tmp_path / "out"
    src = aerial_sources.dota
    assert CliRunner().invoke(get_cli(), ["build", str(out), "--source", f"folder={src}", "--tile-size", "256",
                                          "--workers", "1", "-q"]).exit_code == 0
    assert _verify(out)[0] == 0
    rows = mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()
    lost = rows.pop(3)
    mf.write_table(mf.table_from_rows(rows, mf.MANIFEST_SCHEMA), out / "manifest.parquet")
    code, report = _verify(out)
    assert code == 1
    missing = [p for p in report["problems"] if "missing from the manifest" in p["problem"]]
    assert [(p["tile_id"], p["shard"]) for p in missing] == [(lost["tile_id"], lost["shard"])]


# --- blind spots: a missing manifest, failed units, damaged Parquet, the tiles a damaged shard loses -----------

@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    from tests.tiny import make_images, run

    base = tmp_path_factory.mktemp("tiny")
    make_images(base / "src", n=3, copies=0)
    rec = base / "recipe.toml"
    rec.write_text(f'[build]\ntile_size = 64\nscenes_per_unit = 1\n[[sources]]\nname = "folder"\n'
                   f'path = "{base / "src"}"\n')
    result = run("build", base / "out", "--recipe", rec, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    return base / "out"


@pytest.fixture()
def tiny(tiny_build, tmp_path):
    import shutil

    shutil.copytree(tiny_build, tmp_path / "out")
    return tmp_path / "out"


def _problems(out, *flags):
    result = CliRunner().invoke(get_cli(), ["verify", str(out), "--json", *flags])
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)["problems"]


def test_tiny_build_verifies(tiny):
    assert _problems(tiny) == (0, [])


def test_missing_manifest_fails(tiny):
    (tiny / "manifest.parquet").unlink()
    code, problems = _problems(tiny)
    assert code == 1 and any("manifest.parquet is missing" in p["problem"] for p in problems)


def test_failed_unit_row_fails(tiny):
    errors = mf.read_table(tiny / "errors.parquet", mf.ERRORS_SCHEMA).to_pylist()
    errors.append({"path": "unit 1", "source": "folder/src", "stage": "unit",
                   "reason": "the unit failed after retries", "detail": "ValueError: boom"})
    mf.write_table(mf.table_from_rows(errors, mf.ERRORS_SCHEMA), tiny / "errors.parquet", mf.ERRORS_SCHEMA)
    code, problems = _problems(tiny)
    assert code == 1
    assert [p["problem"] for p in problems if "work unit failed" in p["problem"]] == [
        f"work unit failed (unit 1): the unit failed after retries; re-run `rs4m build {tiny}` to retry it"]


def test_unit_without_its_tiles_part_fails(tiny):
    # a unit that never finished: scenes.parquet lists it, but its part (and shard) are not there
    (tiny / "tiles" / "part-00002.parquet").unlink()
    (tiny / "shards" / "rs4m-00002.tar").unlink()
    from rs4m.stages.catalog import run_catalog

    run_catalog(tiny)
    code, problems = _problems(tiny)
    assert code == 1 and any("work unit 2 has no tiles part" in p["problem"] for p in problems)


@pytest.mark.parametrize("name", ["manifest.parquet", "shards.parquet", "tiles/part-00001.parquet",
                                  "dedup.parquet", "errors.parquet", "scenes.parquet"])
def test_garbled_parquet_is_one_problem_naming_the_file(tiny, name):
    path = tiny / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data[:-8]) + b"garbage!")
    code, problems = _problems(tiny)
    named = [p for p in problems if p["problem"].startswith(f"{path.name} cannot be read")]
    assert code == 1 and len(named) >= 1
    result = CliRunner().invoke(get_cli(), ["verify", str(tiny)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)


def test_damaged_shard_names_the_tiles_it_loses(tiny):
    manifest = mf.read_table(tiny / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()
    rows = sorted((r for r in manifest if r["shard"] == "rs4m-00000.tar"), key=lambda r: r["offset"])
    assert len(rows) >= 2
    path = tiny / "shards" / rows[1]["shard"]
    data = bytearray(path.read_bytes())
    data[rows[1]["offset"] + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    for flags in ((), ("--no-decode",)):
        code, problems = _problems(tiny, *flags)
        assert code == 1
        assert {p["tile_id"] for p in problems if p["tile_id"]} == {rows[1]["tile_id"]}
        assert any(p["shard"] == "rs4m-00000.tar" and p["tile_id"] is None for p in problems)


def test_crafted_shard_name_is_not_followed(tiny, tmp_path):
    table = mf.read_table(tiny / "manifest.parquet", mf.MANIFEST_SCHEMA)
    rows = table.to_pylist()
    rows[0]["shard"] = "../../../etc/passwd"
    mf.write_table(mf.table_from_rows(rows, mf.MANIFEST_SCHEMA), tiny / "manifest.parquet", mf.MANIFEST_SCHEMA)
    code, problems = _problems(tiny)
    assert code == 1 and any("not followed" in p["problem"] and p["tile_id"] == rows[0]["tile_id"] for p in problems)
