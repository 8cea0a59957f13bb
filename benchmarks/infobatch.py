"""InfoBatch pruning, side by side with the same run unpruned: steps, wall time, held-out loss; and the host cost
of one epoch boundary (fold the losses in, draw the next epoch) at corpus scale.

1. ``rs4m demo OUT`` (skipped when OUT/manifest.parquet exists), split into training and held-out tiles as
   ``benchmarks/pretrain_learning.py`` does.
2. ``pretrain.train.train`` for ``--epochs`` epochs with ``--no-infobatch`` and with ``--infobatch`` (every other
   flag equal): optimiser steps, tiles trained on, wall time, seconds per step, and the masked loss of the final
   model on fixed held-out crops and masks.
3. ``InfoBatch.fold`` + ``InfoBatch.draw`` on N random scores (N = ``--sizes``), best of 3.

    python benchmarks/infobatch.py [--epochs 12] [--method mae] [--batch-size 16] [--img-size 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pretrain_learning import heldout_views, load_model, masked_loss, split_manifest
from benchmarks.results import write_section
from pretrain import checkpoint as ckpt
from pretrain.config import TrainConfig
from pretrain.infobatch import InfoBatch
from pretrain.train import train


def boundary_seconds(n: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one epoch boundary's host work for ``n`` samples."""
    rng = np.random.default_rng(0)
    pruner = InfoBatch(n, 100)
    best = float("inf")
    for epoch in range(repeats):
        losses = rng.random(n, dtype=np.float32)
        t0 = time.perf_counter()
        pruner.fold(losses)
        pruner.draw(epoch + 1)
        best = min(best, time.perf_counter() - t0)
    return best


def run_once(a: argparse.Namespace, manifest: Path, run: Path, infobatch: bool) -> dict:
    if run.exists():
        shutil.rmtree(run)
    cfg = TrainConfig(manifest=str(manifest), run=str(run), method=a.method, model="vit_test", epochs=a.epochs,
                      batch_size=a.batch_size, workers=a.workers, log_every=1, ckpt_every=10**6, seed=0,
                      device="cpu", lr=a.lr, img_size=a.img_size, infobatch=infobatch)
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    settings = json.loads((run / "config.json").read_text())
    return {"steps": len(rows), "total_steps": settings["total_steps"], "wall_s": wall,
            "step_s": sum(a.batch_size / r["images_per_s"] for r in rows) / len(rows), "last_lr": rows[-1]["lr"],
            "tiles": len(rows) * a.batch_size, "num_samples": settings["num_samples"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rs4m-learning" / "out")
    p.add_argument("--work", type=Path, default=None, help="runs and split manifests [default: beside --out]")
    p.add_argument("--method", default="mae", choices=("mae", "selectivemae"))
    p.add_argument("--epochs", type=float, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    if not (a.out / "manifest.parquet").exists():
        subprocess.run([sys.executable, "-c", "from rs4m.cli import main; main()", "demo", str(a.out), "-q"],
                       check=True, cwd=ROOT)
    work = a.work or a.out.parent / "work-infobatch"
    train_manifest, held_manifest = split_manifest(a.out / "manifest.parquet", work, 4)
    held, _ = heldout_views(held_manifest, a.img_size, 2, (0.2, 1.0), seed=12345)
    rows = []
    for infobatch in (False, True):
        result = run_once(a, train_manifest, work / f"run-{'on' if infobatch else 'off'}", infobatch)
        model, _ = load_model(ckpt.latest_checkpoint(work / f"run-{'on' if infobatch else 'off'}"))
        model.eval()
        result["heldout"] = masked_loss(model, held, 1.0)[0]
        rows.append((infobatch, result))
        print(infobatch, result, file=sys.stderr, flush=True)
    costs = [(n, boundary_seconds(n)) for n in a.sizes]
    body = report(a, rows, costs)
    print(body)
    if not a.no_write:
        command = "python benchmarks/infobatch.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section("infobatch", command.strip(), body)


def report(a, rows, costs) -> str:
    off, on = rows[0][1], rows[1][1]
    table = ["| InfoBatch | optimiser steps | of at most | tiles trained on | wall s | s / step | last lr | "
             "held-out loss |", "|---|---|---|---|---|---|---|---|"]
    for infobatch, r in rows:
        table.append(f"| {'on' if infobatch else 'off'} | {r['steps']} | {r['total_steps']} | {r['tiles']} | "
                     f"{r['wall_s']:.1f} | {r['step_s']:.3f} | {r['last_lr']:.2e} | {r['heldout']:.4f} |")
    cost_rows = ["| tiles | fold + draw s | host memory MB (scores, weights) | device MB (loss buffer) |",
                 "|---|---|---|---|"]
    cost_rows += [f"| {n:,} | {s:.3f} | {8 * n / 1e6:.0f} | {4 * n / 1e6:.0f} |" for n, s in costs]
    return "\n".join([
        f"Settings: `rs4m demo` corpus, {off['num_samples']} training tiles (every 4th tile held out), "
        f"{a.method}, vit_test, {a.img_size} px, {a.epochs:g} epochs, batch {a.batch_size}, peak lr {a.lr:g}, "
        f"warm-up 5 %, cosine; CPU fp32, {torch.get_num_threads()} threads, {a.workers} loader worker(s). InfoBatch: "
        "ratio 0.5, delta 0.875 (the defaults). Held-out loss: the final model on 2 training-style crops per "
        "held-out tile, fixed masks.",
        "", *table, "",
        f"Pruning took {100 * (1 - on['steps'] / off['steps']):.0f} % fewer optimiser steps for the same "
        f"{a.epochs:g} epochs ({on['steps']} vs {off['steps']}); wall time {on['wall_s']:.1f} s vs "
        f"{off['wall_s']:.1f} s. Seconds per step include the loader's refill at each epoch start (InfoBatch does "
        "not prefetch across an epoch boundary). The step count is the exact saving; wall times on a shared "
        "machine are noisy (see `train_speed`), and one seed's held-out loss on a corpus this small says "
        "little about quality.",
        "",
        "Host work of one epoch boundary (fold the gathered losses in, draw the next epoch), best of 3:",
        "", *cost_rows,
    ])


if __name__ == "__main__":
    main()
