"""One exception family for rs4m.

Two channels, never mixed:

* :class:`Rs4mError` subclasses are user or programmer errors (a bad recipe, a missing folder, a wrong flag).
  They stop the command with one clear line that says which input is wrong and what to do.
* :class:`BadInput` is a per-item data problem (an unreadable file, a wrongly banded raster). Stages catch it
  and turn it into a row of ``errors.parquet``; the build goes on.
"""

from __future__ import annotations


class Rs4mError(Exception):
    """Base class of every error rs4m raises on purpose. ``str(err)`` is the one line shown to the user."""


class ConfigError(Rs4mError):
    """A recipe, flag or option is invalid."""


class SourceError(Rs4mError):
    """A source folder or adapter cannot be used (missing folder, unknown adapter name)."""


class OutputError(Rs4mError):
    """An output folder is missing, incomplete or inconsistent for the requested command."""


class DependencyError(Rs4mError):
    """An optional dependency is needed but not installed."""


class BadInput(Exception):
    """One input item is unusable. Becomes a row in ``errors.parquet``; never stops a build.

    Args:
        reason: a sentence a person understands ("truncated file", "6 bands, none marked red/green/blue").
        detail: technical detail for debugging (the underlying exception text), may be empty.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
