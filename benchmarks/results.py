"""Write one benchmark's section of benchmarks/RESULTS.md (replacing that section only)."""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, command: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``## name`` section of ``path`` with the command, the machine, the date and
    ``body``."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = (f"## {name}\n\nCommand: `{command}`  \nMachine: {machine()}; measured {date.today()}\n\n"
               f"{body.strip()}\n")
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
