"""Cost of overlap search: feature extraction beside the tile stage's per-tile work, the candidate search on
synthetic features with planted matches, and verification per candidate.

Tile stage, end to end and side by side: the same scan of real scenes (DOTA, aerial COG, Landsat 7 from
../shared/data/real; 512² tiles at stride 256) tiled by the tile stage in this process with overlap search off
and on (features of both orientations, :mod:`rs4m.overlap.store`), fastest of ``--rounds`` each; the
difference per stored tile is what the features cost. Extraction variants (keypoints per orientation, the
side a tile is reduced to before detection) are timed on the same 512² tiles.

Per-tile work without IO (the calls the tile stage makes, without reading the scene or writing the tar):
windowed read of a 512² tile from a real JPEG-compressed COG, richness, pHash + dHash with canonical (dihedral)
hashes, JPEG encoding, sha256. Search: N tiles of 224 random 128-bit descriptors (112 per orientation, as the
build indexes them), of which ``--planted`` tiles copy 112 descriptors of another tile with 6 % of bits
flipped (by-table: written as features parts first, the copies in the mirror features with the positions
copied, so that verification finds them); each N in a fresh process so that its peak RSS is its own. Random
descriptors are uniform, which real ORB descriptors are not (their unrelated-pair collisions are far more
frequent, see overlap_quality), so candidate counts here are a lower bound.

    python benchmarks/overlap_speed.py [--n 30000 100000] [--rounds 3] [--extraction-only] [--write]
    python benchmarks/overlap_speed.py --one 100000 --mode by-table [--baseline /tmp/base]

``--extraction-only`` skips the candidate search (the extraction figures alone, a short run; written to the
section ``overlap_speed_extraction``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"


def planted_features(n: int, planted: int, per_tile: int = 224, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 [n * per_tile, 16]`` descriptors (tile-major) and the planted pairs ``int64 [planted, 2]``."""
    rng = np.random.default_rng(seed)
    desc = rng.integers(0, 256, (n, per_tile, 16), dtype=np.uint8)
    src = rng.choice(n - planted, planted, replace=False)
    dst = np.arange(n - planted, n)
    half = per_tile // 2
    noise = np.packbits(rng.random((planted, half, 128)) < 0.06, axis=2)
    desc[dst, :half] = desc[src, half:] ^ noise
    return desc.reshape(-1, 16), np.stack([src, dst], 1)


PART_TILES = 10_000


def write_planted_parts(folder: Path, n: int, planted: int, per_tile: int = 224, seed: int = 0) -> tuple[list[Path],
                                                                                                          np.ndarray]:
    """Features parts (:data:`PART_TILES` tiles each, every tile its own scene) of ``n`` tiles of random
    descriptors and positions, half of them the mirror image's, made a part at a time; the last ``planted``
    tiles' mirror descriptors are noisy copies (and their positions copies) of the features of earlier tiles,
    so that the search finds and verifies them as mirrored copies. Also the planted pairs ``int64 [planted, 2]``."""
    from rs4m.overlap.store import write_features_part

    rng = np.random.default_rng(seed)
    src = np.sort(rng.choice(n - planted, planted, replace=False))
    dst = np.arange(n - planted, n)
    half = per_tile // 2
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the sources' features, until their copies are made
    wanted = set(src.tolist())
    copy_of = dict(zip(dst.tolist(), src.tolist(), strict=True))
    parts = []
    for p, lo in enumerate(range(0, n, PART_TILES)):
        hi = min(lo + PART_TILES, n)
        desc = rng.integers(0, 256, (hi - lo, 2, half, 16), dtype=np.uint8)
        xy = rng.integers(0, 256, (hi - lo, 2, half, 2), dtype=np.uint8)
        for t in range(lo, hi):
            if t in wanted:
                kept[t] = desc[t - lo, 0].copy(), xy[t - lo, 0].copy()
            if t in copy_of:
                d, q = kept.pop(copy_of[t])
                desc[t - lo, 1] = d ^ np.packbits(rng.random((half, 128)) < 0.06, axis=1)
                xy[t - lo, 1] = q
        rows = [{"tile_id": f"t{t:07d}", "scene_id": f"s{t:07d}", "width": 512, "height": 512,
                 "desc": desc[t - lo, 0].tobytes(), "xy": xy[t - lo, 0].tobytes(),
                 "mirror_desc": desc[t - lo, 1].tobytes(), "mirror_xy": xy[t - lo, 1].tobytes()} for t in range(lo, hi)]
        parts.append(folder / f"part-{p:05d}.parquet")
        write_features_part(parts[-1], rows)
        del desc, xy, rows
    return parts, np.stack([src, dst], 1)


def one(n: int, planted: int, mode: str) -> dict:
    """The candidate search over ``n`` planted tiles: ``all-keys`` makes every table's keys first and sorts
    each table whole (the baseline, descriptors in memory), ``by-table`` is the build's search from features
    parts on disk (:func:`rs4m.overlap.search.find_overlaps_in_parts` where the code has it, else the code's
    :func:`read_features` + :func:`find_overlaps`), verification of the candidates included."""
    import tempfile

    from rs4m.overlap.candidates import candidate_pairs, lsh_keys, owner_dtype

    digest = ""
    if mode in ("by-table", "ray"):
        from rs4m.overlap import search
        from rs4m.overlap.store import read_features

        engine = None
        if mode == "ray":
            from rs4m.engines import get_engine

            engine = get_engine("ray", workers=os.cpu_count())  # started before the timing (~6 s)
        with tempfile.TemporaryDirectory(prefix="rs4m-overlap-speed-") as tmp:
            parts, pairs = write_planted_parts(Path(tmp), n, planted)
            import pyarrow as pa

            pa.default_memory_pool().release_unused()  # what writing the parts left in the pool, for both codes
            input_mb = n * 224 * 16 / 2**20
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            start = time.perf_counter()
            if hasattr(search, "find_overlaps_in_parts"):
                found_pairs, _ = search.find_overlaps_in_parts(parts, 0.2, Path(tmp), engine=engine)
            else:
                found_pairs = search.find_overlaps(read_features(parts), 0.2)
            seconds = time.perf_counter() - start
        if engine is not None:
            engine.close()
        i, j, keys_s = found_pairs.i, found_pairs.j, float("nan")
        digest = hashlib.sha256(b"".join(getattr(found_pairs, f).tobytes() for f in
                                         ("i", "j", "frac", "scale", "rotation", "mirrored", "inliers"))).hexdigest()
    else:
        desc, pairs = planted_features(n, planted)
        input_mb = desc.nbytes / 2**20
        owner = np.repeat(np.arange(n, dtype=owner_dtype(n)), len(desc) // n)  # as the build makes it
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        keys = lsh_keys(desc)
        keys_s = time.perf_counter() - start
        i, j, _ = candidate_pairs(keys, owner, n, slices=1)  # each table sorted whole, as before
        seconds = time.perf_counter() - start
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    hit = sum((min(a, b), max(a, b)) in found for a, b in pairs.tolist())
    return {"n": n, "mode": mode, "seconds": round(seconds, 1), "keys_s": round(keys_s, 1), "candidates": len(i),
            "planted": planted, "planted_found": hit, "input_mb": round(input_mb), "pairs_sha256": digest[:16],
            "rss_before_mb": round(rss_before),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


MODES = ("all-keys", "by-table")


def run_one(n: int, planted: int, mode: str, code: str | None = None) -> dict:
    """One search in a fresh process, with the rs4m of the folder ``code`` when given (else this tree's)."""
    path = [code or str(Path(__file__).resolve().parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--planted", str(planted), "--mode", mode],
                          capture_output=True, text=True, check=True, env=env)
    result = json.loads(proc.stdout)
    print(result, file=sys.stderr)
    return result


def _best_ms(fn, items) -> float:
    times = []
    for _ in range(3):  # the machine is shared: the fastest of 3 rounds is the cleanest figure
        start = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - start) / len(items) * 1e3)
    return min(times)


def tile_vs_features(count: int = 24) -> dict:
    """ms per 512² tile: the tile stage's per-tile work, ORB features, and features of both orientations."""
    import rasterio
    from rasterio.windows import Window

    from rs4m.codec import encode
    from rs4m.hashing import hashes_with_canonical
    from rs4m.overlap.features import extract, extract_both
    from rs4m.overlap.store import KEYPOINTS, WORK_PX
    from rs4m.richness import tile_richness

    path = REAL / "aerial-cog/cogeo.tif"
    rng = np.random.default_rng(0)
    offsets = [tuple(int(v) for v in rng.integers(0, 512, 2)) for _ in range(count)]
    with rasterio.open(path) as ds:
        def read(xy):
            return np.ascontiguousarray(np.moveaxis(ds.read([1, 2, 3], window=Window(xy[0], xy[1], 512, 512)), 0, -1))

        def stage(xy):
            rgb = read(xy)
            tile_richness(rgb)
            hashes_with_canonical([rgb])
            hashlib.sha256(encode(rgb, "jpg", 95)).hexdigest()

        tiles = [read(xy) for xy in offsets]
        extract(tiles[0])  # imports and first-call set-up stay out of the timing
        return {"stage_ms": _best_ms(stage, offsets), "features_ms": _best_ms(lambda t: extract(t, KEYPOINTS, WORK_PX),
                                                                               tiles),
                "both_ms": _best_ms(lambda t: extract_both(t, KEYPOINTS, WORK_PX), tiles)}


STAGE_SCENES = ("dota-devkit/images/P0706.png", "dota-devkit/images/P1888.png", "dota-mmrotate/demo.jpg",
                "dota-mmrotate/dota_demo.jpg", "aerial-cog/cogeo.tif", "landsat7-rasterio/RGB.byte.tif")


def tile_stage(rounds: int) -> dict:
    """Seconds of the tile stage (in-process engine) over the same scanned scenes without and with features,
    fastest of ``rounds`` each, interleaved so that load changes hit both alike; and the stored tiles."""
    import tempfile
    from dataclasses import asdict

    from rs4m.engines import get_engine
    from rs4m.plan import plan_from_flags
    from rs4m.stages.build import run_build
    from rs4m.stages.tile import run_tile

    with tempfile.TemporaryDirectory(prefix="rs4m-overlap-speed-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for rel in STAGE_SCENES:
            (src / Path(rel).name).symlink_to((REAL / rel).resolve())
        out = Path(tmp) / "out"
        plan = plan_from_flags([f"folder={src}"], {"tile_size": 512, "stride": 256})
        run_build(out, plan, ("scan",))
        tiling = {k: asdict(v) for k, v in plan.tile_configs().items()}
        engine = get_engine("local", workers=1)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for features in (False, True):
                counts = run_tile(out, tiling, plan.filters, engine, force=True, features=features)
                times[features].append(counts["seconds"])
        return {"tiles": counts["kept"], "off_s": min(times[False]), "on_s": min(times[True])}


#: (keypoints per orientation, px detected at, pyramid levels, scale between levels, px from the border);
#: the first is the build's, the second the build's before keypoints were detected nearer the border
VARIANTS = ((112, 512, 8, 1.2, 19), (112, 512, 8, 1.2, 31), (112, 384, 8, 1.2, 19), (112, 256, 8, 1.2, 19),
            (64, 256, 8, 1.2, 19), (112, 512, 6, 1.26, 19), (112, 512, 5, 1.32, 19))


def extraction_variants(count: int = 16) -> dict:
    """ms per 512² tile for both orientations under each setting of :data:`VARIANTS`."""
    import rasterio
    from rasterio.windows import Window

    from rs4m.overlap.features import extract, extract_both

    rng = np.random.default_rng(2)
    with rasterio.open(REAL / "aerial-cog/cogeo.tif") as ds:
        tiles = [np.ascontiguousarray(np.moveaxis(ds.read([1, 2, 3], window=Window(int(x), int(y), 512, 512)), 0, -1))
                 for x, y in rng.integers(0, 512, (count, 2))]
    extract_both(tiles[0])
    out = {v: _best_ms(lambda t, v=v: extract_both(t, *v[:4], edge_px=v[4]), tiles) for v in VARIANTS}
    # the baseline: each orientation detected on its own (what extract_both did before it shared the detection)
    out["separate"] = _best_ms(lambda t: (extract(t, *VARIANTS[0][:4], edge_px=VARIANTS[0][4]),
                                          extract(np.ascontiguousarray(t[:, ::-1]), *VARIANTS[0][:4],
                                                  edge_px=VARIANTS[0][4])), tiles)
    return out


def verify_ms(count: int = 40) -> dict:
    """ms per verification of related (overlapping crops) and unrelated pairs of real 384² crops."""
    import rasterio

    from rs4m.overlap.features import extract, extract_both
    from rs4m.overlap.store import KEYPOINTS, WORK_PX
    from rs4m.overlap.verify import verify

    with rasterio.open(REAL / "aerial-cog/cogeo.tif") as ds:
        scene = np.ascontiguousarray(np.moveaxis(ds.read([1, 2, 3]), 0, -1))
    rng = np.random.default_rng(1)
    xy = rng.integers(0, 1024 - 384 - 128, (count, 2))
    a = [extract(scene[y : y + 384, x : x + 384], KEYPOINTS, WORK_PX) for x, y in xy]
    b = [extract_both(np.ascontiguousarray(scene[y + 96 : y + 480, x + 128 : x + 512]), KEYPOINTS, WORK_PX)
         for x, y in xy]
    related = _best_ms(lambda k: verify(a[k], *b[k]), range(count))
    unrelated = _best_ms(lambda k: verify(a[k], *b[(k + count // 2) % count]), range(count))
    return {"related_ms": related, "unrelated_ms": unrelated}


def report(results: list[dict], cost: dict, ver: dict, stage: dict, variants: dict) -> str:
    per_off, per_on = stage["off_s"] / stage["tiles"] * 1e3, stage["on_s"] / stage["tiles"] * 1e3
    lines = [(f"Tile stage, end to end ({stage['tiles']} stored 512² tiles of 6 real scenes, in-process, fastest of "
              f"the rounds): {per_off:.1f} ms a tile with overlap search off, {per_on:.1f} ms on: the features "
              f"cost {per_on - per_off:.1f} ms a tile, {(per_on - per_off) / per_off:.0%} of the tile stage's "
              f"per-tile time (target ≤ 25 %)."), "",
             (f"Per-tile work without IO (one core, fastest of 3 rounds of 24 real 0.6 m aerial tiles): "
              f"{cost['stage_ms']:.1f} ms; ORB features of one orientation {cost['features_ms']:.1f} ms "
              f"({cost['features_ms'] / cost['stage_ms']:.0%} of it), of both (what the build stores) "
              f"{cost['both_ms']:.1f} ms ({cost['both_ms'] / cost['stage_ms']:.0%})."), "",
             "Extraction variants, both orientations of a 512² tile (quality of each: overlap_quality):", "",
             "| keypoints per orientation | detected at px | pyramid | px from the border | ms per tile | "
             "bytes per tile | × no-IO work |",
             "|---|---|---|---|---|---|---|"]
    for key, ms in variants.items():
        k, px, levels, factor, edge = VARIANTS[0] if key == "separate" else key
        how = " (each orientation detected on its own: the baseline)" if key == "separate" else ""
        lines.append(f"| {k}{how} | {px} | {levels} × {factor:g} | {edge} | {ms:.1f} | {2 * k * 18} | "
                     f"{ms / cost['stage_ms']:.0%} |")
    lines += ["", (f"Verification per candidate (with the mirrored side): {ver['related_ms']:.2f} ms for overlapping "
                   f"pairs, {ver['unrelated_ms']:.2f} ms for unrelated ones.")]
    if not results:
        return "\n".join(lines)
    lines += ["",
              "Candidate search (16 tables × 32-bit keys, ≥ 4 votes, 224 keypoints per tile; all-keys: every "
              "table's keys made first and each table sorted whole, the baseline; by-table: the build's search "
              "from features parts on disk, each table's keys made from the bytes it samples when it is searched "
              "and sorted in 16 slices of their range, candidates verified, the candidates column its pairs):", "",
              "| N tiles | keys | keys s | total s | candidates | planted found | descriptors MB | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['n']:,} | {r['mode']} | {r['keys_s']} | {r['seconds']} | {r['candidates']:,} | "
                     f"{r['planted_found']}/{r['planted']} | {r['input_mb']} | {r['peak_rss_mb']} |")
    big_n = max(r["n"] for r in results)
    for r in (r for r in results if r["n"] == big_n):
        for target in (1_000_000, 4_000_000):
            f = target / big_n
            lines += ["", (f"{r['mode']}, extrapolated linearly from N = {big_n:,} (sorts grow as N log N, so this is "
                           f"optimistic) to {target:,}: ~{r['seconds'] * f / 60:.0f} min and "
                           f"~{r['peak_rss_mb'] * f / 1024:.1f} GB peak RSS " + (
                               f"({target * 224 * 16 / 2**30:.1f} GB of it descriptors)." if r["mode"] == "all-keys"
                               else "(an upper bound: the descriptors stay on disk, and the interpreter and "
                               "libraries, ~0.2 GB, do not grow; `## overlap_search_memory` measures the slope: "
                               "2.3–3.2 GB at 1 M)."))]
    return "\n".join(lines)


def report_ray(results: list[dict]) -> str:
    lines = [f"The build's overlap search (features parts on disk, candidate search and verification) over "
             f"{results[0]['n']:,} planted tiles, each run in a fresh process: in that process, and on a local Ray "
             f"with {os.cpu_count()} CPUs (each slice of a table's key range and each 4096 candidates a task; the "
             "Ray start, ~6 s, is outside the timing). Peak RSS is the driver's.", "",
             "| where | s | pairs found | planted found | driver peak RSS MB | pairs sha256 |",
             "|---|---|---|---|---|---|"]
    for r in results:
        where = "one process" if r["mode"] == "by-table" else "Ray"
        lines.append(f"| {where} | {r['seconds']} | {r['candidates']:,} | {r['planted_found']}/{r['planted']} | "
                     f"{r['peak_rss_mb']} | {r['pairs_sha256']} |")
    same = results[0]["pairs_sha256"] == results[1]["pairs_sha256"]
    lines += ["", f"Same pairs, transforms and order in both: {'yes' if same else 'NO'}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[30_000, 100_000])
    parser.add_argument("--planted", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="tile-stage rounds without and with features")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES + ("ray",), default="by-table", help=argparse.SUPPRESS)
    parser.add_argument("--ray", type=int, metavar="N", help="the build's search over N planted tiles in one process "
                        "and on a local Ray with every CPU (candidate search and verification as Ray tasks), side by "
                        "side; needs rs4m[ray]")
    parser.add_argument("--baseline", help="with --one: run the search with the rs4m of this folder too (e.g. "
                        "`git archive main rs4m | tar -x -C /tmp/base`), then this tree's, and print both")
    parser.add_argument("--baseline-label", default="baseline")
    parser.add_argument("--extraction-only", action="store_true", help="skip the candidate search")
    parser.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.one and args.baseline:
        before = run_one(args.one, args.planted, args.mode, args.baseline)
        now = run_one(args.one, args.planted, args.mode)
        print("| candidate search | planted found | peak RSS MB | RSS before the search MB | s |")
        print("|---|---|---|---|---|")
        for label, r in ((args.baseline_label, before), ("this tree", now)):
            print(f"| {label} | {r['planted_found']}/{r['planted']} | {r['peak_rss_mb']} | {r['rss_before_mb']} | "
                  f"{r['seconds']} |")
        return
    if args.one:
        print(json.dumps(one(args.one, args.planted, args.mode)))
        return
    if args.ray:
        body = report_ray([run_one(args.ray, args.planted, mode) for mode in ("by-table", "ray")])
        print(body)
        if args.write:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from results import write_section

            write_section("overlap_search_ray", "python benchmarks/overlap_speed.py " + " ".join(sys.argv[1:]), body)
        return
    results = [] if args.extraction_only else [run_one(n, args.planted, mode) for n in args.n for mode in MODES]
    body = report(results, tile_vs_features(), verify_ms(), tile_stage(args.rounds), extraction_variants())
    print(body)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        section = "overlap_speed_extraction" if args.extraction_only else "overlap_speed"
        write_section(section, "python benchmarks/overlap_speed.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
