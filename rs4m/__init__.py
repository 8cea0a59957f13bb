"""rs4m: build RS-4M style remote-sensing pretraining corpora.

``import rs4m`` is light: the Python API (:func:`rs4m.make_plan`, :func:`rs4m.build`, :func:`rs4m.open`,
:class:`rs4m.Build`) loads on first use.
"""

from __future__ import annotations

from typing import Any

from rs4m.version import __version__ as __version__

__all__ = ["Build", "Tile", "build", "make_plan", "open"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rs4m import api

        return getattr(api, name)
    raise AttributeError(f"module 'rs4m' has no attribute {name!r}")
