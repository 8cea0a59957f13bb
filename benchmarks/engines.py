"""Engine overhead and the driver's memory for the global steps.

1. The same build (real imagery from ../shared/data/real, repeated to ~60 scenes, 256 px tiles) with the local
   process pool and with a local Ray, both with 2 workers, in one run: wall time and whether the outputs
   are byte-identical.
2. Peak RSS of the driver-side global steps (dedup + catalog) over synthetic tiles parts of N rows, to
   document the memory they need per million tiles.

    python benchmarks/engines.py [--repeat 10] [--rows 250000 1000000] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
SCENES = ["landsat7-rasterio/RGB.byte.tif", "landsat7-rasterio/rgb1.tif", "aerial-cog/cogeo.tif",
          "dota-devkit/images/P0706.png", "dota-devkit/images/P1888.png", "dota-mmrotate/demo.jpg"]
CLI = [sys.executable, "-c", "from rs4m.cli import main; main()"]


def corpus(folder: Path, repeat: int) -> Path:
    folder.mkdir(parents=True)
    for r in range(repeat):
        for rel in SCENES:
            os.symlink(REAL / rel, folder / f"r{r:03d}-{Path(rel).name}")
    return folder


def timed_build(out: Path, src: Path, engine: str) -> float:
    cmd = CLI + ["build", str(out), "--source", f"folder={src}", "--tile-size", "256", "--workers", "2", "-q",
                 "--engine", engine]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def identical(a: Path, b: Path) -> bool:
    if (a / "manifest.parquet").read_bytes() != (b / "manifest.parquet").read_bytes():
        return False
    return all((a / "shards" / p.name).read_bytes() == p.read_bytes() for p in (b / "shards").glob("*.tar"))


GLOBAL_CODE = """
import json, resource, sys, time
import numpy as np, pyarrow as pa, shapely
from pathlib import Path
from rs4m import manifest as mf
from rs4m.layout import OutputLayout
from rs4m.stages.dedup import DedupConfig, run_dedup
from rs4m.stages.catalog import run_catalog
out, n = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
layout = OutputLayout(out)
per = 50_000
for u, start in enumerate(range(0, n, per)):
    k = min(per, n - start)
    ids = np.char.mod("%032x", np.arange(start, start + k))
    lon = rng.uniform(-180, 179, k); lat = rng.uniform(-80, 79, k)
    geoms = shapely.to_wkb(shapely.box(lon, lat, lon + 0.01, lat + 0.01))
    t = pa.table({"tile_id": ids, "scene_id": ids, "source": np.where(rng.random(k) < 0.5, "a", "b"),
                  "scene_path": ids, "x": np.zeros(k, np.int32), "y": np.zeros(k, np.int32),
                  "width": np.full(k, 512, np.int32), "height": np.full(k, 512, np.int32),
                  "gsd_m": rng.uniform(0.3, 2, k).astype(np.float32), "geometry": geoms,
                  "sha256": ids, "pixel_sha256": ids,
                  "phash": rng.integers(0, 2**63, k, dtype=np.uint64), "dhash": rng.integers(0, 2**63, k, dtype=np.uint64),
                  "richness": rng.uniform(0.5, 3, k).astype(np.float32), "shard": np.full(k, f"rs4m-{u:05d}.tar"),
                  "offset": np.arange(k, dtype=np.int64) * 1024, "length": np.full(k, 1000, np.int64),
                  "format": np.full(k, "jpg")})
    full = mf.empty_table(mf.TILES_SCHEMA)
    cols = {f.name: (t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(k, f.type)) for f in mf.TILES_SCHEMA}
    mf.write_table(pa.table(cols, schema=mf.TILES_SCHEMA), layout.tile_part(u), mf.TILES_SCHEMA,
                   metadata={"shard": {"shard": f"rs4m-{u:05d}.tar", "samples": k, "bytes": 0, "sha256": "0"}})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter(); run_dedup(out, DedupConfig()); t1 = time.perf_counter(); run_catalog(out); t2 = time.perf_counter()
print(json.dumps({"rows": n, "dedup_s": t1 - t0, "catalog_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "before_mb": base / 1024}))
"""


def global_steps(rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", GLOBAL_CODE, tmp, str(rows)], capture_output=True, text=True,
                              check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rows", type=int, nargs="*", default=[250_000, 1_000_000])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        src = corpus(Path(tmp) / "src", args.repeat)
        local = timed_build(Path(tmp) / "local", src, "local")
        ray = timed_build(Path(tmp) / "ray", src, "ray")
        same = identical(Path(tmp) / "local", Path(tmp) / "ray")
        tiles = json.loads((Path(tmp) / "local" / "build.json").read_text())["stages"]["tile"]["tiles"]
    lines += ["| engine | scenes | tiles | wall s | output |", "|---|---|---|---|---|",
              f"| local pool, 2 workers | {args.repeat * len(SCENES)} | {tiles} | {local:.1f} | reference |",
              f"| Ray (local, 2 CPUs) | {args.repeat * len(SCENES)} | {tiles} | {ray:.1f} | "
              f"{'byte-identical' if same else 'DIFFERENT'} |",
              "", f"Ray − local pool: {ray - local:+.1f} s ({ray / local:.2f}x). Ray's start-up alone is ~6 s here; "
              "the rest is noise between runs on a shared 2-core machine.", ""]
    if args.rows:
        lines += ["Driver-side global steps over synthetic tiles parts (random hashes and footprints):", "",
                  "| rows | dedup s | catalog s | peak RSS MB |", "|---|---|---|---|"]
        for n in args.rows:
            r = global_steps(n)
            lines.append(f"| {n:,} | {r['dedup_s']:.1f} | {r['catalog_s']:.1f} | {r['peak_rss_mb']:.0f} |")
            print(json.dumps(r), flush=True)
    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("engines", "python benchmarks/engines.py " + " ".join(sys.argv[1:]), text)


if __name__ == "__main__":
    main()
