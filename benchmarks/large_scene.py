"""Peak memory and time of building one very large scene (a 20000² RGB PNG, and a JPEG of the same size).

Each build is ``rs4m build OUT --source folder=DIR --workers 1 -q`` in a child process; its peak RSS is the
child's ``ru_maxrss`` (from ``os.wait4``, so only that child and its own children count). The images are smooth
gradients plus low-amplitude noise, made in a temporary folder.

    mkdir /tmp/base && git archive BASE rs4m | tar -x -C /tmp/base   # the code to compare against
    python benchmarks/large_scene.py --baseline /tmp/base [--baseline-label "main (abc1234)"] [--write]

Both codes build the same two images in the same run, the baseline first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402


def synthetic(size: int, seed: int = 0) -> np.ndarray:
    """``[size, size, 3]`` uint8: per-channel gradients plus noise in 0..7 (compresses reasonably as PNG)."""
    rng = np.random.default_rng(seed)
    ramp = (np.arange(size, dtype=np.uint32) * 200 // size).astype(np.uint8)
    img = np.empty((size, size, 3), np.uint8)
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    img[..., 2] = 90
    for row in range(0, size, 2048):  # in strips, so making the image does not double its memory
        img[row:row + 2048] += rng.integers(0, 8, img[row:row + 2048].shape, dtype=np.uint8)
    return img


def make_scenes(folder: Path, size: int) -> dict[str, Path]:
    """One PNG and one JPEG of ``size``² pixels, each in its own source folder, written by a child process:
    Linux carries a process's peak RSS across fork and exec into the builds' ``ru_maxrss``, so the parent must
    never hold the image itself."""
    paths = {kind: folder / kind / f"scene.{'png' if kind == 'png' else 'jpg'}" for kind in ("png", "jpeg")}
    code = ("import sys; from pathlib import Path; from benchmarks.large_scene import write_scenes; "
            "write_scenes(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(size), str(paths["png"]), str(paths["jpeg"])], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return paths


def write_scenes(size: int, png: Path, jpeg: Path) -> None:
    """Write the synthetic scene of ``size``² pixels as ``png`` and ``jpeg`` (their folders made)."""
    img = synthetic(size)
    for path in (png, jpeg):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(png, compress_level=1)
    jpeg.write_bytes(simplejpeg.encode_jpeg(img, quality=90))


def build(src: Path, out: Path, code: Path) -> dict:
    """Build ``src`` into ``out`` in a child running the ``rs4m`` package under ``code``; its peak RSS (MiB),
    wall time (s) and manifest rows."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-c", "from rs4m.cli import main; main()", "build", str(out), "--source", f"folder={src}",
           "--workers", "1", "-q"]
    start = time.perf_counter()
    # cwd: ``python -c`` puts the current folder first on sys.path, before PYTHONPATH; run from the repository
    # root, the baseline would import this tree's rs4m
    proc = subprocess.Popen(cmd, env=env, cwd=out.parent)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    import hashlib

    import pyarrow.parquet as pq
    rows = sorted(pq.read_table(out / "manifest.parquet", columns=["tile_id", "sha256"]).to_pylist(),
                  key=lambda r: r["tile_id"]) if (out / "manifest.parquet").exists() else []
    digest = hashlib.sha256("".join(r["tile_id"] + r["sha256"] for r in rows).encode()).hexdigest()
    # ru_maxrss is at least this process's own peak (carried across fork and exec): kept small, see make_scenes
    return {"rc": os.waitstatus_to_exitcode(status), "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall,
            "tiles": len(rows), "tiles_sha256": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--baseline", type=Path, help="a folder holding the rs4m package to compare against")
    ap.add_argument("--baseline-label", default="the baseline", help="what the baseline is, for the report")
    ap.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_scenes(Path(tmp), args.size)
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        before, figures = {}, {}
        for k, p in paths.items():
            if args.baseline:
                before[k] = build(p.parent, Path(tmp) / f"base-{k}", args.baseline)
                print(k, "baseline", before[k], flush=True)
            figures[k] = {**build(p.parent, Path(tmp) / f"out-{k}", ROOT), "file_mib": sizes[k] / 2**20}
            print(k, "now", figures[k], flush=True)
    if args.write:
        label = f' --baseline-label "{args.baseline_label}"' if args.baseline else ""
        write_section("Large scene memory", f"python benchmarks/large_scene.py --size {args.size} "
                      f"--baseline /tmp/base{label} --write", report(args.size, figures, before, args.baseline_label))


def report(size: int, after: dict, before: dict, label: str) -> str:
    mp = size * size / 1e6
    lines = [f"One {size}×{size} RGB scene ({mp:.0f} MP, {3 * mp:.0f} MB as RGB), `rs4m build --workers 1`; "
             f"peak RSS of the build process (ru_maxrss). Before: {label}; now: this tree. Same tiles: the "
             "manifests' (tile_id, sha256) lists are equal.", "",
             "| format | file MiB | tiles | same tiles | peak RSS before, MiB | peak RSS now, MiB | wall before, s "
             "| wall now, s |", "|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for kind, now in after.items():
        old = before.get(kind, {})
        same = {True: "yes", False: "NO"}[old.get("tiles_sha256") == now["tiles_sha256"]] if old else "-"
        lines.append(f"| {kind} | {now['file_mib']:.0f} | {now['tiles']} | {same} "
                     f"| {old.get('peak_rss_mib', nan):.0f} | {now['peak_rss_mib']:.0f} | {old.get('wall_s', nan):.1f} "
                     f"| {now['wall_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
