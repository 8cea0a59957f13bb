"""The Ray engine: each work unit is a Ray task; a task whose worker dies or raises is retried by Ray.

Units are pure functions of their inputs and write their shard and tiles part straight into the output
folder, which must therefore be on a filesystem every node sees (NFS, Lustre, a mounted bucket). The driver
only submits, collects small count dicts and runs the global steps (dedup, catalog).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rs4m.engines.base import UnitFailure, _describe
from rs4m.errors import DependencyError


def _import_ray():
    try:
        import ray
    except ImportError:
        raise DependencyError("--engine ray needs Ray: pip install 'rs4m[ray]'") from None
    return ray


class RayEngine:
    """Map units over a Ray cluster (``address``) or, without one, a local Ray started for this run."""

    name = "ray"
    cluster = True

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self._ray = _import_ray()
        self._owns = not self._ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = workers
            # workers import rs4m from the driver's environment; the driver's path travels with them
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_python_path())}}
            self._ray.init(**kwargs)
        #: CPUs of the cluster: how many pieces a search cut into units should have to keep them all busy
        self.parallelism = max(2, int(self._ray.available_resources().get("CPU", 2)))
        self._in_flight = self.parallelism * 2

    def map_units(self, fn: Callable[[Any], Any], units: Iterable[Any], retries: int = 2) -> Iterator[tuple[Any, Any]]:
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(fn)
        pending = list(units)[::-1]
        running: dict[Any, Any] = {}
        while pending or running:
            while pending and len(running) < self._in_flight:
                unit = pending.pop()
                running[remote.remote(unit)] = unit
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                unit = running.pop(ref)
                try:
                    yield unit, ray.get(ref)
                except Exception as err:  # noqa: BLE001 - retries are exhausted: report, don't raise
                    yield unit, UnitFailure(_describe(err))

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def _python_path() -> list[str]:
    import sys

    return [p for p in sys.path if p and os.path.isdir(p)]
