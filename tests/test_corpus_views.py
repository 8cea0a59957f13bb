"""stats / inspect / compact / verify on a hand-made three-source build (tests/outputs.py): three licences and
two formats, resized tiles (stored 32x32 from 48x48 windows), non-square tiles, unknown GSD, a leak group, a
duplicate group across sources and errors of two stages. Expected numbers come from the corpus's recipe
(the constants of tests/outputs.py), not from the tables the code under test reads."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from rs4m import manifest as mf
from rs4m.cli import get_cli
from rs4m.compact import run_compact
from rs4m.report import compute_stats
from rs4m.verify import verify_output
from tests.outputs import ERRORS, FILTERED, GROUPS, SOURCES, TILES_PER_SCENE, Corpus, make_corpus

COUNTS = ("tiles_total", "tiles_kept", "filtered", "duplicates", "leaked")


def run_cli(*args):
    return CliRunner().invoke(get_cli(), [str(a) for a in args])


@pytest.fixture()
def corpus(tmp_path: Path) -> Corpus:
    return make_corpus(tmp_path / "out")


def expected_per_source() -> dict[str, dict[str, int]]:
    """The counts the corpus was made with, per source."""
    per = {s.name: {"tiles_total": s.scenes * TILES_PER_SCENE, "filtered": 0, "duplicates": 0, "leaked": 0}
           for s in SOURCES}
    for source, _, _ in FILTERED:
        per[source]["filtered"] += 1
    for _, members in GROUPS:
        for (source, _, _), reason in members:
            per[source]["leaked" if reason == "leak" else "duplicates"] += 1
    for c in per.values():
        c["tiles_kept"] = c["tiles_total"] - c["filtered"] - c["duplicates"] - c["leaked"]
    return per


def dropped_ids(corpus: Corpus) -> set[str]:
    return {corpus.key_of[m] for _, members in GROUPS for m, _ in members}


def shard_keys(out: Path) -> set[str]:
    keys = set()
    for path in (out / "shards").glob("*.tar"):
        with tarfile.open(path) as tar:
            keys |= {m.name.split(".")[0] for m in tar.getmembers()}
    return keys


def test_stats_per_source_and_licence(corpus):
    expected = expected_per_source()
    stats = compute_stats(corpus.out)
    for name, counts in expected.items():
        assert {k: stats["sources"][name][k] for k in COUNTS} == counts
    assert stats["tiles_kept"] == sum(c["tiles_kept"] for c in expected.values())
    assert stats["leaked"]["total"] == 1 and stats["duplicates"]["total"] == 4
    by_licence = compute_stats(corpus.out, by="licence")["licences"]
    assert {s.licence: {k: by_licence[s.licence][k] for k in COUNTS} for s in SOURCES} == \
        {s.licence: expected[s.name] for s in SOURCES}
    stages = {}
    for e in ERRORS:
        stages[e["stage"]] = stages.get(e["stage"], 0) + 1
    assert stats["errors"]["by_stage"] == stages


def test_verify_uses_the_stored_size_of_resized_tiles(corpus):
    beta = [r for r in mf.read_table(corpus.out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()
            if r["source"] == "beta"]
    assert beta and all((r["width"], r["out_width"]) == (48, 32) for r in beta)
    report = verify_output(corpus.out)
    assert report.ok, report.problems
    assert report.rows_checked == sum(c["tiles_kept"] for c in expected_per_source().values())


def test_compact_drops_duplicates_and_leaks_keeps_bytes(corpus):
    dropped = dropped_ids(corpus)
    assert dropped <= shard_keys(corpus.out)
    report = run_compact(corpus.out)
    assert report.tiles_dropped == len(dropped) and report.shards_rewritten == len(SOURCES)
    manifest = mf.read_table(corpus.out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()
    assert shard_keys(corpus.out) == {r["tile_id"] for r in manifest}
    for row in manifest:
        with open(corpus.out / "shards" / row["shard"], "rb") as fh:
            fh.seek(row["offset"])
            assert fh.read(row["length"]) == corpus.data[row["tile_id"]]
    tiles = mf.read_parts(corpus.layout.tile_parts(), mf.TILES_SCHEMA).to_pylist()
    assert {t["tile_id"] for t in tiles if t["shard"] is None} == dropped | {
        corpus.key_of[k] for k in FILTERED}
    assert verify_output(corpus.out).ok
    stats = compute_stats(corpus.out)
    assert stats["bytes"]["stored"] == stats["bytes"]["kept"]
    assert {k: stats["sources"]["gamma"][k] for k in COUNTS} == expected_per_source()["gamma"]


def test_inspect_leaked_tile_before_and_after_compact(corpus, tmp_path):
    leaked = corpus.key_of[next(m for kept, members in GROUPS if kept is None for m, _ in members)]
    target = tmp_path / "leaked.png"
    result = run_cli("inspect", corpus.out, "--tile-id", leaked, "--json", "--bytes", target)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert row["status"] == "leaked" and row["dup_reason"] == "leak"
    assert target.read_bytes() == corpus.data[leaked]
    run_compact(corpus.out)
    after = run_cli("inspect", corpus.out, "--tile-id", leaked, "--bytes", tmp_path / "again.png")
    assert after.exit_code == 2 and "no stored bytes" in after.stderr


def test_inspect_dups_lists_groups_with_their_kept_tile_first(corpus):
    result = run_cli("inspect", corpus.out, "--dups", "-n", 10, "--json")
    assert result.exit_code == 0, result.output
    got = {tuple(t["tile_id"] for t in g["tiles"]) for g in json.loads(result.stdout)["groups"]}
    expected = {(corpus.key_of[kept], *sorted(corpus.key_of[m] for m, _ in members))
                for kept, members in GROUPS if kept is not None}
    assert got == expected
    cross = run_cli("inspect", corpus.out, "--dups", "--source", "beta", "--json")
    sources = [[t["source"] for t in g["tiles"]] for g in json.loads(cross.stdout)["groups"]]
    assert ["alpha", "beta", "beta"] in sources and all("beta" in s for s in sources)
