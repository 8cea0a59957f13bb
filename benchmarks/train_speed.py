"""Training throughput: SelectiveMAE vs the MAE baseline, same model size, same run, same machine.

Each case runs ``python -m pretrain.bench`` in a fresh process (so peak memory is per method), alternating
the two methods ``--repeats`` times and keeping each method's best run (the machine may be shared). Full
training steps (forward, backward, AdamW), synthetic uint8 input, warm-up excluded, InfoBatch off for both.

- CPU (always): vit_test and vit_small in fp32, small batches, a few steps.
- CUDA (when available): vit_base and vit_large in bf16 autocast, batch 256.

    python benchmarks/train_speed.py [--repeats 2] [--threads 2] [--compile] [--no-write]

Prints a markdown table (speed-up = SelectiveMAE images/s ÷ MAE images/s; memory ratio = MAE peak ÷
SelectiveMAE peak) and writes it to the ``## train_speed`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    model: str
    device: str
    dtype: str
    batch_size: int
    steps: int
    warmup: int


CPU_CASES = [
    Case("vit_test", "cpu", "fp32", 16, 8, 2),  # the 4-block test size (192 wide)
    Case("vit_small", "cpu", "fp32", 16, 5, 1),
    Case("vit_small", "cpu", "fp32", 64, 3, 1),
]
GPU_CASES = [
    Case("vit_base", "cuda", "bf16", 256, 20, 5),
    Case("vit_large", "cuda", "bf16", 256, 20, 5),
]


def run_bench(method: str, case: Case, threads: int | None, compile_: bool) -> dict:
    """One ``pretrain.bench`` run in a fresh process → its JSON figures."""
    cmd = [sys.executable, "-m", "pretrain.bench", "--method", method, "--model", case.model,
           "--batch-size", str(case.batch_size), "--steps", str(case.steps), "--warmup", str(case.warmup),
           "--device", case.device, "--dtype", case.dtype, "--json"]
    if threads:
        cmd += ["--threads", str(threads)]
    if compile_:
        cmd.append("--compile")
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def best_of(case: Case, repeats: int, threads: int | None, compile_: bool) -> dict[str, dict]:
    """Alternate the methods ``repeats`` times; keep each one's fastest run."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for method in ("mae", "selectivemae"):
            r = run_bench(method, case, threads, compile_)
            print(f"  {method} {case.model} b{case.batch_size}: {r['images_per_s']:.2f} img/s", file=sys.stderr)
            if method not in best or r["images_per_s"] > best[method]["images_per_s"]:
                best[method] = r
    return best


def table_row(case: Case, res: dict[str, dict]) -> str:
    mae, sel = res["mae"], res["selectivemae"]
    mib = 2 ** 20
    mfu = ("" if mae["mfu"] is None else f" | {100 * mae['mfu']:.1f} % / {100 * sel['mfu']:.1f} %")
    return (f"| {case.model} | {mae['device_name']} | {case.dtype} | {case.batch_size} | "
            f"{mae['images_per_s']:.2f} | {sel['images_per_s']:.2f} | "
            f"**{sel['images_per_s'] / mae['images_per_s']:.2f}×** | "
            f"{mae['peak_mem_bytes'] / mib:.0f} | {sel['peak_mem_bytes'] / mib:.0f} | "
            f"{mae['peak_mem_bytes'] / max(sel['peak_mem_bytes'], 1):.2f}× | "
            f"{mae['flops_per_image'] / sel['flops_per_image']:.2f}×{mfu} |")


HEADER = ("| model | device | dtype | batch | MAE img/s | SelectiveMAE img/s | speed-up | MAE peak MiB | "
          "SelectiveMAE peak MiB | memory ratio | FLOP ratio |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for the CPU cases")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU cases)")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    a = p.parse_args(argv)
    import torch  # only to ask whether CUDA is there; the runs happen in subprocesses

    cases = CPU_CASES + (GPU_CASES if torch.cuda.is_available() else [])
    rows = []
    for case in cases:
        threads = a.threads if case.device == "cpu" else None
        res = best_of(case, a.repeats, threads, a.compile and case.device == "cuda")
        rows.append(table_row(case, res))
    cpu_rows = [r for r, c in zip(rows, cases) if c.device == "cpu"]
    gpu_rows = [r for r, c in zip(rows, cases) if c.device == "cuda"]
    lines = [HEADER, "|" + "---|" * HEADER.count(" |"), *cpu_rows]
    if gpu_rows:
        gpu_header = HEADER + " MFU MAE / SelectiveMAE |"
        lines += ["", gpu_header, "|" + "---|" * gpu_header.count(" |"), *gpu_rows]
    else:
        lines += ["", "GPU cases (vit_base, vit_large, bf16, batch 256) not run: no CUDA device."]
    notes = ("Peak memory: CUDA max allocated on GPU; on CPU the growth of peak RSS after model and optimiser "
             "are built. FLOP ratio: analytic training FLOPs per image, MAE ÷ SelectiveMAE (pretrain/flops.py). "
             "Best of the alternated runs per method.")
    body = "\n".join(lines) + "\n\n" + notes
    print(body)
    if not a.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("train_speed", "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
