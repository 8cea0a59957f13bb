"""The adversarial corpus (tests/adversarial.py) through a whole build: every good file in the manifest with
its bytes, every bad file exactly one error row with a reason, no hang, memory bounded."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rs4m import manifest as mf
from rs4m.layout import OutputLayout
from rs4m.shards import ShardReader
from tests.adversarial import BOMB_PADDING, MAX_PIXELS, make_corpus, make_good_only

REPO = Path(__file__).resolve().parents[1]
#: a build of the corpus must finish within this many seconds (it takes a few); more means a hang
TIMEOUT_S = 300
#: the corpus may cost this much more peak memory than a build of its good files alone (the zip bomb would
#: cost its padding, BOMB_PADDING bytes, if it were read)
RSS_MARGIN = 150 << 20

#: runs the CLI in this process and prints its peak RSS (bytes) as the last line of stdout
_MEASURED = ("import resource, sys\n"
             "from rs4m.cli import get_cli\n"
             "try:\n    get_cli().main(sys.argv[1:])\n"
             "finally:\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n")


def build(corpus, out: Path) -> int:
    """Build the corpus in a subprocess (one worker, in-process engine) with a timeout; its peak RSS."""
    cmd = [sys.executable, "-c", _MEASURED, "build", str(out), "--source", f"folder={corpus.plain}",
           "--source", f"patternnet={corpus.archived}", "--max-pixels", str(MAX_PIXELS), "--tile-size", "128",
           "--workers", "1", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.strip().splitlines()[-1])


def source_of(corpus, name: str) -> str:
    return {"plain": f"folder/{corpus.plain.name}", "archived": "patternnet"}[name]


@pytest.fixture(scope="module")
def corpus_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    corpus = make_corpus(root / "corpus")
    good = make_good_only(root / "good")
    rss_good = build(good, root / "out_good")
    rss = build(corpus, root / "out")
    return corpus, root / "out", rss, rss_good


def test_good_files_are_in_the_manifest_with_their_bytes(corpus_build):
    corpus, out, _, _ = corpus_build
    layout = OutputLayout(out)
    manifest = mf.read_table(layout.manifest, mf.MANIFEST_SCHEMA).to_pylist()
    by_scene: dict[tuple[str, str], list[dict]] = {}
    for row in manifest:
        by_scene.setdefault((row["source"], row["scene_path"]), []).append(row)
    wanted = [(source_of(corpus, s), rel) for (s, rel), (kind, _) in corpus.expect.items()
              if kind in ("good", "noted")]
    missing = [key for key in wanted if key not in by_scene]
    assert not missing, missing
    with ShardReader(layout.shards_dir) as reader:
        for key in wanted:
            for row in by_scene[key]:
                assert row["shard"] and row["offset"] is not None and row["length"], row["tile_id"]
                data = reader.read(row["shard"], row["offset"], row["length"])
                assert hashlib.sha256(data).hexdigest() == row["sha256"], row["tile_id"]


def test_every_bad_file_is_exactly_one_error_row_with_a_reason(corpus_build):
    corpus, out, _, _ = corpus_build
    errors = mf.read_table(OutputLayout(out).errors, mf.ERRORS_SCHEMA).to_pylist()
    tiles = mf.read_parts(OutputLayout(out).tile_parts(), mf.TILES_SCHEMA, columns=["source", "scene_path"])
    tiled = set(zip(tiles["source"].to_pylist(), tiles["scene_path"].to_pylist()))
    assert not [e for e in errors if e["stage"] == "unit"], errors
    for (s, rel), (kind, words) in corpus.expect.items():
        source = source_of(corpus, s)
        rows = [e for e in errors if e["source"] == source and (e["path"] == rel or e["path"].startswith(rel + "/"))]
        if kind in ("good", "filtered"):
            assert not rows, (rel, rows)
            continue
        assert len(rows) == 1, (rel, rows)
        assert rows[0]["reason"].strip() and words in rows[0]["reason"], (rel, rows[0])
        if kind == "bad":
            assert not [t for t in tiled if t[0] == source and t[1].startswith(rel)], rel


def test_filtered_files_have_rows_without_bytes(corpus_build):
    corpus, out, _, _ = corpus_build
    tiles = mf.read_parts(OutputLayout(out).tile_parts(), mf.TILES_SCHEMA).to_pylist()
    for (s, rel), (kind, _) in corpus.expect.items():
        if kind == "filtered":
            rows = [t for t in tiles if t["scene_path"] == rel]
            assert rows and all(t["filter_reason"] and t["shard"] is None for t in rows), rel


def test_the_corpus_costs_no_more_memory_than_its_good_files(corpus_build):
    _, _, rss, rss_good = corpus_build
    assert RSS_MARGIN < BOMB_PADDING  # the bound would catch the bomb being read
    assert rss < rss_good + RSS_MARGIN, (rss >> 20, rss_good >> 20)


def test_the_corpus_build_verifies(corpus_build):
    _, out, _, _ = corpus_build
    cmd = [sys.executable, "-c", "from rs4m.cli import main; main()", "verify", str(out), "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads(result.stdout)
