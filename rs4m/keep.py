"""The keep rule, in one place: which tiles stay in the manifest, and the status of those that leave.

A tile with a ``filter_reason`` is *filtered*; else one whose ``dup_reason`` is ``leak`` is *leaked* (it copies
or overlaps a benchmark test image); else one with a ``dup_of`` is a *duplicate*; every other tile is *kept*
and is a row of ``manifest.parquet``. The catalog, the reports and ``rs4m verify`` all ask this module.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rs4m.dedup import LEAK


def left_by_dedup(table: pa.Table) -> pa.ChunkedArray:
    """True for rows that dedup removes (a duplicate of another tile, or leaked); ``table`` has ``dup_of`` and
    ``dup_reason`` (a tiles table joined with dedup, or ``dedup.parquet`` itself)."""
    leaked = pc.fill_null(pc.equal(table["dup_reason"], LEAK), False)
    return pc.or_(pc.is_valid(table["dup_of"]), leaked)


def kept_mask(table: pa.Table) -> pa.ChunkedArray:
    """True for rows that stay: not filtered, not a duplicate of another tile, not leaked."""
    return pc.and_(pc.is_null(table["filter_reason"]), pc.invert(left_by_dedup(table)))


def statuses(filtered: np.ndarray, leaked: np.ndarray, duplicate: np.ndarray) -> np.ndarray:
    """Each row's status (``filtered``, ``leaked``, ``duplicate`` or ``kept``) from three boolean arrays, in the
    rule's order."""
    return np.where(filtered, "filtered", np.where(leaked, "leaked", np.where(duplicate, "duplicate", "kept")))
