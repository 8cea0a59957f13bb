"""A training corpus for the pretrain tests, made by the test itself: ``rs4m build`` over aerial-like scenes that
``rs4m.demo.synthetic_scene`` draws (fields, roads, buildings, a river), so no shared imagery is needed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from rs4m.cli import get_cli
from rs4m.demo import synthetic_scene

#: (file name, width, height) of the generated scenes; 256 px tiles give 9 + 6 + 4 = 19 tiles
SCENES = (("scene0.png", 768, 768), ("scene1.png", 768, 512), ("scene2.png", 512, 512))


def write_scenes(folder: Path, seed: int = 0) -> Path:
    """Write ``SCENES`` under ``folder`` as PNG; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, width, height in SCENES:
        synthetic_scene(rng, width, height).save(folder / name)
    return folder


def build_corpus(out: Path, seed: int = 0) -> Path:
    """Build ``out`` (256 px jpg tiles) from freshly generated scenes; return its manifest.parquet."""
    images = write_scenes(out.parent / f"{out.name}-scenes", seed)
    args = ["build", str(out), "--source", f"folder={images}", "--tile-size", "256", "--workers", "1", "-q"]
    result = CliRunner().invoke(get_cli(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "manifest.parquet"


def run_pretrain(run: Path, args: list[str], ranks: int = 1, port: int = 29517, timeout: float = 600) -> None:
    """Run ``python -m pretrain`` in a child, on ``ranks`` gloo processes through torchrun when more than one, with
    one thread each; fail the test with the tail of its stderr when it does not exit 0."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    launch = [sys.executable, "-m", "pretrain", "--run", str(run)]
    if ranks > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
                  str(port), "-m", "pretrain", "--run-dir", str(run)]
    proc = subprocess.run([*launch, *args], cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def kill_at_first_checkpoint(run: Path, args: list[str], timeout: float = 120) -> int:
    """Start ``python -m pretrain --run RUN ARGS``, SIGKILL it as soon as its first checkpoint exists; return the
    step that checkpoint holds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "pretrain", "--run", str(run), *args], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])


@contextlib.contextmanager
def no_host_syncs() -> Iterator[None]:
    """CUDA work inside raises on any device-to-host synchronisation (after a ``torch.cuda.synchronize()``, so
    that earlier work does not count); the default mode is restored whatever happens."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
