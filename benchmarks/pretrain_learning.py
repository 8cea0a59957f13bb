"""Does pretraining learn? SelectiveMAE and MAE on the demo corpus, each against random init and the zero predictor
on held-out tiles, plus an augmented-view retrieval probe that random init does not saturate.

1. ``rs4m demo OUT`` (skipped when OUT/manifest.parquet exists). Every ``--heldout-every``-th tile (by tile id)
   is held out; the rest is the training set (a manifest of each, beside OUT's shards). Held-out tiles are never
   trained on, but tiles of the same scenes may be.
2. ``pretrain.train.train`` for each method with the same flags, in chunks of ``--eval-every`` steps
   (``--stop-at`` then ``--resume``: bit-exact, so the curve is that of one uninterrupted run).
3. At step 0 (= random init, the run's own seed) and after each chunk, on fixed held-out batches (2 training
   crops per held-out tile, fixed masks):
   - masked-reconstruction loss (norm-pix MSE on the method's own targets) of the model;
   - the zero predictor on exactly those targets (mean of target²; ≈ 1 with norm_pix_loss);
   - augmented-view retrieval top-1 on ``--views`` crops of area 0.1–0.5 per held-out tile: features = mean of all patch tokens of the frozen encoder; each view's
     nearest other view (cosine) must be a view of the same tile. Chance = (views − 1) / (all views − 1).
   Random-init encoders of ``--random-seeds`` other seeds and raw pixels (8×8 average-pooled, standardised)
   give the baselines.
4. A two-panel plot (loss; retrieval) → benchmarks/pretrain_learning.png, and the tables → RESULTS.md.

    python benchmarks/pretrain_learning.py [--steps 300] [--batch-size 32] [--lr 1e-3] [--img-size 128]

Losses are not comparable between the methods (SelectiveMAE reconstructs the highest-scoring patches, MAE
random ones): compare each with its own random init and zero predictor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section
from pretrain import checkpoint as ckpt
from pretrain.config import TrainConfig
from pretrain.data import TileDataset
from pretrain.eval import encode
from pretrain.model import create_model, normalize
from pretrain.train import train

PLOT = ROOT / "benchmarks" / "pretrain_learning.png"
PROBE_SCALE = (0.1, 0.5)  # probe crops: small and often disjoint, so matching two views takes more than colour
METHODS = ("selectivemae", "mae")


# ----------------------------------------------------------------------------------------------- data


def split_manifest(manifest: Path, folder: Path, every: int) -> tuple[Path, Path]:
    """Write ``folder/{train,heldout}/manifest.parquet`` (every ``every``-th tile by id held out), each with a
    ``shards`` link to the build's shards; return the two manifests."""
    table = pq.read_table(manifest)
    order = np.argsort(np.asarray(table.column("tile_id").to_pylist()))
    held = np.zeros(len(order), dtype=bool)
    held[order[::every]] = True
    paths = []
    for name, mask in (("train", ~held), ("heldout", held)):
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(mask), sub / "manifest.parquet")
        if not (sub / "shards").exists():
            (sub / "shards").symlink_to(manifest.parent.resolve() / "shards", target_is_directory=True)
        paths.append(sub / "manifest.parquet")
    return paths[0], paths[1]


def heldout_views(manifest: Path, img_size: int, views: int, scale: tuple[float, float], seed: int,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` augmented crops of every held-out tile: uint8 [T·views, 3, S, S] and the tile of each [T·views]."""
    ds = TileDataset(manifest, seed=seed, size=img_size, scale=scale)
    imgs = [ds[(view, i)][0] for view in range(views) for i in range(len(ds))]
    tiles = torch.arange(len(ds)).repeat(views)
    return torch.stack(imgs), tiles


# ----------------------------------------------------------------------------------------------- measures


@torch.no_grad()
def masked_loss(model, imgs: torch.Tensor, progress: float, seed: int = 0) -> tuple[float, float]:
    """(loss, zero-predictor loss) on ``imgs`` with a fixed draw of masks, on the model's own targets."""
    torch.manual_seed(seed)
    loss, _, info = model(imgs, progress=progress)
    target = model.target_patches(normalize(imgs)[0], True)
    target = target.gather(1, info["ids_target"][..., None].expand(-1, -1, target.shape[-1]))
    return loss.item(), target.pow(2).mean().item()


def retrieval_top1(feats: torch.Tensor, tiles: torch.Tensor) -> float:
    """Fraction of views whose nearest other view (cosine) shows the same tile."""
    unit = F.normalize(feats.float(), dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(-2.0)
    return (tiles[sim.argmax(dim=1)] == tiles).float().mean().item()


def pixel_features(imgs: torch.Tensor) -> torch.Tensor:
    """The trivial baseline: 8×8 average-pooled pixels, standardised per image: [B, 192]."""
    x = F.adaptive_avg_pool2d(imgs.float(), 8).flatten(1)
    return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)


def measure(model, held: dict[str, torch.Tensor], progress: float) -> dict[str, float]:
    """Held-out loss and zero predictor on the loss views, retrieval top-1 on the probe views."""
    model.eval()
    loss, zero = masked_loss(model, held["loss_views"], progress)
    feats = torch.cat([encode(model, part) for part in held["probe_views"].split(64)])
    return {"loss": loss, "zero": zero, "retrieval": retrieval_top1(feats, held["probe_tiles"])}


def load_model(path: Path):
    state = ckpt.load_checkpoint(path)
    s = state["config"]
    model = create_model(s["method"], s["model"], **s["model_options"])
    model.load_state_dict(state["model"])
    return model, state["step"]


# ----------------------------------------------------------------------------------------------- runs


def run_method(method: str, a: argparse.Namespace, train_manifest: Path, run: Path, held) -> list[dict]:
    """Train ``method`` in chunks; the measures at step 0 and after each chunk, plus the wall time."""
    cfg = TrainConfig(manifest=str(train_manifest), run=str(run), method=method, model=a.model, steps=a.steps,
                      batch_size=a.batch_size, workers=a.workers, log_every=a.eval_every, ckpt_every=a.steps,
                      seed=0, device="cpu", lr=a.lr, warmup_steps=a.warmup, img_size=a.img_size)
    torch.manual_seed(0)  # the trainer's initial weights (build_model_and_optimizer seeds with --seed 0)
    init = create_model(method, a.model, **cfg.model_options())
    points = [{"step": 0, **measure(init, held, 0.0), "train_s": 0.0}]
    elapsed = 0.0
    for stop in range(a.eval_every, a.steps + 1, a.eval_every):
        t0 = time.perf_counter()
        train(TrainConfig(**{**cfg.__dict__, "stop_at": stop, "resume": stop > a.eval_every}))
        elapsed += time.perf_counter() - t0
        model, step = load_model(ckpt.latest_checkpoint(run))
        points.append({"step": step, **measure(model, held, step / a.steps), "train_s": elapsed})
        print(f"{method} step {step}: {points[-1]}", file=sys.stderr, flush=True)
    return points


def random_baselines(method: str, a: argparse.Namespace, held) -> list[dict]:
    """Random-init encoders of seeds 1..n (the runs start from seed 0), at the end-of-run progress."""
    cfg = TrainConfig(manifest="-", run="-", method=method, model=a.model, steps=1, img_size=a.img_size)
    out = []
    for seed in range(1, a.random_seeds + 1):
        torch.manual_seed(seed)
        out.append(measure(create_model(method, a.model, **cfg.model_options()), held, 1.0))
    return out


# ----------------------------------------------------------------------------------------------- report


def plot(curves: dict[str, list[dict]], randoms: dict[str, list[dict]], pixels: float, chance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for method, colour in zip(METHODS, ("tab:blue", "tab:orange")):
        pts = curves[method]
        steps = [p["step"] for p in pts]
        left.plot(steps, [p["loss"] for p in pts], color=colour, lw=1.8, label=f"{method} trained")
        left.plot(steps, [p["zero"] for p in pts], color=colour, ls=":", label=f"{method} zero predictor")
        left.axhline(statistics.mean(r["loss"] for r in randoms[method]), color=colour, ls="--", lw=1,
                     label=f"{method} random init")
        right.plot(steps, [100 * p["retrieval"] for p in pts], color=colour, lw=1.8, label=f"{method} trained")
        right.axhline(100 * statistics.mean(r["retrieval"] for r in randoms[method]), color=colour, ls="--", lw=1,
                      label=f"{method} random init")
    right.axhline(100 * pixels, color="grey", ls="-.", lw=1, label="8×8 pixels")
    right.axhline(100 * chance, color="black", ls=":", lw=1, label="chance")
    left.set(xlabel="step", ylabel="held-out masked loss (norm-pix MSE)", title="reconstruction, held-out tiles")
    right.set(xlabel="step", ylabel="top-1 (%)", title="augmented-view retrieval, held-out tiles")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(PLOT)
    plt.close(fig)


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * sd:.{digits}f}"


def report(a, curves, randoms, pixels: float, chance: float, n_train: int, n_held: int) -> str:
    loss_rows, probe_rows = [], []
    for method in METHODS:
        first, last = curves[method][0], curves[method][-1]
        loss_rows.append(f"| {method} | {first['loss']:.3f} | {spread([r['loss'] for r in randoms[method]])} | "
                         f"**{last['loss']:.3f}** | {last['zero']:.3f} | {last['train_s']:.0f} |")
        probe_rows.append(f"| {method} | {100 * first['retrieval']:.1f} | "
                          f"{spread([r['retrieval'] for r in randoms[method]], 100, 1)} | "
                          f"**{100 * last['retrieval']:.1f}** |")
    curve = ["| step | " + " | ".join(f"{m} loss | {m} zero | {m} retrieval %" for m in METHODS) + " |",
             "|---|" + "---|" * (3 * len(METHODS))]
    for i, pt in enumerate(curves[METHODS[0]]):
        cells = [f"{curves[m][i]['loss']:.3f} | {curves[m][i]['zero']:.3f} | {100 * curves[m][i]['retrieval']:.1f}"
                 for m in METHODS]
        curve.append(f"| {pt['step']} | " + " | ".join(cells) + " |")
    return "\n".join([
        f"Settings: `rs4m demo` corpus, {n_train} training tiles, {n_held} held-out tiles (every "
        f"{a.heldout_every}th by tile id; other tiles of their scenes may be in training); {a.model}, "
        f"{a.img_size} px, {a.steps} steps, batch {a.batch_size}, peak lr {a.lr:g} (`--lr`), warm-up {a.warmup}, "
        f"then cosine; CPU fp32, {torch.get_num_threads()} threads. Same flags for both methods. Held-out loss: 2 "
        "training-style crops per tile (area 0.2–1), fixed masks; probe: "
        f"{a.views} crops per tile of area {PROBE_SCALE[0]}–{PROBE_SCALE[1]}, flipped at random.",
        "",
        "Held-out masked-reconstruction loss (lower is better; the zero predictor is on the same targets):",
        "",
        "| method | step 0 (= init) | random init, other seeds | trained, last step | zero predictor | train s |",
        "|---|---|---|---|---|---|", *loss_rows,
        "",
        f"Augmented-view retrieval top-1 (%) on the held-out tiles ({a.views} views each; chance "
        f"{100 * chance:.1f} %, 8×8 pixels {100 * pixels:.1f} %):",
        "",
        "| method | step 0 (= init) | random init, other seeds | trained, last step |",
        "|---|---|---|---|", *probe_rows,
        "",
        "Over the run:", "", *curve,
        "",
        f"Plot: `benchmarks/{PLOT.name}`. " + verdict(curves, randoms),
    ])


def verdict(curves, randoms) -> str:
    """One sentence per method, from the numbers: below zero predictor / random init? retrieval above init?"""
    parts = []
    for method in METHODS:
        last = curves[method][-1]
        rand_loss = statistics.mean(r["loss"] for r in randoms[method])
        rand_ret = [r["retrieval"] for r in randoms[method]]
        sd = max(statistics.pstdev(rand_ret) if len(rand_ret) > 1 else 0.0, 0.01)
        gain = last["retrieval"] - statistics.mean(rand_ret)
        probe = ("above" if gain > 2 * sd else "below" if gain < -2 * sd else "within 2 sd of") + " random init"
        parts.append(f"{method}: held-out loss {last['loss']:.3f} vs zero predictor {last['zero']:.3f} and random "
                     f"init {rand_loss:.3f} ({'below both' if last['loss'] < min(last['zero'], rand_loss) else 'not below both'}); "
                     f"retrieval {100 * last['retrieval']:.1f} % is {probe} ({100 * gain:+.1f} points).")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rs4m-learning" / "out")
    p.add_argument("--work", type=Path, default=None, help="runs and split manifests [default: beside --out]")
    p.add_argument("--model", default="vit_test")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--heldout-every", type=int, default=4)
    p.add_argument("--random-seeds", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    if a.steps % a.eval_every:
        p.error("--steps must be a multiple of --eval-every")
    if not (a.out / "manifest.parquet").exists():
        subprocess.run([sys.executable, "-c", "from rs4m.cli import main; main()", "demo", str(a.out), "-q"],
                       check=True, cwd=ROOT)
    work = a.work or a.out.parent / "work"
    train_manifest, held_manifest = split_manifest(a.out / "manifest.parquet", work, a.heldout_every)
    loss_views, _ = heldout_views(held_manifest, a.img_size, 2, (0.2, 1.0), seed=12345)  # the training crops
    probe_views, probe_tiles = heldout_views(held_manifest, a.img_size, a.views, PROBE_SCALE, seed=54321)
    held = {"loss_views": loss_views, "probe_views": probe_views, "probe_tiles": probe_tiles}
    curves, randoms = {}, {}
    for method in METHODS:
        run = work / f"run-{method}"
        if run.exists():
            import shutil
            shutil.rmtree(run)
        curves[method] = run_method(method, a, train_manifest, run, held)
        randoms[method] = random_baselines(method, a, held)
    pixels = retrieval_top1(pixel_features(probe_views), probe_tiles)
    chance = (a.views - 1) / (len(probe_views) - 1)
    plot(curves, randoms, pixels, chance)
    n_train = pq.read_metadata(train_manifest).num_rows
    body = report(a, curves, randoms, pixels, chance, n_train, int(probe_tiles.max()) + 1)
    print(body)
    if not a.no_write:
        args = sys.argv[1:] if argv is None else argv
        write_section("pretrain_learning", " ".join(["python benchmarks/pretrain_learning.py", *args]), body)


if __name__ == "__main__":
    main()
