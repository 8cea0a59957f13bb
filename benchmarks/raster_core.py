"""Per-window cost of rs4m.raster against plain rasterio reads of the same windows, and the richness score cost.

Baseline: ``rasterio.open`` once and ``ds.read(window=...)`` per window (no masks, no stretch, no RGB layout),
the least any reader must do. rs4m's ``read_window`` adds the valid mask, the uint16 → uint8 stretch, the
``[h, w, 3]`` layout and, for whole-decode formats, one decode per scene amortised over its windows.

    python benchmarks/raster_core.py [--write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window as RioWindow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402
from rs4m.raster import open_scene  # noqa: E402
from rs4m.richness import patch_scores, tile_richness  # noqa: E402
from rs4m.sources.base import SceneRef  # noqa: E402
from rs4m.tiling import grid_windows  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "real"


def best_of(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls, seconds (the machine is shared: the minimum is the signal)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_uint16_scene(folder: Path) -> Path:
    """A 4096² 3-band uint16 deflate-tiled GeoTIFF with smooth structure and noise (stretch on every read)."""
    path = folder / "u16.tif"
    yy, xx = np.mgrid[0:4096, 0:4096].astype(np.float32)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=4096, height=4096, count=3, dtype="uint16", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 10, 10)) as ds:
        for b in range(3):
            band = 8000 + 3000 * np.sin(xx / (300 + 50 * b)) * np.cos(yy / 410) + rng.normal(0, 400, xx.shape)
            ds.write(band.astype(np.uint16), b + 1)
    return path


def read_case(root: Path, rel: str, tile: int) -> dict:
    """ms per window over one pass through a freshly opened scene (as the tile stage reads it), plain
    rasterio and rs4m; the open alone; and window_footprint on an open reader."""
    with rasterio.open(root / rel) as ds:
        width, height = ds.width, ds.height
    windows = grid_windows(width, height, tile)
    n = len(windows)

    def baseline() -> None:
        with rasterio.open(root / rel) as ds:
            for w in windows:
                ds.read(window=RioWindow(*w))

    def ours() -> None:
        with open_scene(root, SceneRef(rel)) as r:
            for w in windows:
                r.read_window(*w)

    with open_scene(root, SceneRef(rel)) as r:
        footprint = best_of(lambda: [r.window_footprint(*w) for w in windows]) / n
    return {"scene": rel, "size": f"{width}×{height}", "tile": tile, "windows": n,
            "open": best_of(lambda: open_scene(root, SceneRef(rel)).close(), repeats=5) * 1e3,
            "baseline": best_of(baseline) / n * 1e3, "ours": best_of(ours) / n * 1e3, "footprint": footprint * 1e3}


def richness_cases() -> list[tuple[str, float]]:
    with Image.open(DATA / "dota-devkit" / "images" / "P0706.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    t224, t512 = np.ascontiguousarray(rgb[:224, :224]), np.ascontiguousarray(rgb[:512, :512])
    patch_scores(t224)  # warm-up (cached histogram offsets) outside the timings
    out = []
    for name, fn, n in (("patch_scores 224²", lambda: patch_scores(t224), 300),
                        ("tile_richness 224²", lambda: tile_richness(t224), 300),
                        ("tile_richness 512² (incl. resize to 224²)", lambda: tile_richness(t512), 100)):
        out.append((name, best_of(lambda fn=fn, n=n: [fn() for _ in range(n)]) / n * 1e3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        u16 = make_uint16_scene(Path(tmp))
        cases = [read_case(DATA / "landsat7-rasterio", "RGB.byte.tif", 256),
                 read_case(DATA / "aerial-cog", "cogeo.tif", 256),
                 read_case(DATA / "dota-devkit" / "images", "P0706.png", 256),
                 read_case(u16.parent, u16.name, 512)]
    cases[-1]["scene"] = "synthetic uint16 deflate-tiled GeoTIFF"
    rows = ["| scene | size | tile | windows | rasterio ms/window | rs4m ms/window | rs4m open_scene ms | "
            "window_footprint ms/window |", "|---|---|---|---|---|---|---|---|"]
    rows += [f"| {c['scene']} | {c['size']} | {c['tile']} | {c['windows']} | {c['baseline']:.2f} | "
             f"**{c['ours']:.2f}** | {c['open']:.2f} | {c['footprint']:.3f} |" for c in cases]
    rich = richness_cases()
    rows += ["", "| richness | ms per tile (one core) |", "|---|---|"]
    rows += [f"| {name} | {ms:.2f} |" for name, ms in rich]
    body = "\n".join(rows) + (
        "\n\nBest of 3 runs. *ms/window*: one pass over every grid window of a freshly opened scene, divided "
        "by the windows — the open, and for rs4m the whole decode of a PNG/JPEG and the stretch statistics of a "
        "uint16 scene, amortised over them. The baseline is plain `rasterio` (open once, `ds.read(window=...)`: "
        "no valid mask, no stretch, band-first); rs4m adds masks, the stretch and the `[h, w, 3]` layout. "
        "*window_footprint*: on an open reader (32 points to EPSG:4326). Richness: one core, DOTA P0706 pixels.")
    print(body)
    if args.write:
        write_section("raster_core", "python benchmarks/raster_core.py --write", body)


if __name__ == "__main__":
    main()
