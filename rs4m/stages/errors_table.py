"""``errors.parquet``: each stage replaces its own rows, keeping the other stages'."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from rs4m import manifest as mf
from rs4m.layout import OutputLayout


def replace_stage_errors(layout: OutputLayout, stage: str, rows: list[dict]) -> None:
    """Rewrite ``errors.parquet`` with ``rows`` as the errors of ``stage`` (sorted by path)."""
    rows = sorted(rows, key=lambda r: (r.get("source") or "", r.get("path") or "", r["reason"]))
    new = mf.table_from_rows(rows, mf.ERRORS_SCHEMA)
    if layout.errors.exists():
        old = mf.read_table(layout.errors, mf.ERRORS_SCHEMA)
        old = old.filter(pc.not_equal(old["stage"], stage))
        new = pa.concat_tables([old, new])
    mf.write_table(new, layout.errors, mf.ERRORS_SCHEMA)
