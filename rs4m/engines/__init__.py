"""Execution engines: map a pure function over work units, yield results as they finish.

Engines know nothing of remote sensing. ``get_engine("local", workers=N)`` is the default (a process pool;
in-process when N == 1); ``get_engine("ray", address=...)`` runs units as Ray tasks.
"""

from __future__ import annotations

from rs4m.engines.base import Engine, UnitFailure, get_engine  # noqa: F401
