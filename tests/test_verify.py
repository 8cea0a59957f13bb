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
