"""Execution engines: map a pure function over work units, yield results as they finish.

Engines know nothing of remote sensing. ``get_engine("local", workers=N)`` is the default (a process pool;
in-process when N == 1); ``get_engine("ray", address=...)`` runs units as Ray tasks. An engine is a class
with ``map_units`` and ``close`` (:class:`~rs4m.engines.base.Engine`); adding one is its module plus one line
in :data:`ENGINES`.
"""

from __future__ import annotations

import importlib
import os

from rs4m.engines.base import Engine, InProcessEngine, LocalPoolEngine, UnitFailure
from rs4m.errors import ConfigError

#: engine name → "module:class", imported only when that engine is asked for
ENGINES: dict[str, str] = {
    "local": "rs4m.engines.base:LocalPoolEngine",
    "ray": "rs4m.engines.ray_engine:RayEngine",
}

__all__ = ["ENGINES", "Engine", "UnitFailure", "default_workers", "get_engine"]


def default_workers() -> int:
    """The CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def get_engine(name: str = "local", workers: int | None = None, address: str | None = None) -> Engine:
    """The engine called ``name`` (:data:`ENGINES`); ``local`` with one worker runs in-process."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    if name == "local":
        workers = workers or default_workers()
        return InProcessEngine() if workers == 1 else LocalPoolEngine(workers)
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(address=address, workers=workers)
