"""The build's safety guarantees under hostile folders, crafted files, concurrent writers and killed writes.

Every fixture is made by the test (tiny noise PNGs, see ``tests/tiny.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rs4m import manifest as mf
from rs4m.layout import OutputLayout
from tests.tiny import CLI, build, make_images, run, run_proc, stderr_lines


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(OUT, SRC) of one finished tiny build (not compacted), copied by :func:`fresh` for tests that change it."""
    base = tmp_path_factory.mktemp("g")
    src = base / "src"
    make_images(src)
    out = base / "out"
    result = build(out, src, "--keep-dropped")  # its copy stays in the shards: the compaction tests need one
    assert result.exit_code == 0, result.output
    return out, src


@pytest.fixture()
def fresh(built, tmp_path) -> tuple[Path, Path]:
    import shutil

    out, src = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    return copy, src


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- build --force deletes only what the build wrote ------------------------------------------------------------

def test_force_refuses_a_folder_that_is_not_a_build(tmp_path):
    src = tmp_path / "src"
    make_images(src, n=1, copies=0)
    mine = tmp_path / "mine"
    for rel in ("tiles/part-00000.parquet", "shards/rs4m-00000.tar", "notes.txt"):
        (mine / rel).parent.mkdir(parents=True, exist_ok=True)
        (mine / rel).write_text("the user's own file")
    before = snapshot(mine)
    for flags in ((), ("--force",)):
        result = build(mine, src, *flags)
        assert result.exit_code == 2
        lines = stderr_lines(result)
        assert "holds no rs4m build" in lines[-1] and "Traceback" not in result.output
    assert snapshot(mine) == before


@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_out_overlapping_a_source_is_refused(tmp_path, where):
    src = tmp_path / "src"
    make_images(src, n=2, copies=0)
    out = {"equal": src, "inside": src / "out", "contains": tmp_path}[where]
    before = snapshot(tmp_path)
    result = build(out, src, "--force")
    assert result.exit_code == 2, result.output
    assert "source folder" in stderr_lines(result)[-1] and "inside" in stderr_lines(result)[-1]
    assert snapshot(tmp_path) == before


def test_force_keeps_foreign_files_and_rebuilds_the_same(fresh, built):
    out, src = fresh
    (out / "notes.txt").write_text("keep me")
    (out / "tiles" / "my-table.parquet").write_text("keep me too")
    (out / "shards" / "rs4m-1.tar").write_text("not a name a build writes")
    (out / "shards" / ".rs4m-00000.tar.abcd1234.tmp").write_text("a killed write")
    result = build(out, src, "--force", "--keep-dropped")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "tiles" / "my-table.parquet").read_text() == "keep me too"
    assert (out / "shards" / "rs4m-1.tar").exists()
    assert not (out / "shards" / ".rs4m-00000.tar.abcd1234.tmp").exists()
    ref = snapshot(built[0])
    got = snapshot(out)
    for name in ("shards/rs4m-00000.tar", "tiles/part-00000.parquet", "manifest.parquet", "scenes.parquet"):
        assert got[name] == ref[name]


def test_force_never_enters_a_symlinked_folder(fresh, tmp_path):
    out, src = fresh
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "part-00000.parquet").write_text("outside OUT")
    import shutil

    shutil.rmtree(out / "tiles")
    os.symlink(elsewhere, out / "tiles")
    result = build(out, src, "--force")
    assert result.exit_code == 2 and "is a symlink" in stderr_lines(result)[-1]
    assert (elsewhere / "part-00000.parquet").read_text() == "outside OUT"
    assert (out / "manifest.parquet").exists()  # refused before anything was deleted


# --- paths read from files in OUT stay inside OUT ---------------------------------------------------------------

def test_crafted_journal_is_refused(fresh, tmp_path):
    out, src = fresh
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    evil = tmp_path / "victim.txt.compact"
    evil.write_text("evil")
    journal = {"renames": [[os.path.relpath(evil, out), os.path.relpath(victim, out)]]}
    (out / "compact.json").write_text(json.dumps(journal))
    for args in (("compact", out), ("build", out, "--source", f"folder={src}", "--tile-size", 64, "--workers", 1)):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert "refusing the journal" in stderr_lines(result)[-1] and "Traceback" not in result.output
    assert victim.read_text() == "precious" and evil.read_text() == "evil"
    # an absolute path, a staged name that is not <final>.compact, a garbled journal: refused alike
    for renames in ([["/etc/x.compact", "/etc/x"]], [["manifest.parquet.compact", "scenes.parquet"]],
                    [["shards/rs4m-00000.tar.compact", "shards/rs4m-00000.tar", "extra"]], "garbage"):
        (out / "compact.json").write_text(json.dumps({"renames": renames}))
        assert run("compact", out).exit_code == 2
    (out / "compact.json").write_text("{not json")
    result = run("compact", out)
    assert result.exit_code == 2 and "cannot be read" in stderr_lines(result)[-1]


def test_force_removes_a_stale_journal_and_staged_files(fresh):
    out, src = fresh
    (out / "compact.json").write_text(json.dumps({"renames": [["../../x.compact", "../../x"]]}))
    (out / "shards" / "rs4m-00000.tar.compact").write_text("staged")
    (out / "manifest.parquet.compact").write_text("staged")
    result = build(out, src, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "compact.json").exists()
    assert not list(out.rglob("*.compact"))


def test_crafted_shard_name_in_a_tiles_part_is_refused(fresh, tmp_path):
    out, _ = fresh
    part = OutputLayout(out).tile_part(0)
    meta = mf.read_metadata(part, "shard")
    outside = tmp_path / "rs4m-00000.tar"
    outside.write_bytes((out / "shards" / "rs4m-00000.tar").read_bytes())
    meta["shard"] = os.path.relpath(outside, out / "shards")
    table = pq.read_table(part)
    mf.write_table(table, part, metadata={"shard": meta})
    result = run("compact", out)
    assert result.exit_code == 2 and "refusing to follow it" in stderr_lines(result)[-1]
    assert not list(tmp_path.glob("*.compact")) and not list(tmp_path.glob(".*.tmp"))


def test_build_finishes_a_live_journal_first(fresh, built):
    out, src = fresh
    env = {**os.environ, "RS4M_KILL_AT": "compact:journal"}
    killed = run_proc("compact", out, env=env)
    assert killed.returncode == -9
    assert (out / "compact.json").exists()
    result = build(out, src)
    assert result.exit_code == 0, result.output
    assert not (out / "compact.json").exists() and not list(out.rglob("*.compact"))
    ref = built[0].parent / "ref-compacted"
    import shutil

    shutil.copytree(built[0], ref)
    assert run("compact", ref).exit_code == 0
    assert snapshot(out)["shards/rs4m-00000.tar"] == snapshot(ref)["shards/rs4m-00000.tar"]
    assert run("verify", out).exit_code == 0


# --- one writer per OUT -----------------------------------------------------------------------------------------

HOLD = """
import sys, time
from rs4m.lock import BuildLock
with BuildLock(sys.argv[1], "build"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture()
def held(fresh):
    """``fresh`` with its lock held by another process; yields (OUT, SRC, holder)."""
    out, src = fresh
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield out, src, holder
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("command", ["build", "scan", "tile", "dedup", "catalog", "compact", "leakage"])
def test_second_writer_is_refused_naming_the_holder(held, command, tmp_path):
    out, src, holder = held
    before = snapshot(out)
    extra = {"build": ("--source", f"folder={src}", "--tile-size", 64), "scan": ("--source", f"folder={src}",
             "--tile-size", 64), "leakage": ("--against", f"bench={src}")}.get(command, ())
    result = run(command, out, *extra)
    assert result.exit_code == 2, result.output
    line = stderr_lines(result)[-1]
    assert f"pid {holder.pid} on host" in line and "being written" in line
    assert snapshot(out) == before


def test_lock_of_a_killed_writer_does_not_block(held):
    out, src, holder = held
    holder.kill()
    holder.wait()
    assert json.loads((out / ".rs4m.lock").read_text())["pid"] == holder.pid  # the record stays ...
    result = build(out, src)
    assert result.exit_code == 0, result.output  # ... but the lock died with its holder


def test_readers_need_no_lock(held):
    out, _, _ = held
    assert run("verify", out).exit_code == 0
    assert run("stats", out, "--json").exit_code == 0


# --- clean failures: one line, no traceback; no orphan workers; no leftovers ------------------------------------

def _one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in stderr_lines(result) if line.startswith("rs4m: error:")]
    assert len(errors) == 1
    return errors[0]


@pytest.mark.parametrize("with_errno", [True, False])
def test_disk_full_is_one_line_naming_the_file(tmp_path, monkeypatch, with_errno):
    import errno

    import pyarrow.parquet

    src = tmp_path / "src"
    make_images(src, n=2, copies=0)

    def full(table, where, **kw):
        if with_errno:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pyarrow.parquet, "write_table", full)
    line = _one_error_line(build(tmp_path / "out", src), 1)
    if with_errno:
        assert line.startswith(f"rs4m: error: cannot use {tmp_path / 'out'}/")
        assert line.endswith(".tmp: no space left on the device; free some or give another OUT folder")
    else:
        assert "No space left on device; free some space" in line
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]  # the failed write left nothing behind


def test_read_only_out_is_one_line(fresh, monkeypatch):
    import errno

    out, src = fresh
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    line = _one_error_line(run("catalog", out), 1)
    assert line == (f"rs4m: error: cannot use {out / '.rs4m.lock'}: the file system is read-only; "
                    "give a writable OUT folder")


def test_unexpected_error_is_one_line_with_the_debug_hint(fresh, monkeypatch):
    import rs4m.stages.catalog

    out, _ = fresh

    def broken(out):
        raise KeyError("tile_id")

    monkeypatch.setattr(rs4m.stages.catalog, "run_catalog", broken)
    line = _one_error_line(run("catalog", out), 1)
    assert line == ("rs4m: error: unexpected KeyError: 'tile_id' (rerun with `rs4m --debug ...` to see the "
                    "traceback)")
    result = run("--debug", "catalog", out)
    assert isinstance(result.exception, KeyError)  # --debug: the traceback is not hidden


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_garbled_checkpoint_is_one_line(tmp_path, suffix):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    data = tmp_path / "data"
    for cls in ("a", "b"):
        make_images(data / cls, n=2, size=32, copies=0)
    ckpt = tmp_path / f"model{suffix}"
    ckpt.write_bytes(b"PK\x03\x04" + os.urandom(2000) if suffix == ".pt" else b"\x10" + b"\x00" * 7 + b"{x" * 100)
    line = _one_error_line(run("eval", "knn", "--checkpoint", ckpt, "--data", data), 2)
    assert line.startswith(f"rs4m: error: checkpoint {ckpt} cannot be read (")
    assert line.endswith("it is damaged or not a checkpoint of rs4m pretrain")


def test_garbled_checkpoint_on_resume_is_one_line(fresh):
    pytest.importorskip("torch")
    out, _ = fresh
    run_dir = out.parent / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04" + os.urandom(4000))
    line = _one_error_line(run("pretrain", "--manifest", out / "manifest.parquet", "--run", run_dir, "--steps", 2,
                               "--model", "vit_tiny", "--batch-size", 4, "--workers", 0, "--device", "cpu",
                               "--resume"), 2)
    assert line.startswith(f"rs4m: error: checkpoint {run_dir / 'checkpoint.pt'} cannot be read (")


def _marked(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the workers")
def test_pool_workers_die_with_a_killed_driver(tmp_path):
    src = tmp_path / "src"
    make_images(src, n=6, copies=0)
    rec = tmp_path / "recipe.toml"
    rec.write_text(f'[build]\ntile_size = 32\nscenes_per_unit = 1\n[[sources]]\nname = "folder"\npath = "{src}"\n')
    marker = f"RS4M_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1], "RS4M_KILL_AT": "engine:unit#3"}
    driver = subprocess.run([*CLI, "build", str(tmp_path / "out"), "--recipe", str(rec), "--workers", "2", "-q"],
                            env=env, capture_output=True, timeout=120)
    assert driver.returncode == -9  # killed at the kill point, with its pool running
    deadline = time.monotonic() + 10
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked(marker) == []


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(fresh):
    out, src = fresh
    ours = [out / ".manifest.parquet.k2j4h_x1.tmp", out / "tiles" / ".part-00000.parquet.abcdefgh.tmp",
            out / "tiles" / "errors" / ".part-00000.parquet.abcdefgh.tmp",
            out / "shards" / ".rs4m-00000.tar.12345678.tmp", out / "shards" / ".rs4m-00000.tar.compact.abcdefgh.tmp",
            out / "shards" / "rs4m-00000.tar.compact"]
    theirs = [out / ".notes.txt.abcdefgh.tmp", out / "shards" / ".rs4m-1.tar.abcdefgh.tmp", out / "x.tmp",
              out / "tiles" / ".part-00000.parquet.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"half written")
    result = build(out, src)
    assert result.exit_code == 0, result.output
    assert [p for p in ours if p.exists()] == []
    assert all(p.read_bytes() == b"half written" for p in theirs)


# --- files added after a finished build are found and tiled (see tests/test_grow.py) -----------------------------

def test_files_added_after_the_build_are_reported(fresh):
    out, src = fresh
    result = build(out, src)
    assert result.exit_code == 0 and "new files" not in result.output  # nothing new: no note
    make_images(src / "later", n=2, seed=7, copies=0)
    try:
        result = build(out, src)
    finally:
        import shutil

        shutil.rmtree(src / "later")
    assert result.exit_code == 0, result.output
    notes = [line for line in stderr_lines(result) if "new files" in line]
    assert notes == ["rs4m: note: growing the build: 0 sources unchanged, 2 new files in folder/src"]


def test_disk_full_while_tiling_says_so_once(tmp_path, monkeypatch):
    import errno

    from rs4m.shards import ShardWriter

    src = tmp_path / "src"
    make_images(src, n=3, copies=0)

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ShardWriter, "_write", full)
    rec = tmp_path / "r.toml"
    rec.write_text(f'[build]\ntile_size = 64\nscenes_per_unit = 1\n[[sources]]\nname = "folder"\npath = "{src}"\n')
    result = run("build", tmp_path / "out", "--recipe", rec, "--workers", 1, "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in stderr_lines(result) if line.startswith("rs4m:")]
    assert lines == ["rs4m: 3 units (0, 1, 2) failed after retries: OSError: [Errno 28] No space left on device "
                     "(re-run the same command to retry)"]
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_a_stage_on_a_foreign_folder_leaves_no_lock_file(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"not an rs4m build")
    for command in ("catalog", "dedup", "compact", "tile"):
        result = run(command, mine)
        assert result.exit_code == 2 and "Traceback" not in result.output
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]
