"""Engines: results for every unit, retries after a raise or a dead worker, identical outputs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from rs4m.engines import UnitFailure, get_engine
from rs4m.engines.base import InProcessEngine, LocalPoolEngine
from rs4m.errors import ConfigError


def square(x: int) -> int:
    return x * x


def fail_once(arg: tuple[int, str]) -> int:
    """Raises (or kills its own worker) the first time it sees a unit, succeeds after."""
    x, marker_dir = arg
    marker = Path(marker_dir) / f"seen-{x}"
    if not marker.exists():
        marker.write_text("1")
        if x % 2:
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"unit {x} fails once")
    return x


def always_fail(x: int) -> int:
    raise ValueError(f"bad unit {x}")


def test_inprocess_and_pool_give_all_results():
    for engine in (InProcessEngine(), LocalPoolEngine(2)):
        try:
            assert sorted(r for _, r in engine.map_units(square, range(7))) == [x * x for x in range(7)]
        finally:
            engine.close()


def test_pool_retries_raised_and_killed_units(tmp_path):
    engine = LocalPoolEngine(2)
    try:
        results = dict(engine.map_units(fail_once, [(x, str(tmp_path)) for x in range(4)], retries=2))
    finally:
        engine.close()
    assert {u[0]: r for u, r in results.items()} == {0: 0, 1: 1, 2: 2, 3: 3}


def test_failure_after_retries_is_reported_not_raised():
    results = list(InProcessEngine().map_units(always_fail, [1, 2], retries=1))
    assert [u for u, _ in results] == [1, 2]
    assert all(isinstance(r, UnitFailure) and "bad unit" in r.error for _, r in results)


def test_unknown_engine():
    with pytest.raises(ConfigError, match="valid: local, ray"):
        get_engine("spark")
