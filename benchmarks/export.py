"""Export throughput against a plain copy of the same bytes, and peak memory at two corpus sizes.

A synthetic build of N tiles (random bytes of ``--tile-kb`` each, stored as jpg members of 500 MB-ish shards,
with a real manifest; no image is decoded by an export, so random bytes measure the same work) is exported
with ``rs4m export hf`` / ``mds`` / ``litdata`` (each in its own process, its peak RSS read from the kernel),
and its shards are copied with ``shutil.copyfile`` (the baseline: the same bytes moved with no per-tile work).
An export does more than a copy: one pass over the manifest to plan, one ranged read and sha256 per tile,
the output format, then a second read of every output tile to verify it.

    python benchmarks/export.py [--sizes 2000 8000] [--tile-kb 64] [--shard-size 64MB] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rs4m import manifest as mf
from rs4m.layout import OutputLayout
from rs4m.shards import ShardWriter

FORMATS = ("hf", "mds", "litdata")
CHILD = """
import json, resource, sys, time
from pathlib import Path
from rs4m.export import FORMATS
from rs4m.export.runner import run_export
import importlib
start = time.perf_counter()
fmt = importlib.import_module(FORMATS[sys.argv[3]]).make_format()
report = run_export(Path(sys.argv[1]), Path(sys.argv[2]), fmt, shard_size=sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - start, "rows": report.verified_rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_build(out: Path, tiles: int, tile_kb: int, per_shard: int = 4000) -> int:
    """A build folder with ``tiles`` random-byte tiles in shards of ``per_shard``; returns the tile bytes."""
    import hashlib

    rng = np.random.default_rng(0)
    layout, rows, infos, total = OutputLayout(out), [], [], 0
    for unit in range((tiles + per_shard - 1) // per_shard):
        with ShardWriter(layout.shard(unit)) as writer:
            for i in range(min(per_shard, tiles - unit * per_shard)):
                data = rng.bytes(int(tile_kb * 1024 * rng.uniform(0.5, 1.5)))
                tile_id = mf.make_tile_id("bench", f"s{unit}.tif", i, 0, 256, 256)
                loc = writer.add(tile_id, "jpg", data, {"tile_id": tile_id})
                total += len(data)
                rows.append({"tile_id": tile_id, "scene_id": mf.make_scene_id("bench", f"s{unit}.tif"),
                             "source": f"bench{unit % 3}", "scene_path": f"s{unit}.tif", "licence": "CC-BY-4.0",
                             "x": i, "y": 0, "width": 256, "height": 256, "bands": 3, "dtype": "uint8",
                             "sha256": hashlib.sha256(data).hexdigest(), "format": "jpg",
                             "shard": layout.shard_name(unit), "offset": loc.offset, "length": loc.length})
        infos.append(writer.info.__dict__)
    mf.write_table(mf.table_from_rows(infos, mf.SHARDS_SCHEMA), layout.shards_table)
    table = mf.table_from_rows(sorted(rows, key=lambda r: r["tile_id"]), mf.MANIFEST_SCHEMA)
    mf.write_table(table, layout.manifest, mf.MANIFEST_SCHEMA)
    return total


def copy_seconds(out: Path, dest: Path, repeats: int = 3) -> float:
    """Best of ``repeats`` copies of the shards (the baseline at its fastest)."""
    best = float("inf")
    for _ in range(repeats):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        start = time.perf_counter()
        for shard in sorted((out / "shards").glob("*.tar")):
            shutil.copyfile(shard, dest / shard.name)
        best = min(best, time.perf_counter() - start)
    return best


def export_run(out: Path, dest: Path, fmt: str, shard_size: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(dest), fmt, shard_size], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(size: int, tile_kb: int, shard_size: str, work: Path) -> list[dict]:
    out = work / f"build-{size}"
    total = make_build(out, size, tile_kb)
    base = copy_seconds(out, work / f"copy-{size}")
    results = [{"size": size, "what": "copy (shutil.copyfile of the shards, best of 3)", "seconds": base, "mb": total / 1e6,
                "peak_rss_mb": None}]
    for fmt in FORMATS:
        r = export_run(out, work / f"{fmt}-{size}", fmt, shard_size)
        assert r["rows"] == size
        results.append({"size": size, "what": f"rs4m export {fmt}", "seconds": r["seconds"], "mb": total / 1e6,
                        "peak_rss_mb": r["peak_rss_mb"], "ratio": r["seconds"] / base})
    for path in work.iterdir():
        shutil.rmtree(path)
    return results


def table(results: list[dict]) -> str:
    lines = ["| tiles | MB of tiles | what | seconds | MB/s | × copy time | peak RSS MB |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['ratio']:.1f}" if "ratio" in r else "1"
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "-"
        lines.append(f"| {r['size']} | {r['mb']:.0f} | {r['what']} | {r['seconds']:.2f} | "
                     f"{r['mb'] / r['seconds']:.0f} | {ratio} | {rss} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 8000])
    parser.add_argument("--tile-kb", type=int, default=64)
    parser.add_argument("--shard-size", default="64MB", help="output file size of every export")
    parser.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rs4m-export-bench-") as tmp:
        results = [r for size in args.sizes for r in measure(size, args.tile_kb, args.shard_size, Path(tmp))]
    text = table(results)
    print(text)
    if args.write:
        from benchmarks.results import write_section

        load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        note = (f"Shared machine ({load}): timings are noisy, compare rows of one run. Each export includes its manifest planning pass, a sha256 check of every tile read, and the "
                "verification pass that re-reads every written tile (the copy does none of these). Files are "
                "in the page cache (written just before), so this measures CPU work, not the disk. Peak RSS is "
                "the exporting process's (imports included: LitData brings torch); it is set by the output file "
                "size (LitData's writer holds a chunk in memory) and the HF row group (64 MiB of image bytes): "
                "compare the two corpus sizes, 4x apart.")
        cmd = (f"python benchmarks/export.py --sizes {args.sizes[0]} {args.sizes[1]} --tile-kb {args.tile_kb} "
               f"--shard-size {args.shard_size} --write")
        write_section("export", cmd, text + "\n\n" + note)


if __name__ == "__main__":
    main()
