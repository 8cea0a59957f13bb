"""A short real pretraining run on the demo corpus, its loss curve, and kNN of its encoder vs a random one.

1. ``rs4m demo OUT`` (skipped when OUT/manifest.parquet exists): real Landsat 8 / Sentinel-2 scenes plus
   synthetic DOTA / UC Merced layouts.
2. ``rs4m pretrain --manifest OUT/manifest.parquet --run RUN --model vit_tiny --steps N`` on the CPU.
3. The loss curve from RUN/metrics.jsonl → ``benchmarks/pretrain_demo_loss.png``.
4. kNN top-1 (``pretrain.eval``: k = 20, cosine, DINO weighting, mean-pooled patch tokens) on object chips
   cut from the labelled boxes of the two real DOTA images in ../shared/data/real/dota-devkit (square crops
   around each oriented box's bounding box, 1.2× context, at least 32 px; classes with fewer than
   ``--min-per-class`` boxes left out, at most ``--max-per-class`` per class, seeded). Stratified 50/50
   train/test splits over ``--splits`` seeds; the pretrained encoder against randomly initialised
   encoders of the same size (one per split seed).

    python benchmarks/pretrain_demo.py [--out /tmp/rs4m-demo/out] [--run /tmp/rs4m-demo/run] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402

DOTA = ROOT.parent / "shared" / "data" / "real" / "dota-devkit"
LOSS_PNG = ROOT / "benchmarks" / "pretrain_demo_loss.png"


# ----------------------------------------------------------------------------------------------- chips


def read_boxes(label_file: Path) -> list[tuple[str, tuple[float, float, float, float]]]:
    """DOTA labelTxt → [(class, (x0, y0, x1, y1) bounding box of the oriented polygon)]."""
    boxes = []
    for line in label_file.read_text().splitlines():
        parts = line.split()
        if len(parts) < 9:
            continue  # the 'imagesource:' and 'gsd:' header lines
        xs, ys = [float(v) for v in parts[0:8:2]], [float(v) for v in parts[1:8:2]]
        boxes.append((parts[8], (min(xs), min(ys), max(xs), max(ys))))
    return boxes


def chip_box(box: tuple[float, ...], width: int, height: int, context: float = 1.2,
             min_side: int = 32) -> tuple[int, int, int, int]:
    """A square crop (left, top, right, bottom) around ``box`` with ``context``, kept inside the image."""
    x0, y0, x1, y1 = box
    side = int(min(max(min_side, context * max(x1 - x0, y1 - y0)), width, height))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(min(max(0, round(cx - side / 2)), width - side))
    top = int(min(max(0, round(cy - side / 2)), height - side))
    return left, top, left + side, top + side


def cut_chips(dota: Path, out: Path, min_per_class: int, max_per_class: int, seed: int = 0) -> dict[str, int]:
    """Write ``out/<class>/<image>_<n>.png`` chips; return chips per class."""
    by_class: dict[str, list[tuple[Path, tuple[float, ...]]]] = defaultdict(list)
    for label in sorted((dota / "labelTxt").glob("*.txt")):
        for cls, box in read_boxes(label):
            by_class[cls].append((dota / "images" / f"{label.stem}.png", box))
    rng = np.random.default_rng(seed)
    counts, opened = {}, {}
    for cls in sorted(by_class):
        items = by_class[cls]
        if len(items) < min_per_class:
            continue
        keep = sorted(rng.choice(len(items), size=min(max_per_class, len(items)), replace=False))
        (out / cls).mkdir(parents=True, exist_ok=True)
        for n in keep:
            path, box = items[n]
            img = opened.setdefault(path, Image.open(path).convert("RGB"))
            img.crop(chip_box(box, *img.size)).save(out / cls / f"{path.stem}_{n:04d}.png")
        counts[cls] = len(keep)
    return counts


# ----------------------------------------------------------------------------------------------- steps


def rs4m(*args: str) -> None:
    """Run an ``rs4m`` command of this checkout; stop if it fails."""
    cmd = [sys.executable, "-c", "from rs4m.cli import main; main()", *args]
    print("+ rs4m " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def plot_loss(metrics: list[dict], out: Path, title: str) -> None:
    """Loss per logged step → PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (norm-pix MSE)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def encoder_file(run: Path) -> Path:
    """The run's exported encoder, or its checkpoint."""
    for name in ("encoder.safetensors", "checkpoint.pt"):
        if (run / name).exists():
            return run / name
    found = sorted(run.rglob("*.pt"))
    if not found:
        raise SystemExit(f"no encoder or checkpoint in {run}")
    return found[-1]


def knn_scores(chips: Path, checkpoint: Path, splits: int) -> dict[str, list[float]]:
    """kNN top-1 per split seed for the pretrained encoder and for random-init encoders."""
    from pretrain import eval as ev

    trained, name = ev.load_encoder(checkpoint)
    scores: dict[str, list[float]] = {"pretrained": [], "random-init": [], "majority": []}
    for seed in range(splits):
        cfg = ev.EvalConfig(task="knn", data=chips, seed=seed, batch_size=64)
        scores["pretrained"].append(ev.run_eval(cfg, model=trained)["top1"])
        result = ev.run_eval(cfg, model=ev.random_encoder(name, seed))
        scores["random-init"].append(result["top1"])
        scores["majority"].append(result["majority_top1"])
    return scores


def report(args: argparse.Namespace, metrics: list[dict], counts: dict[str, int], scores: dict[str, list[float]],
           train_s: float | None) -> str:
    first, last = metrics[0], metrics[-1]
    tail = [m["loss"] for m in metrics[-5:]]
    ips = statistics.median(m["images_per_s"] for m in metrics if "images_per_s" in m)
    rows = [f"| {k} | {100 * statistics.mean(v):.1f} | {100 * statistics.pstdev(v):.1f} | "
            f"{' '.join(f'{100 * x:.1f}' for x in v)} |" for k, v in scores.items()]
    chips = ", ".join(f"{k} {v}" for k, v in counts.items())
    gain = statistics.mean(scores["pretrained"]) - statistics.mean(scores["random-init"])
    spread = max(statistics.pstdev(scores["pretrained"]), statistics.pstdev(scores["random-init"]))
    verdict = ("within the split-to-split spread: this probe shows no effect of the run" if abs(gain) <= spread
               else f"{'above' if gain > 0 else 'below'} the split-to-split spread")
    peak_lr = max(m["lr"] for m in metrics)
    return "\n".join([
        f"Run: `rs4m pretrain --model vit_tiny --method {args.method} --steps {args.steps} --batch-size "
        f"{args.batch_size}` on the `rs4m demo` corpus (CPU, fp32); "
        f"{f'{train_s:.0f} s wall, ' if train_s is not None else ''}median {ips:.1f} images/s.",
        "",
        f"Loss: {first['loss']:.3f} at step {first['step']} → {last['loss']:.3f} at step {last['step']} "
        f"(mean of the last 5 logged: {statistics.mean(tail):.3f}). Curve: `benchmarks/{LOSS_PNG.name}`. "
        f"Peak lr {peak_lr:.2e}: the authors' rule (r/m)·blr·batch/256 with blr 1.5e-4 at this small batch.",
        "",
        f"kNN top-1 (%) on DOTA object chips ({chips}; 50/50 stratified splits, seeds 0–{args.splits - 1}; "
        "k = 20, cosine, mean-pooled patch tokens):",
        "",
        "| encoder | mean | std | per split |", "|---|---|---|---|", *rows,
        "",
        "`majority` = always predicting the largest class of the test split. Pretrained − random-init: "
        f"{100 * gain:+.1f} points, {verdict}.",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rs4m-demo" / "out")
    p.add_argument("--run", type=Path, default=Path(tempfile.gettempdir()) / "rs4m-demo" / "run")
    p.add_argument("--method", default="selectivemae")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--min-per-class", type=int, default=10)
    p.add_argument("--max-per-class", type=int, default=60)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    if not (a.out / "manifest.parquet").exists():
        rs4m("demo", str(a.out), "-q")
    train_s = None
    if not (a.run / "metrics.jsonl").exists() or a.steps > json.loads(
            (a.run / "metrics.jsonl").read_text().splitlines()[-1])["step"]:
        t0 = time.perf_counter()
        rs4m("pretrain", "--manifest", str(a.out / "manifest.parquet"), "--run", str(a.run), "--method", a.method,
             "--model", "vit_tiny", "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--workers",
             str(a.workers), "--log-every", "10", "--ckpt-every", "100", "--device", "cpu",
             *(["--resume"] if (a.run / "checkpoint.pt").exists() else []))
        train_s = time.perf_counter() - t0
    metrics = [json.loads(line) for line in (a.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    plot_loss(metrics, LOSS_PNG, f"{a.method} vit_tiny on the rs4m demo corpus, batch {a.batch_size}, CPU")
    chips = Path(tempfile.mkdtemp(prefix="rs4m-chips-"))
    try:
        counts = cut_chips(DOTA, chips, a.min_per_class, a.max_per_class)
        scores = knn_scores(chips, encoder_file(a.run), a.splits)
    finally:
        shutil.rmtree(chips, ignore_errors=True)
    body = report(a, metrics, counts, scores, train_s)
    print(body)
    if not a.no_write:
        write_section("pretrain_demo", " ".join(["python benchmarks/pretrain_demo.py", *(sys.argv[1:] if argv is None
                                                                                        else argv)]), body)


if __name__ == "__main__":
    main()
