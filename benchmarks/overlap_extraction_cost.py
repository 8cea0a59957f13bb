"""Cost of overlap features per 512² tile under extraction variants, side by side in one run, beside the tile
stage's per-tile time; with ``--quality``, each variant's recall and precision on overlap_quality's pool.

Tiles: 512² tiles at stride 256 of the real scenes the tile-stage figure of overlap_speed tiles (DOTA, aerial
COG, Landsat 7; the flat ones, grey spread ≤ 8, left out as the benchmarks' ``rich`` does). Every variant
extracts both orientations of every tile (:func:`rs4m.overlap.extract_both`, as the build stores them) on one
OpenCV thread, the variants taking turns on each tile, each tile's fastest of ``--rounds`` calls. A variant
is a set of ``extract_both`` keyword arguments (``fast_threshold=20,candidates=2``); ``--baseline`` times the
``extract_both`` of another tree's ``rs4m/overlap/features.py`` too (``git archive main rs4m | tar -x -C
/tmp/base``) and counts the tiles whose features each variant reproduces exactly (every textured 512²
tile of those scenes at stride 128, and with ``--quality`` the quality pools' images). The tile stage per tile:
overlap_speed's end-to-end figure (in-process, overlap off and on with this tree's default), same run.

    python benchmarks/overlap_extraction_cost.py [--variant K=V,K=V ...] [--baseline FEATURES_PY] [--rounds 5]
        [--quality] [--pairs 1] [--write]

``--quality`` builds overlap_quality's pool (``--pairs`` designed pairs per scene, transform and bin) and runs
its tile–tile search (mirrored features indexed) and leakage search per variant, at the build's thresholds
(about 40 s a variant on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overlap_quality import _read_any
from overlap_speed import REAL, STAGE_SCENES

VARIANTS = ("", "fast_threshold=15", "fast_threshold=20", "fast_threshold=30", "candidates=3", "candidates=2",
            "fast_threshold=20,candidates=2")


def parse_variant(text: str) -> dict:
    """``"fast_threshold=20,candidates=2"`` → ``{"fast_threshold": 20, "candidates": 2}`` (numbers only)."""
    out: dict = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = float(value) if "." in value else int(value)
    return out


def real_tiles(count: int, size_px: int = 512, stride_px: int = 256) -> list[np.ndarray]:
    """Up to ``count`` textured ``uint8 [size, size, 3]`` tiles, taken in turn from each scene's grid."""
    per_scene = []
    for rel in STAGE_SCENES:
        scene = _read_any(REAL / rel)
        assert scene is not None, rel  # the tile stage's scenes are 8-bit RGB
        h, w = scene.shape[:2]
        grid = [np.ascontiguousarray(scene[y : y + size_px, x : x + size_px])
                for y in range(0, h - size_px + 1, stride_px) for x in range(0, w - size_px + 1, stride_px)]
        per_scene.append([t for t in grid if t.mean(axis=-1).std() > 8])
    out = []
    for k in range(max(map(len, per_scene))):
        out += [tiles[k] for tiles in per_scene if k < len(tiles)]
    return out[:count]


def load_baseline(path: Path) -> ModuleType:
    """Another tree's ``features.py`` as a module of its own (it imports numpy and OpenCV only)."""
    spec = importlib.util.spec_from_file_location("baseline_features", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}: give the path of a features.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def same(a: tuple, b: tuple) -> bool:
    """Whether two ``extract_both`` results are the same features, byte for byte."""
    return all(np.array_equal(x.desc, y.desc) and np.array_equal(x.xy_q, y.xy_q) for x, y in zip(a, b, strict=True))


def time_variants(fns: dict, items: list, rounds: int) -> dict[str, float]:
    """ms per item of each function: each item's fastest of ``rounds`` calls, averaged over the items; the
    functions take turns on every item, so that a burst of load on the shared machine hits all alike."""
    best = {name: np.full(len(items), np.inf) for name in fns}
    for _ in range(rounds):
        for k, item in enumerate(items):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(item)
                best[name][k] = min(best[name][k], time.perf_counter() - start)
    return {name: float(t.mean() * 1e3) for name, t in best.items()}


def steps_ms(tiles: list[np.ndarray], rounds: int, **settings) -> dict[str, float]:
    """ms per tile of the extraction's steps under ``settings``: grey + stretch, ORB detection and description
    with the spread of the kept keypoints, description of the mirror."""
    import cv2

    from rs4m.overlap import features as ft
    from rs4m.overlap.store import KEYPOINTS as kp
    from rs4m.overlap.store import WORK_PX

    greys = [ft._work_grey(t, WORK_PX) for t in tiles]
    detected = [ft._detect(g, f, s, kp, **settings) for g, f, s in greys]
    mirrored = [(cv2.flip(g, 1), ft.mirrored_keypoints(kps, g.shape[1]))
                for (g, _, _), (_, kps, _) in zip(greys, detected, strict=True)]
    items = list(range(len(tiles)))
    fns = {"grey": lambda i: ft._work_grey(tiles[i], WORK_PX),
           "detect and describe": lambda i: ft._detect(*greys[i], kp, **settings),
           "describe mirror": lambda i: ft._describe(detected[i][0], *mirrored[i], *greys[i][1:])}
    return time_variants(fns, items, rounds)  # type: ignore[arg-type]


def quality(variants: dict[str, dict], pairs: int, seeds: list[int], tile_px: int | None,
            baseline=None) -> dict[str, dict]:
    """Tile–tile recall ≥ 0.5 and precision, leakage recall and precision at the build's thresholds, per
    variant, on overlap_quality's pool of each seed (figures of all the pools' reports together); with
    ``baseline`` (an ``extract_both``), the pools' images whose features each variant reproduces exactly."""
    import overlap_quality as oq

    from rs4m.overlap import candidates as cand
    from rs4m.overlap.features import extract_both
    from rs4m.overlap.store import KEYPOINTS, WORK_PX

    params = {"tables": cand.TABLES, "bits": cand.BITS, "min_votes": cand.MIN_VOTES, "max_bucket": cand.MAX_BUCKET}
    pair_at, leak_at = oq.build_thresholds()
    sums: dict[str, dict[str, float]] = {name: {} for name in variants}
    for seed in seeds:
        pool = oq.build_pool(pairs, seed, tile_px)
        big = sum(t >= 0.5 for _, _, _, t in pool.designed)
        rows = np.arange(len(pool.images))
        leaking = sum(s >= 0.25 for s in oq.leak_truth(pool, rows[0::2], rows[1::2]).values())
        base = [baseline(im.pixels, KEYPOINTS, WORK_PX) for im in pool.images] if baseline else None
        for name, settings in variants.items():
            both = [extract_both(im.pixels, KEYPOINTS, WORK_PX, **settings) for im in pool.images]  # as the build
            feats, mirrors = [f for f, _ in both], [m for _, m in both]
            _, _, pair_sweep = oq.tile_tile(pool, feats, mirrors, params)
            _, _, leak_sweep = oq.leakage(pool, feats, mirrors, params)
            pair, leak = oq.at_thresholds(pair_sweep, pair_at), oq.at_thresholds(leak_sweep, leak_at)
            counts = {"found": pair["recall_50"] * big, "big": big, "reported": pair["reported"],
                      "false": pair["false"], "leak_found": leak["recall_25"] * leaking, "leaking": leaking,
                      "flagged": leak["flagged"], "leak_false": leak["false"], "images": len(both),
                      "same": sum(map(same, both, base)) if base else 0}
            for key, value in counts.items():
                sums[name][key] = sums[name].get(key, 0) + value
            print(f"seed {seed}", name or "default", counts, file=sys.stderr)
    return {name: {"recall": c["found"] / c["big"], "precision": 1 - c["false"] / max(c["reported"], 1),
                   "false": c["false"], "leak_recall": c["leak_found"] / c["leaking"],
                   "leak_precision": 1 - c["leak_false"] / max(c["flagged"], 1), "leak_false": c["leak_false"],
                   "same": c["same"], "images": c["images"]}
            for name, c in sums.items()}


def report(ms: dict[str, float], identical: dict[str, int], n_same: int, n_tiles: int, rounds: int,
           stage: dict, steps: dict[str, float], qual: dict[str, dict], load: tuple[float, float]) -> str:
    per_off = stage["off_s"] / stage["tiles"] * 1e3
    per_on = stage["on_s"] / stage["tiles"] * 1e3
    has_base = "baseline" in ms
    ref = ms["baseline"] if has_base else ms[""]
    lines = [(f"{n_tiles} real 512² tiles, both orientations, one OpenCV thread, the variants taking turns on each "
              f"tile, each tile's fastest of {rounds} calls, averaged; load average {load[0]:.2f} at the start, "
              f"{load[1]:.2f} at the end (2 cores, shared). Tile stage end to end ({stage['tiles']} stored tiles, "
              f"overlap_speed): {per_off:.1f} ms a tile with overlap off, {per_on:.1f} ms on (this tree's default "
              "extraction)."), "",
             ("| extraction | ms per tile | × baseline | % of the tile stage (off) | same features as the baseline: "
              f"{n_same} real tiles | and the quality pools' images | tile–tile recall ≥ 0.5 (precision) | "
              "leakage recall (precision) |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, value in ms.items():
        label = {"baseline": "baseline (the other tree's default)", "": "this tree's default"}.get(name, name)
        q = qual.get(name)
        cells = (f"{q['recall']:.3f} ({q['precision']:.3f}, {q['false']:.0f} false) | {q['leak_recall']:.3f} "
                 f"({q['leak_precision']:.3f}, {q['leak_false']:.0f} false)" if q else "- | -")
        same_cell = f"{identical[name]}" if has_base else "-"
        pool_cell = f"{q['same']}/{q['images']}" if q and has_base else "-"
        lines.append(f"| {label} | {value:.2f} | {value / ref:.2f} | {value / per_off:.0%} | {same_cell} | "
                     f"{pool_cell} | {cells} |")
    total = sum(steps.values())
    lines += ["", "Steps of this tree's default extraction, ms per tile (timed alike): "
              + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()) + f"; sum {total:.2f}."]
    return "\n".join(lines)


def main() -> None:
    import cv2
    from overlap_speed import tile_stage

    from rs4m.overlap.features import extract_both
    from rs4m.overlap.store import KEYPOINTS, WORK_PX

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", default=list(VARIANTS),
                        help="extract_both keyword arguments, K=V,K=V ('' is the default)")
    parser.add_argument("--baseline", type=Path, help="another tree's rs4m/overlap/features.py, timed beside")
    parser.add_argument("--tiles", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quality", action="store_true", help="recall and precision of each variant too")
    parser.add_argument("--pairs", type=int, default=1, help="with --quality: overlap_quality's --pairs")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="with --quality: the pools' seeds")
    parser.add_argument("--tile-px", type=int, default=None, help="with --quality: overlap_quality's --tile-px")
    parser.add_argument("--section", default="overlap_extraction_cost", help="RESULTS.md section for --write")
    parser.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # per-core cost: the build's workers each take a core (ORB's detection is serial anyway)
    load_start = os.getloadavg()[0]
    tiles = real_tiles(args.tiles)
    variants = {v: parse_variant(v) for v in [""] + [v for v in args.variant if v]}  # the default: the reference
    fns = {name: (lambda t, s=settings: extract_both(t, KEYPOINTS, WORK_PX, **s))  # as the build
           for name, settings in variants.items()}
    base = load_baseline(args.baseline) if args.baseline else None
    if base is not None:
        fns = {"baseline": lambda t: base.extract_both(t, KEYPOINTS, WORK_PX), **fns}
    checked = real_tiles(10_000, stride_px=128)  # every textured tile at stride 128, for the same-features count
    results = {name: [fn(t) for t in checked] for name, fn in fns.items()}  # first calls stay out of the timing
    identical = {name: sum(map(same, got, results["baseline"])) if base else 0 for name, got in results.items()}
    ms = time_variants(fns, tiles, args.rounds)
    steps = steps_ms(tiles, args.rounds)
    stage = tile_stage(3)
    qual = quality(variants, args.pairs, args.seed, args.tile_px, base.extract_both if base else None) \
        if args.quality else {}
    load = (load_start, os.getloadavg()[0])
    body = report(ms, identical, len(checked), len(tiles), args.rounds, stage, steps, qual, load)
    print(body)
    if args.write:
        from results import write_section

        write_section(args.section, "python benchmarks/overlap_extraction_cost.py " + shlex.join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
