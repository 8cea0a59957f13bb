"""Tiny self-made sources and builds for the guarantee tests (no shared data needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from rs4m.cli import get_cli

CLI = [sys.executable, "-c", "from rs4m.cli import main; main()"]


def make_images(folder: Path, n: int = 4, size: int = 96, seed: int = 0, copies: int = 1) -> list[Path]:
    """``n`` noise PNGs of ``size`` pixels (rich, never blank) and ``copies`` exact copies of the first one."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    for k in range(copies):
        path = folder / f"copy{k:02d}.png"
        path.write_bytes(paths[0].read_bytes())
        paths.append(path)
    return paths


def run(*args, **kw):
    """Invoke the CLI in-process; returns click's result."""
    return CliRunner().invoke(get_cli(), [str(a) for a in args], **kw)


def build(out: Path, src: Path, *flags) -> object:
    """``rs4m build OUT --source folder=SRC --tile-size 64 --workers 1 -q`` in-process."""
    return run("build", out, "--source", f"folder={src}", "--tile-size", 64, "--workers", 1, "-q", *flags)


def run_proc(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a child process (for kill tests and real exit codes)."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def stderr_lines(result) -> list[str]:
    """Non-empty lines the command printed on stderr (CliRunner result or CompletedProcess)."""
    text = result.stderr if hasattr(result, "stderr") else result.output
    return [line for line in text.splitlines() if line.strip()]
