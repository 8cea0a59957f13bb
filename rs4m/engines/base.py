"""The engine interface and the local engines (in-process and process pool)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from rs4m.killpoints import kill_point

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class UnitFailure:
    """A unit that still failed after its retries: the error text is kept for the report."""

    error: str


class Engine(Protocol):
    """Map ``fn`` over ``units``; yield ``(unit, result)`` as units finish (any order).

    A unit whose call raises is retried up to ``retries`` times; after that its result is a
    :class:`UnitFailure`. ``fn`` and units must be picklable and ``fn`` a pure function of its unit.
    """

    name: str
    #: units run across machines (a cluster): then the driver's global searches are worth cutting into units
    #: too; on one machine the driver searches in its own memory, shipping nothing
    cluster: bool

    def map_units(self, fn: Callable[[Any], Any], units: Iterable[Any], retries: int = 2) -> Iterator[tuple[Any, Any]]:
        ...

    def close(self) -> None:
        ...


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker when the process that started it dies, however it dies (kill -9
    included), so no worker outlives its build. Linux: the kernel's parent-death signal; elsewhere, and as a
    backstop, a daemon thread that checks the parent every second."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="rs4m-parent-watch", daemon=True).start()


def _describe(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


class InProcessEngine:
    """Runs units one after another in this process (``--workers 1``; tests and debugging)."""

    name = "inprocess"
    cluster = False

    def map_units(self, fn, units, retries=2):
        for unit in units:
            for _attempt in range(retries + 1):
                try:
                    result = fn(unit)
                    break
                except Exception as err:  # noqa: BLE001 - a unit's failure is reported, not raised
                    result = UnitFailure(_describe(err))
            yield unit, result
            kill_point("engine:unit")

    def close(self) -> None:
        pass


class LocalPoolEngine:
    """A local process pool. A worker that dies (killed, out of memory) breaks the pool: the pool is rebuilt
    and the units that were in flight are retried."""

    name = "local"
    cluster = False

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ctx = multiprocessing.get_context("spawn")  # no GDAL state inherited through fork
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=die_with_parent,
                                             initargs=(os.getpid(),))
        return self._pool

    def map_units(self, fn, units, retries=2):
        pending = list(units)[::-1]
        raised: dict[int, int] = {}
        broken: dict[int, int] = {}
        running: dict[Future, Any] = {}
        while pending or running:
            while pending and len(running) < 2 * self.workers:
                unit = pending.pop()
                running[self._executor().submit(fn, unit)] = unit
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                unit = running.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool as err:
                    # Every unit in flight when a worker died is a suspect; bystanders get a larger budget
                    # since the culprit cannot be told apart.
                    self._reset()
                    count, limit, error = broken, retries + 2, f"worker process died: {err}"
                except Exception as err:  # noqa: BLE001
                    count, limit, error = raised, retries, _describe(err)
                else:
                    yield unit, result
                    kill_point("engine:unit")
                    continue
                count[id(unit)] = count.get(id(unit), 0) + 1
                if count[id(unit)] > limit:
                    yield unit, UnitFailure(error)
                else:
                    pending.append(unit)
            if self._pool is None:
                # the pool broke: units still marked running are lost with it and resubmitted
                pending.extend(running.values())
                running.clear()

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
