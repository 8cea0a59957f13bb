"""Engine overhead and the driver's memory for the global steps.

1. The same build (real imagery from ../shared/data/real, repeated to ~60 scenes, 256 px tiles) with the local
   process pool and with a local Ray, both with 2 workers, in one run: wall time and whether the outputs
   are byte-identical.
2. Time and peak RSS of the driver-side global steps (dedup, catalog: each in a fresh process) over synthetic
   tiles parts of N rows, in-memory and bounded side by side, and whether their outputs are byte-identical.
   With ``--no-engines`` only this part runs and goes to its own section ``global_steps``.

    python benchmarks/engines.py [--repeat 10] [--rows 250000 1000000] [--modes in-memory bounded]
                                 [--no-engines] [--write]
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


GEN_CODE = """
import sys
import numpy as np, pyarrow as pa, shapely
from pathlib import Path
from rs4m import manifest as mf
from rs4m.layout import OutputLayout
out, n = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
layout = OutputLayout(out)
per = 50_000
for u, start in enumerate(range(0, n, per)):
    k = min(per, n - start)
    ids = np.char.mod("%032x", np.arange(start, start + k))
    sha = ids.copy()
    ph = rng.integers(0, 2**63, k, dtype=np.uint64); dh = rng.integers(0, 2**63, k, dtype=np.uint64)
    lon = rng.uniform(-180, 179, k); lat = rng.uniform(-80, 79, k)
    # planted: 1 % exact copies, 1 % near copies (2 bits off), 1 % overlapping footprints of the previous row
    kind = rng.integers(0, 100, k)
    prev = np.maximum(np.arange(k) - 1, 0)
    sha[kind == 0] = sha[prev][kind == 0]
    flip = np.uint64(1) << rng.integers(0, 63, k).astype(np.uint64)
    ph[kind == 1] = ph[prev][kind == 1] ^ flip[kind == 1]; dh[kind == 1] = dh[prev][kind == 1] ^ flip[kind == 1]
    lon[kind == 2] = lon[prev][kind == 2] + 0.001; lat[kind == 2] = lat[prev][kind == 2]
    geoms = shapely.to_wkb(shapely.box(lon, lat, lon + 0.01, lat + 0.01))
    t = {"tile_id": ids, "scene_id": ids, "source": np.where(rng.random(k) < 0.5, "a", "b"),
         "scene_path": ids, "x": np.zeros(k, np.int32), "y": np.zeros(k, np.int32),
         "width": np.full(k, 512, np.int32), "height": np.full(k, 512, np.int32),
         "gsd_m": rng.uniform(0.3, 2, k).astype(np.float32), "geometry": geoms,
         "sha256": sha, "pixel_sha256": ids, "phash": ph, "dhash": dh,
         "richness": rng.uniform(0.5, 3, k).astype(np.float32), "shard": np.full(k, f"rs4m-{u:05d}.tar"),
         "offset": np.arange(k, dtype=np.int64) * 1024, "length": np.full(k, 1000, np.int64),
         "format": np.full(k, "jpg")}
    cols = {f.name: (pa.array(t[f.name]).cast(f.type) if f.name in t else pa.nulls(k, f.type)) for f in mf.TILES_SCHEMA}
    mf.write_table(pa.table(cols, schema=mf.TILES_SCHEMA), layout.tile_part(u), mf.TILES_SCHEMA,
                   metadata={"shard": {"shard": f"rs4m-{u:05d}.tar", "samples": k, "bytes": 0, "sha256": "0"}})
"""

STEP_CODE = """
import hashlib, json, resource, sys, time
from pathlib import Path
from rs4m.stages.dedup import DedupConfig, run_dedup
from rs4m.stages.catalog import run_catalog
out, step, bounded = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "bounded"
t = time.perf_counter()
if step == "dedup":
    report = run_dedup(out, DedupConfig(), bounded=bounded)
    written, extra = out / "dedup.parquet", {"duplicates": report.duplicates}
else:
    counts = run_catalog(out, bounded=bounded)
    written, extra = out / "manifest.parquet", {"kept": counts["tiles_kept"]}
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "sha256": hashlib.sha256(written.read_bytes()).hexdigest(), **extra}))
"""


def _python(code: str, *args: str) -> dict | None:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def global_steps(rows: int, modes: list[str]) -> dict:
    """Time, peak RSS and output digest of dedup and catalog, each in a fresh process, per mode."""
    with tempfile.TemporaryDirectory() as tmp:
        _python(GEN_CODE, tmp, str(rows))
        result = {}
        for mode in modes:
            for step in ("dedup", "catalog"):
                result[(mode, step)] = _python(STEP_CODE, tmp, step, mode)
                print(json.dumps({"rows": rows, "mode": mode, "step": step, **result[(mode, step)]}), flush=True)
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rows", type=int, nargs="*", default=[250_000, 1_000_000])
    ap.add_argument("--modes", nargs="+", default=["in-memory", "bounded"], choices=["in-memory", "bounded"],
                    help="global-step implementations to run at every --rows (in-memory needs ~2 GB per M rows)")
    ap.add_argument("--no-engines", action="store_true", help="skip the local-vs-Ray build")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    lines = [] if args.no_engines else engine_lines(args.repeat)
    if args.rows:
        lines += global_lines(args.rows, args.modes)
    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        section = "global_steps" if args.no_engines else "engines"
        write_section(section, "python benchmarks/engines.py " + " ".join(sys.argv[1:]), text)


def engine_lines(repeat: int) -> list[str]:
    """The local pool vs Ray build table."""
    with tempfile.TemporaryDirectory() as tmp:
        src = corpus(Path(tmp) / "src", repeat)
        local = timed_build(Path(tmp) / "local", src, "local")
        ray = timed_build(Path(tmp) / "ray", src, "ray")
        same = identical(Path(tmp) / "local", Path(tmp) / "ray")
        tiles = json.loads((Path(tmp) / "local" / "build.json").read_text())["stages"]["tile"]["tiles"]
    return ["| engine | scenes | tiles | wall s | output |", "|---|---|---|---|---|",
            f"| local pool, 2 workers | {repeat * len(SCENES)} | {tiles} | {local:.1f} | reference |",
            f"| Ray (local, 2 CPUs) | {repeat * len(SCENES)} | {tiles} | {ray:.1f} | "
            f"{'byte-identical' if same else 'DIFFERENT'} |",
            "", f"Ray − local pool: {ray - local:+.1f} s ({ray / local:.2f}x). Ray's start-up alone is ~6 s here; "
            "the rest is noise between runs on a shared 2-core machine.", ""]


def global_lines(rows: list[int], modes: list[str]) -> list[str]:
    """The global-steps table: time and peak RSS per step and mode, and whether the outputs agree."""
    lines = ["Driver-side global steps over synthetic tiles parts (random hashes and footprints, 1 % each of "
             "planted exact, near and overlapping copies), each step in a fresh process:", "",
             "| rows | mode | dedup s | dedup peak RSS MB | catalog s | catalog peak RSS MB | output |",
             "|---|---|---|---|---|---|---|"]
    for n in rows:
        r = global_steps(n, modes)
        ref = {step: r[(modes[0], step)]["sha256"] for step in ("dedup", "catalog")}
        for mode in modes:
            d, c = r[(mode, "dedup")], r[(mode, "catalog")]
            same = d["sha256"] == ref["dedup"] and c["sha256"] == ref["catalog"]
            verdict = "reference" if mode == modes[0] else ("byte-identical" if same else "DIFFERENT")
            lines.append(f"| {n:,} | {mode} | {d['seconds']:.1f} | {d['peak_rss_mb']:.0f} | {c['seconds']:.1f} | "
                         f"{c['peak_rss_mb']:.0f} | {verdict} |")
    return lines


if __name__ == "__main__":
    main()
