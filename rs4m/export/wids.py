"""A random-access index over a build's own shards, in the JSON form that ``wids`` reads.

``OUT/shards/wids-index.json`` is a ``wids`` shard index (``__kind__: wids-shard-index-v1``, ``wids_version: 1``)
whose ``shardlist`` gives, per shard, its ``url`` (relative to the index, so the folder can move), ``nsamples``
and ``filesize``; ``wids.ShardListDataset("OUT/shards/wids-index.json")`` then reads sample ``i`` of the
corpus by index, in shard order. Each entry also carries the shard's ``sha256`` and ``manifest_samples``, the
number of its samples that are manifest tiles: shards keep duplicates and leaked tiles until ``rs4m compact``
rewrites them, and ``complete`` at the top is true only when every sample of every shard is a manifest tile.
(Member offsets of every tile are in the manifest's ``shard`` / ``offset`` / ``length`` columns; ``wids``
itself finds them by reading the tar headers when it opens a shard.)

The catalog stage writes the index from ``shards.parquet`` (no shard is read); ``rs4m export wids OUT``
rewrites it after checking every shard's size, sample count and sha256 against ``shards.parquet``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from rs4m import manifest as mf
from rs4m.errors import OutputError
from rs4m.layout import OutputLayout
from rs4m.shards import file_sha256, list_members

INDEX_NAME = "wids-index.json"


def index_path(out: Path) -> Path:
    """Where the index of the build in ``out`` lives: beside its shards."""
    return OutputLayout(Path(out)).shards_dir / INDEX_NAME


def manifest_counts(layout: OutputLayout) -> Counter:
    """shard name → manifest tiles stored in it."""
    counts: Counter = Counter()
    if layout.manifest.exists():
        with pq.ParquetFile(layout.manifest) as pf:
            for batch in pf.iter_batches(columns=["shard"], batch_size=65536):
                counts.update(s for s in batch.column(0).to_pylist() if s is not None)
    return counts


def build_index(out: Path) -> dict[str, Any]:
    """The ``wids`` index of the build in ``out``, from ``shards.parquet`` and the manifest."""
    layout = OutputLayout(Path(out))
    if not layout.shards_table.exists():
        raise OutputError(f"{out} has no shards.parquet; run `rs4m build {out} ...` first")
    shards = mf.read_table(layout.shards_table, mf.SHARDS_SCHEMA).to_pylist()
    kept = manifest_counts(layout)
    shardlist = [{"url": s["shard"], "nsamples": s["samples"], "filesize": s["bytes"], "sha256": s["sha256"],
                  "manifest_samples": kept.get(s["shard"], 0)}
                 for s in sorted(shards, key=lambda s: s["shard"]) if s["samples"] > 0]  # wids cannot open empty tars
    complete = all(s["nsamples"] == s["manifest_samples"] for s in shardlist)
    return {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": Path(out).resolve().name,
            "complete": complete, "shardlist": shardlist}


def write_wids_index(out: Path) -> Path:
    """Write ``OUT/shards/wids-index.json`` atomically (from the build's tables; no shard is read)."""
    path = index_path(out)
    mf.atomic_write_json(path, build_index(out))
    return path


def check_shards(out: Path, index: dict[str, Any]) -> list[str]:
    """Problems found re-reading every indexed shard: missing, wrong size, wrong sample count or sha256."""
    shards_dir = OutputLayout(Path(out)).shards_dir
    problems = []
    for entry in index["shardlist"]:
        path = shards_dir / entry["url"]
        if not path.is_file():
            problems.append(f"{entry['url']}: missing")
        elif path.stat().st_size != entry["filesize"]:
            problems.append(f"{entry['url']}: {path.stat().st_size} bytes, shards.parquet says {entry['filesize']}")
        elif len({name.split(".", 1)[0] for name, _, _ in list_members(path)}) != entry["nsamples"]:
            problems.append(f"{entry['url']}: sample count differs from shards.parquet")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['url']}: sha256 differs from shards.parquet")
    return problems


def export_wids(out: Path) -> dict[str, Any]:
    """``rs4m export wids OUT``: check every shard, then write the index; a summary for the command line."""
    index = build_index(out)
    problems = check_shards(out, index)
    if problems:
        raise OutputError(f"{len(problems)} shard(s) do not match shards.parquet ({problems[0]}); "
                          f"run `rs4m verify {out}`")
    path = write_wids_index(out)
    nsamples = sum(s["nsamples"] for s in index["shardlist"])
    kept = sum(s["manifest_samples"] for s in index["shardlist"])
    return {"index": str(path), "shards": len(index["shardlist"]), "samples": nsamples,
            "manifest_samples": kept, "complete": index["complete"]}
