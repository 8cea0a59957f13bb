"""Named points where a test can kill the process (``RS4M_KILL_AT``), to prove that a build resumes.

``RS4M_KILL_AT=NAME`` kills the process with SIGKILL the first time it passes :func:`kill_point` ``NAME``;
``NAME#K`` the K-th time. Unset (always, outside tests) a kill point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process here if ``RS4M_KILL_AT`` names this point (and this pass)."""
    wanted = os.environ.get("RS4M_KILL_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
