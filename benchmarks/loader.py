"""Data-pipeline throughput: rs4m's manifest loader vs a bare decode loop vs the webdataset library.

All three turn the same stored JPEG tiles into augmented uint8 224² images with the same functions
(``pretrain.data.decode_tile`` + ``pretrain.data.augment``: simplejpeg decode, RandomResizedCrop(224, scale
0.2–1, bicubic), flip), so they differ only in how bytes reach the decoder and samples reach the trainer:

- ``bare``: one process, a Python loop over the manifest rows: ``ShardReader.read`` + decode + augment. No
  DataLoader, no batching: the floor one worker can reach.
- ``rs4m``: ``DataLoader(TileDataset, sampler=ResumableSampler, batch_size=64, num_workers=W)`` as the
  trainer uses it (one ranged read per tile, shuffled order), uint8 batches [64, 3, 224, 224].
- ``webdataset``: ``webdataset.WebDataset`` reading the same shards sequentially (tar streaming, every
  member), the same decode + augment in ``.map``, ``.batched(64)``, ``DataLoader(num_workers=W)``.

Each is measured after a warm-up (worker start, page cache), ``--repeats`` times alternating, best kept (the
machine is shared). Per worker = images/s ÷ W. Because wall time on a shared 2-core machine mostly measures
the neighbours, the table also gives images per CPU second of the worker processes (utime + stime from
/proc; the main process for ``bare``): the pipeline's own cost per image, which contention does not change,
and the system part of it: a DataLoader worker hands each batch over in a fresh shared-memory segment, whose
pages the kernel must zero and map (≈ 9.6 MB per batch of 64), which the bare loop never pays.

Input: ``--out OUT`` (an rs4m build output folder; only its jpg tiles are used) or, by default, a corpus cut
into a temp folder from ../shared/data/real: seeded random 256² windows of six real images, JPEG q95 (as
``rs4m build`` stores them), in 6 shards + a manifest written with rs4m.shards / rs4m.manifest.

    python benchmarks/loader.py [--tiles 300] [--workers 1 2] [--images 900] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402
from pretrain.data import ResumableSampler, TileDataset, augment, decode_tile  # noqa: E402
from rs4m import codec  # noqa: E402
from rs4m import manifest as mf  # noqa: E402
from rs4m.layout import OutputLayout  # noqa: E402
from rs4m.shards import ShardReader, ShardWriter  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
SOURCES = ["aerial-cog/cogeo.tif", "dota-mmrotate/demo.jpg", "dota-mmrotate/dota_demo.jpg",
           "dota-devkit/images/P0706.png", "dota-devkit/images/P1888.png", "landsat7-rasterio/RGB.byte.tif"]
BATCH = 64
SEED = 0


# ----------------------------------------------------------------------------------------------- corpus


def read_rgb(path: Path) -> np.ndarray:
    """A real image as RGB uint8 [H, W, 3] (GeoTIFFs through rasterio, the rest through Pillow)."""
    if path.suffix == ".tif":
        import rasterio

        with rasterio.open(path) as src:
            return np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def build_corpus(out: Path, tiles: int, size: int = 256, shards: int = 6) -> Path:
    """Cut ``tiles`` random ``size``² JPEG tiles from the real images into ``out``; return the manifest path."""
    rng = np.random.default_rng(SEED)
    images = [read_rgb(REAL / s) for s in SOURCES if (REAL / s).exists()]
    if not images:
        raise SystemExit(f"no real imagery under {REAL}; pass --out OUT (an rs4m build) instead")
    layout, rows, infos = OutputLayout(out), [], []
    per_shard = -(-tiles // shards)
    for unit in range(shards):
        with ShardWriter(layout.shard(unit)) as writer:
            for i in range(unit * per_shard, min(tiles, (unit + 1) * per_shard)):
                k = i % len(images)
                img = images[k]
                y, x = int(rng.integers(0, img.shape[0] - size + 1)), int(rng.integers(0, img.shape[1] - size + 1))
                tile_id = mf.make_tile_id("bench", SOURCES[k], x, y, size, size)
                loc = writer.add(tile_id, "jpg", codec.encode(img[y:y + size, x:x + size], "jpg"), {"i": i})
                rows.append({"tile_id": tile_id, "scene_id": mf.make_scene_id("bench", SOURCES[k]),
                             "source": "bench", "scene_path": SOURCES[k], "x": x, "y": y, "width": size,
                             "height": size, "format": "jpg", "shard": layout.shard_name(unit),
                             "offset": loc.offset, "length": loc.length})
        infos.append(writer.info.__dict__)
    mf.write_table(mf.table_from_rows(infos, mf.SHARDS_SCHEMA), layout.shards_table)
    mf.write_table(mf.table_from_rows(rows, mf.MANIFEST_SCHEMA), layout.manifest, mf.MANIFEST_SCHEMA)
    return layout.manifest


# ----------------------------------------------------------------------------------------------- pipelines


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by processes ``pids``, or by this process if none (Linux)."""
    if not pids:
        t = os.times()
        return t.user, t.system
    user = system = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])  # utime, stime: fields 14, 15 of stat
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def run_bare(manifest: Path, images: int) -> tuple[float, float, float]:
    """(images/s, images per CPU second, system CPU µs per image) of a one-process loop: ranged read + decode +
    augment."""
    df = pd.read_parquet(manifest, columns=["shard", "offset", "length", "format"])
    rows = list(df.itertuples(index=False))
    reader = ShardReader(manifest.parent / "shards")
    for r in rows[:BATCH]:  # warm-up: page cache, allocator
        augment(decode_tile(reader.read(r.shard, r.offset, r.length), r.format), np.random.default_rng(0))
    t0, (u0, s0) = time.perf_counter(), _cpu_seconds([])
    for n in range(images):
        r = rows[n % len(rows)]
        rng = np.random.default_rng((SEED, 0, n))
        torch.from_numpy(augment(decode_tile(reader.read(r.shard, r.offset, r.length), r.format), rng))
    wall, (u1, s1) = time.perf_counter() - t0, _cpu_seconds([])
    return images / wall, images / (u1 - u0 + s1 - s0), 1e6 * (s1 - s0) / images


def _time_loader(loader: torch.utils.data.DataLoader, images: int,
                 warmup_batches: int = 3) -> tuple[float, float, float]:
    """(images/s, images per worker CPU second, worker system CPU µs per image) after ``warmup_batches``."""
    it = iter(loader)
    for _ in range(warmup_batches):
        next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    t0, (u0, s0) = time.perf_counter(), _cpu_seconds(pids)
    got = 0
    while got < images:
        got += len(next(it)[0])
    wall, (u1, s1) = time.perf_counter() - t0, _cpu_seconds(pids)
    del it
    return got / wall, got / (u1 - u0 + s1 - s0), 1e6 * (s1 - s0) / got


def run_rs4m(manifest: Path, images: int, workers: int) -> tuple[float, float, float]:
    """The trainer's loader: TileDataset + ResumableSampler + DataLoader(workers)."""
    ds = TileDataset(manifest, seed=SEED)
    sampler = ResumableSampler(len(ds), chunk=BATCH, seed=SEED)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=workers,
                                         persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    return _time_loader(loader, images)


def _wds_sample(sample: dict) -> tuple[torch.Tensor, str]:
    rng = np.random.default_rng((SEED, 0, int(sample["__key__"][:8], 16)))
    return torch.from_numpy(augment(decode_tile(sample["jpg"], "jpg"), rng)), sample["__key__"]


def run_webdataset(manifest: Path, images: int, workers: int) -> tuple[float, float, float]:
    """webdataset streaming the same shards with the same decode + augment."""
    import webdataset as wds

    shards = sorted(str(p) for p in (manifest.parent / "shards").glob("*.tar"))
    ds = wds.WebDataset(shards, shardshuffle=False, empty_check=False).repeat().map(_wds_sample).batched(BATCH)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                         persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    return _time_loader(loader, images)


# ----------------------------------------------------------------------------------------------- report


def measure(manifest: Path, images: int, workers: list[int], repeats: int) -> list[dict]:
    """Best (images/s, images per worker CPU second) of every (pipeline, workers) case over ``repeats``
    alternating rounds."""
    cases = [("bare", 1)] + [(name, w) for w in workers for name in ("rs4m", "webdataset")]
    best: dict[tuple[str, int], tuple[float, float, float]] = {}
    for _ in range(repeats):
        for name, w in cases:
            wall, cpu, sys_us = (run_bare(manifest, images) if name == "bare" else run_rs4m(manifest, images, w)
                                 if name == "rs4m" else run_webdataset(manifest, images, w))
            old = best.get((name, w), (0.0, 0.0, float("inf")))
            best[(name, w)] = (max(old[0], wall), max(old[1], cpu), min(old[2], sys_us))
    floor_wall, floor_cpu, _ = best[("bare", 1)]
    return [{"pipeline": n, "workers": w, "images_per_s": wall, "per_worker": wall / w,
             "vs_bare": wall / w / floor_wall, "per_cpu_s": cpu, "cpu_vs_bare": cpu / floor_cpu, "sys_us": sys_us}
            for (n, w), (wall, cpu, sys_us) in best.items()]


def table(rows: list[dict]) -> str:
    lines = ["| pipeline | workers | images/s | per worker | per worker ÷ bare | images per worker-CPU-s | "
             "÷ bare | system CPU µs/image |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['pipeline']} | {r['workers']} | {r['images_per_s']:.0f} | {r['per_worker']:.0f} | "
              f"{r['vs_bare']:.2f}× | {r['per_cpu_s']:.0f} | {r['cpu_vs_bare']:.2f}× | {r['sys_us']:.0f} |"
              for r in rows]
    return "\n".join(lines)


def shm_note(rows: list[dict]) -> str:
    """One sentence: how much of a loader worker's CPU per image is system time (the shared-memory hand-over)."""
    r = next(r for r in rows if r["pipeline"] == "rs4m" and r["workers"] == 1)
    bare = next(r for r in rows if r["pipeline"] == "bare")
    share = r["sys_us"] / (1e6 / r["per_cpu_s"])
    return (f"The rs4m worker spends {r['sys_us']:.0f} µs of system CPU per image (bare loop: {bare['sys_us']:.0f}), "
            f"{100 * share:.0f} % of its CPU per image: the kernel zeroing and mapping the fresh shared-memory "
            "segment each batch is handed over in. Per-sample Python work (keys, RNG, ranged read) is not "
            "measurable beside the decode. Wall-clock figures on this shared 2-core machine vary by ±10 % from "
            "run to run; two workers share the two cores with the main process.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="an rs4m build output folder to read instead of the cut corpus")
    p.add_argument("--tiles", type=int, default=300)
    p.add_argument("--images", type=int, default=900, help="images timed per case")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="rs4m-loader-"))
    try:
        if a.out:
            manifest = a.out / "manifest.parquet"
            df = pd.read_parquet(manifest)
            if set(df["format"]) != {"jpg"}:
                raise SystemExit(f"{manifest}: the benchmark compares JPEG pipelines; "
                                 f"this build has {set(df['format'])}")
            source = f"build {a.out} ({len(df)} tiles)"
        else:
            manifest = build_corpus(tmp / "out", a.tiles)
            source = f"{a.tiles} random 256² JPEG q95 tiles cut from {len(SOURCES)} images of ../shared/data/real"
        rows = measure(manifest, a.images, a.workers, a.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    body = (f"Input: {source}; output uint8 [64, 3, 224, 224] batches; {a.images} images per case after a "
            f"warm-up, best of {a.repeats} alternating rounds.\n\n{table(rows)}\n\n{shm_note(rows)}\n")
    print(body)
    if not a.no_write:
        args = sys.argv[1:] if argv is None else argv
        write_section("loader", " ".join(["python benchmarks/loader.py", *args]), body)


if __name__ == "__main__":
    main()
