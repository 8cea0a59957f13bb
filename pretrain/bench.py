"""Training-step throughput of one method and model size on synthetic images.

    python -m pretrain.bench --method selectivemae --model vit_small --batch-size 16 --steps 10 --json

Each timed step is a full training step: forward, backward, AdamW update. Input: random uint8 images already
on the device (normalised inside the model, as in training). Warm-up steps are excluded. On CUDA the steps
are timed with CUDA events and the host synchronises only after the timed region; ``peak_mem_bytes`` is
``torch.cuda.max_memory_allocated`` over the timed region. On CPU steps are timed with ``perf_counter`` and
``peak_mem_bytes`` is the growth of the process's peak resident set (``ru_maxrss``) from just after the model
and optimiser are built to the end of the run: activations, gradients and optimiser state, not the weights.
``mfu`` = achieved model FLOP/s ÷ 989 TFLOP/s (H100/H200 dense bf16), GPU only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

from pretrain.flops import flops_per_image
from pretrain.model import METHODS, MODEL_CONFIGS, create_model

PEAK_FLOPS_BF16 = 989e12  # H100 / H200 SXM dense bf16


@dataclass(frozen=True)
class BenchConfig:
    method: str
    model: str
    batch_size: int = 16
    steps: int = 10
    warmup: int = 2
    device: str = "cpu"
    dtype: str = "fp32"
    compile: bool = False
    threads: int | None = None
    img_size: int = 224
    progress: float = 0.0


def _rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _train_step(model, opt, imgs, cfg: BenchConfig) -> None:
    dtype = torch.bfloat16 if cfg.dtype == "bf16" else None
    with torch.autocast(device_type=imgs.device.type, dtype=dtype, enabled=dtype is not None):
        loss, _, _ = model(imgs, progress=cfg.progress)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _time_steps(step, device: torch.device, steps: int) -> list[float]:
    """Milliseconds per call of ``step``; on CUDA events are read after one synchronisation at the end."""
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run_bench(cfg: BenchConfig) -> dict:
    """Run the benchmark described by ``cfg`` and return its figures as a JSON-ready dict."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    model = create_model(cfg.method, cfg.model, img_size=cfg.img_size).to(device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=fused)
    fwd = torch.compile(model) if cfg.compile else model
    imgs = torch.randint(0, 256, (cfg.batch_size, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8, device=device)
    rss0 = _rss_bytes()

    def step() -> None:
        _train_step(fwd, opt, imgs, cfg)

    for _ in range(cfg.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    times = _time_steps(step, device, cfg.steps)
    wall_s = time.perf_counter() - t0  # includes the final synchronisation on CUDA
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_bytes() - rss0
    return _summary(cfg, times, wall_s, peak)


def _summary(cfg: BenchConfig, times_ms: list[float], wall_s: float, peak: int) -> dict:
    images_per_s = cfg.batch_size * cfg.steps / wall_s
    flops = flops_per_image(cfg.method, cfg.model, img_size=cfg.img_size).train
    on_gpu = cfg.device.startswith("cuda")
    return {
        **asdict(cfg),
        "images_per_s": images_per_s,
        "step_ms_p50": statistics.median(times_ms),
        "step_ms_min": min(times_ms),
        "peak_mem_bytes": int(peak),
        "flops_per_image": flops,
        "mfu": flops * images_per_s / PEAK_FLOPS_BF16 if on_gpu else None,
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name() if on_gpu else "cpu",
        "num_threads": torch.get_num_threads(),
    }


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, bool]:
    """Command-line flags → (``BenchConfig``, whether to print JSON)."""
    p = argparse.ArgumentParser(prog="python -m pretrain.bench", description=__doc__.split("\n")[0])
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--model", required=True, choices=sorted(MODEL_CONFIGS))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--progress", type=float, default=0.0, help="fraction of the run (sets the PSTS stage)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    a = p.parse_args(argv)
    if a.steps < 1 or a.batch_size < 1 or a.warmup < 0:
        p.error("--steps and --batch-size must be at least 1, --warmup at least 0")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch sees no CUDA device")
    fields = dict(vars(a))
    as_json = fields.pop("json")
    return BenchConfig(**fields), as_json


def main(argv: list[str] | None = None) -> None:
    cfg, as_json = parse_args(argv)
    result = run_bench(cfg)
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{cfg.method} {cfg.model} b{cfg.batch_size} {cfg.device} {cfg.dtype}: "
              f"{result['images_per_s']:.1f} img/s, p50 {result['step_ms_p50']:.1f} ms, "
              f"peak {result['peak_mem_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
