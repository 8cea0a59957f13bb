"""`rs4m export`: each export read back by the library its users read it with (datasets, litdata, streaming,
wids) gives the manifest's tiles, bytes and metadata; the dataset card's counts are the build's; a SIGKILL
mid-export resumes to identical files; tampering is caught; --where selects with the safe filter language."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rs4m import manifest as mf
from rs4m.cli import get_cli
from rs4m.errors import ConfigError, OutputError
from rs4m.export.hf import HFFormat
from rs4m.export.mds import MDSFormat
from rs4m.export.runner import Selection, parse_size, plan_files, run_export
from tests.outputs import make_corpus

ROOT = Path(__file__).resolve().parents[1]
SHARD = 6000  # bytes of tiles per output file: the fake corpus's 11 tiles make 4 files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The hand-made corpus of tests/outputs.py: 3 sources, 3 licences, filtered, duplicate and leaked tiles."""
    return make_corpus(tmp_path_factory.mktemp("export") / "out")


def manifest_rows(out: Path) -> list[dict]:
    return mf.read_table(out / "manifest.parquet", mf.MANIFEST_SCHEMA).to_pylist()


def meta_of(row: dict) -> dict:
    """A manifest row as the LitData / MDS ``meta`` field holds it (binary as hex)."""
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items()}


def run_cli(*args):
    return CliRunner().invoke(get_cli(), [str(a) for a in args])


def file_digests(dest: Path) -> dict[str, str]:
    return {str(p.relative_to(dest)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dest.rglob("*")) if p.is_file() and STATE_DIR not in p.parts}


STATE_DIR = ".rs4m-export"


def test_parse_size():
    assert parse_size("500MB") == 500_000_000 and parse_size("64MiB") == 64 * 2**20 and parse_size("12") == 12
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_hf_export_read_by_datasets(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    dest = tmp_path / "hf"
    report = run_export(corpus.out, dest, HFFormat(row_group_bytes=1000), shard_size=SHARD)
    rows = manifest_rows(corpus.out)
    assert (report.rows, report.verified_rows, report.files) == (len(rows), len(rows), 4)
    ds = datasets.load_dataset(str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["image"], datasets.Image)  # decoded without any features= argument
    first = ds[0]["image"]
    assert first.size == (rows[0]["out_width"] or rows[0]["width"], rows[0]["out_height"] or rows[0]["height"])
    raw = ds.cast_column("image", datasets.Image(decode=False))
    assert len(raw) == len(rows)
    for got, want in zip(raw, rows):
        image = got.pop("image")
        assert image["bytes"] == corpus.data[want["tile_id"]]  # byte-identical, no re-encode
        assert image["path"] == f"{want['tile_id']}.{want['format']}"
        assert got == want  # every manifest column, geometry WKB included
    part = pq.ParquetFile(dest / "data" / "train-00000-of-00004.parquet")
    meta = part.schema_arrow.metadata
    assert json.loads(meta[b"geo"])["columns"]["geometry"]["encoding"] == "WKB"
    assert json.loads(meta[b"huggingface"])["info"]["features"]["image"] == {"_type": "Image"}
    assert part.metadata.num_row_groups == part.metadata.num_rows == 2  # every tile > 1000 bytes: its own group
    assert part.metadata.row_group(0).column(0).compression == "UNCOMPRESSED"


def card_table(text: str, heading: str) -> list[list[str]]:
    """The rows of the Markdown table under ``## heading`` (header and rule dropped)."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_card_lists_every_source_and_licence_with_counts(corpus, tmp_path):
    dest = tmp_path / "hf"
    run_export(corpus.out, dest, HFFormat(), shard_size=SHARD)
    card = (dest / "README.md").read_text()
    rows = manifest_rows(corpus.out)
    by_source = {s: sum(r["source"] == s for r in rows) for s in {r["source"] for r in rows}}
    by_licence = {lic: sum(r["licence"] == lic for r in rows) for lic in {r["licence"] for r in rows}}
    assert {r[0]: int(r[1]) for r in card_table(card, "Sources")} == by_source
    assert {r[0]: int(r[1]) for r in card_table(card, "Licences")} == by_licence
    assert re.search(r"\*\*Warning:\*\* 1 of 11 tiles .* research / academic use only: academic \(1\)", card)
    record = json.loads((corpus.out / "build.json").read_text())["stages"]["catalog"]
    curation = {r[0]: r[1:] for r in card_table(card, "Curation")}
    for source, counts in record["sources"].items():
        assert curation[source][:5] == [str(counts[k]) for k in ("tiles_total", "filtered", "duplicates",
                                                                    "leaked", "tiles_kept")]
    assert curation["**all**"][3] == str(record["leaked"]) == "1"
    header = card.split("---\n")[1]
    assert "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*" in header
    assert "license: other" in header and "rs4m 0.1.0" in card


def test_card_of_a_selection_counts_only_what_was_exported(corpus, tmp_path):
    dest = tmp_path / "hf"
    run_export(corpus.out, dest, HFFormat(), where="licence != 'academic'", shard_size=SHARD)
    card = (dest / "README.md").read_text()
    assert {r[0] for r in card_table(card, "Sources")} == {"alpha", "beta"}
    assert "Warning" not in card and "--where \"licence != 'academic'\"" in card


def test_litdata_export_read_by_litdata(corpus, tmp_path):
    litdata = pytest.importorskip("litdata")
    dest = tmp_path / "ld"
    run_cli("export", "litdata", corpus.out, dest, "--shard-size", SHARD, "-q")
    rows = manifest_rows(corpus.out)
    ds = litdata.StreamingDataset(str(dest), shuffle=False)
    assert len(ds) == len(rows) and len(json.loads((dest / "index.json").read_text())["chunks"]) == 4
    for i, want in enumerate(rows):
        item = ds[i]
        assert item["image"] == corpus.data[want["tile_id"]]
        assert (item["tile_id"], item["source"], item["sha256"]) == (want["tile_id"], want["source"], want["sha256"])
        assert json.loads(item["meta"]) == meta_of(want)


def _streaming_or_skip():
    try:
        import streaming
    except Exception as err:  # noqa: BLE001 - not installed, or installed without a loadable torchvision (it imports it)
        pytest.skip(f"mosaicml-streaming is not importable here ({type(err).__name__}: {err}); it cannot share "
                    "an environment with datasets>=5 (it needs transformers<5, hence huggingface_hub<1)")
    return streaming


def test_mds_export_read_by_streaming(corpus, tmp_path):
    dest = tmp_path / "mds"
    report = run_export(corpus.out, dest, MDSFormat(), shard_size=SHARD)
    assert report.verified_rows == 11  # read back by the export's own parser of the MDS layout
    index = json.loads((dest / "index.json").read_text())
    assert [s["raw_data"]["bytes"] for s in index["shards"]] == [
        (dest / f"shard.{i:05d}.mds").stat().st_size for i in range(4)]
    streaming = _streaming_or_skip()
    ds = streaming.StreamingDataset(local=str(dest), shuffle=False, batch_size=1)
    rows = manifest_rows(corpus.out)
    assert len(ds) == len(rows)
    for i, want in enumerate(rows):
        sample = ds[i]
        assert sample["image"] == corpus.data[want["tile_id"]]
        assert sample["tile_id"] == want["tile_id"] and sample["meta"] == meta_of(want)


def test_wids_index_written_by_the_catalog_and_read_by_wids(corpus, tmp_path, monkeypatch):
    wids = pytest.importorskip("wids")
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids-cache"))
    index_path = corpus.out / "shards" / "wids-index.json"
    index = json.loads(index_path.read_text())  # written by the catalog stage of make_corpus
    shards = {r["shard"]: r for r in mf.read_table(corpus.out / "shards.parquet").to_pylist()}
    assert index["__kind__"] == "wids-shard-index-v1" and index["wids_version"] == 1
    assert {e["url"]: (e["nsamples"], e["filesize"]) for e in index["shardlist"]} == {
        name: (r["samples"], r["bytes"]) for name, r in shards.items()}
    kept = {}
    for r in manifest_rows(corpus.out):
        kept[r["shard"]] = kept.get(r["shard"], 0) + 1
    assert {e["url"]: e["manifest_samples"] for e in index["shardlist"]} == kept
    assert index["complete"] is False  # duplicates and the leak are still in the shards
    ds = wids.ShardListDataset(str(index_path), transformations=[])
    assert len(ds) == sum(r["samples"] for r in shards.values())
    for i in range(len(ds)):
        sample = ds[i]
        ext = next(k for k in sample if k in (".png", ".jpg"))
        assert sample[ext].getvalue() == corpus.data[sample["__key__"]]


def test_wids_export_after_compact_covers_exactly_the_manifest(tmp_path, monkeypatch):
    wids = pytest.importorskip("wids")
    from rs4m.compact import run_compact

    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids-cache"))
    out = make_corpus(tmp_path / "out").out
    run_compact(out)
    result = run_cli("export", "wids", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["complete"] is True and summary["samples"] == len(manifest_rows(out)) == 11
    ds = wids.ShardListDataset(str(out / "shards" / "wids-index.json"), transformations=[])
    assert sorted(ds[i]["__key__"] for i in range(len(ds))) == sorted(r["tile_id"] for r in manifest_rows(out))
    shard = out / "shards" / "rs4m-00000.tar"
    shard.write_bytes(shard.read_bytes()[:-1024] + b"\1" * 1024)  # same size, other bytes
    result = run_cli("export", "wids", out)
    assert result.exit_code == 2 and "sha256 differs" in result.stderr


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from rs4m.export.runner import run_export
from rs4m.export import FORMATS
import importlib
seen = [0]
def progress(n):
    seen[0] += n
    if seen[0] >= int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)
fmt = importlib.import_module(FORMATS[sys.argv[3]]).make_format()
run_export(Path(sys.argv[1]), Path(sys.argv[2]), fmt, shard_size=int(sys.argv[5]), progress=progress)
"""


@pytest.mark.parametrize("fmt", ["hf", "litdata", "mds"])
def test_kill_mid_export_resumes_to_identical_files(corpus, tmp_path, fmt):
    if fmt == "litdata":
        pytest.importorskip("litdata")
    ref, dest = tmp_path / "a" / "export", tmp_path / "b" / "export"  # same name: the card quotes it
    assert run_cli("export", fmt, corpus.out, ref, "--shard-size", SHARD, "-q").exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    files = plan_files(Selection(corpus.out), SHARD).files
    kill_at = files[0].rows + files[1].rows + 1  # files 0 and 1 published, file 2 written but not renamed
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(corpus.out), str(dest), fmt, str(kill_at),
                           str(SHARD)], env=env, timeout=120, check=False)
    assert proc.returncode == -9
    state = json.loads((dest / STATE_DIR / "export.json").read_text())
    assert state["done"] is False and len(file_digests(dest)) < len(file_digests(ref))
    result = run_cli("export", fmt, corpus.out, dest, "--shard-size", SHARD, "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_written"] == 2
    assert file_digests(dest) == file_digests(ref)
    assert not list(dest.rglob(".*.tmp"))


def test_export_checks_tiles_and_its_own_output(tmp_path):
    out = make_corpus(tmp_path / "out").out
    dest = tmp_path / "hf"
    run_export(out, dest, HFFormat(), shard_size=SHARD)
    part = dest / "data" / "train-00001-of-00004.parquet"
    table = pq.read_table(part)
    images = table["image"].to_pylist()
    images[0]["bytes"] = images[0]["bytes"][:-1] + b"\0"
    pq.write_table(table.set_column(0, "image", pa.array(images, table["image"].type)), part)
    with pytest.raises(OutputError, match="differ from the manifest's sha256"):
        run_export(out, dest, HFFormat(), shard_size=SHARD)  # the rerun skips the file but verifies it
    row = manifest_rows(out)[3]
    shard = out / "shards" / row["shard"]
    blob = bytearray(shard.read_bytes())
    blob[row["offset"]] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(OutputError, match=f"tile {row['tile_id']} in {row['shard']} does not match"):
        run_export(out, tmp_path / "hf2", HFFormat(), shard_size=SHARD)


def test_where_selects_and_refuses_code(corpus, tmp_path):
    dest = tmp_path / "cc0"
    result = run_cli("export", "mds", corpus.out, dest, "--where", "licence == 'CC0-1.0' and richness > 0", "--json")
    assert result.exit_code == 0, result.output
    want = [r["tile_id"] for r in manifest_rows(corpus.out) if r["licence"] == "CC0-1.0"]
    assert json.loads(result.stdout)["rows"] == len(want) == 4
    result = run_cli("export", "mds", corpus.out, tmp_path / "bad", "--where", "__import__('os').system('true')",
                     "-q")
    assert result.exit_code == 2 and not (tmp_path / "bad").exists()
    assert result.stderr.startswith("rs4m: error:") and result.stderr.count("\n") == 1
    result = run_cli("export", "mds", corpus.out, tmp_path / "none", "--where", "source == 'nothing'")
    assert result.exit_code == 2 and "selects no tile" in result.stderr


def test_dest_must_be_empty_or_the_same_export(corpus, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    assert "not empty" in run_cli("export", "hf", corpus.out, dest).stderr
    other = tmp_path / "o"
    assert run_cli("export", "hf", corpus.out, other, "--shard-size", SHARD, "-q").exit_code == 0
    result = run_cli("export", "hf", corpus.out, other, "--shard-size", "1MB")
    assert result.exit_code == 2 and "different build, selection or format" in result.stderr


def test_card_cites_each_adapter_and_warns_per_restriction(tmp_path):
    from rs4m.export.card import licence_warnings
    from rs4m.sources import get_source

    out = make_corpus(tmp_path / "out").out
    record = json.loads((out / "build.json").read_text())
    record["sources"][0]["adapter"] = "ucmerced"  # alpha's tiles came through a real adapter
    (out / "build.json").write_text(json.dumps(record))
    result = run_cli("export", "hf", out, tmp_path / "hf", "--title", "Alpha and friends", "-q")
    assert result.exit_code == 0, result.output
    card = (tmp_path / "hf" / "README.md").read_text()
    ucm = get_source("ucmerced")
    assert f"- **alpha** ({ucm.title}): {ucm.citation}" in card and "# Alpha and friends" in card
    assert "- **beta** (unknown dataset): no citation declared" in card
    lines = licence_warnings({"CC-BY-NC-4.0": 3, "ISPRS benchmark: research use only, no redistribution": 2,
                              "unknown": 1, "CC0-1.0": 4})
    assert len(lines) == 3
    assert "5 of 10 tiles" in lines[0] and "CC-BY-NC-4.0 (3)" in lines[0]  # NC and research-only
    assert "2 of 10 tiles" in lines[1] and "redistribution" in lines[1]
    assert "1 of 10 tiles" in lines[2] and "unknown" in lines[2]
    assert licence_warnings({"CC0-1.0": 4, "CC-BY-4.0": 1}) == []
