"""Tar shards: webdataset reads them unchanged, ranged reads return the stored bytes, kills leave nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from rs4m.shards import ShardReader, ShardWriter, check_key, file_sha256, list_members


def test_webdataset_reads_rs4m_shard(mini_build):
    import webdataset as wds

    out, rows = mini_build
    shard = out / "shards" / "rs4m-00000.tar"
    expected = {r["tile_id"]: r["_data"] for r in rows if r["shard"] == "rs4m-00000.tar"}
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert len(samples) == len(expected) == 3
    for s in samples:
        assert s["png"] == expected[s["__key__"]]
        assert b'"tile_id"' in s["json"]


def test_tar_tf_lists_members(mini_build):
    out, rows = mini_build
    with tarfile.open(out / "shards" / "rs4m-00001.tar") as tar:
        names = tar.getnames()
    ids = [r["tile_id"] for r in rows if r["shard"] == "rs4m-00001.tar"]
    assert names == [n for i in ids for n in (f"{i}.png", f"{i}.json")]


def test_ranged_read_returns_exact_bytes_for_every_row(mini_build):
    out, rows = mini_build
    with ShardReader(out / "shards") as reader:
        for r in rows:
            assert reader.read(r["shard"], r["offset"], r["length"]) == r["_data"]
            assert reader.member_name(r["shard"], r["offset"]) == (f"{r['tile_id']}.png", r["length"])


def test_offsets_match_tarfile(mini_build):
    out, rows = mini_build
    members = {name: (off, size) for name, off, size in list_members(out / "shards" / "rs4m-00000.tar")}
    for r in rows[:3]:
        assert members[f"{r['tile_id']}.png"] == (r["offset"], r["length"])


def test_writer_is_deterministic(tmp_path):
    for name in ("a.tar", "b.tar"):
        with ShardWriter(tmp_path / name) as w:
            w.add("k1", "jpg", b"x" * 700, {"a": 1})
            w.add("k2", "png", b"", None)
    assert file_sha256(tmp_path / "a.tar") == file_sha256(tmp_path / "b.tar") == w.info.sha256
    assert w.info.bytes == (tmp_path / "b.tar").stat().st_size and w.info.samples == 2


@pytest.mark.parametrize("key,ext", [("a.b", "jpg"), ("../x", "jpg"), ("a/b", "png"), ("", "jpg"), ("ok", "j.pg")])
def test_member_names_only_from_safe_keys(key, ext):
    with pytest.raises(ValueError):
        check_key(key, ext)


def test_error_inside_writer_leaves_no_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "s.tar") as w:
            w.add("k", "jpg", b"data")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


KILL_SCRIPT = """
import sys, time
from rs4m.shards import ShardWriter
w = ShardWriter(sys.argv[1])
for i in range(100000):
    w.add(f"k{i}", "jpg", b"x" * 4096)
    if i == 50:
        print("writing", flush=True)
    time.sleep(0.001)
w.close()
"""


def test_writer_killed_mid_shard_leaves_no_final_file(tmp_path):
    final = tmp_path / "rs4m-00000.tar"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(final)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".rs4m-00000.tar.") for p in leftovers)
