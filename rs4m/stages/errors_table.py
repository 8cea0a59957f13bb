"""``errors.parquet``: each stage replaces its own rows, keeping the other stages'."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from rs4m import manifest as mf
from rs4m.layout import OutputLayout


def replace_stage_errors(layout: OutputLayout, stage: str, rows: list[dict]) -> None:
    """Rewrite ``errors.parquet`` with ``rows`` as the errors of ``stage`` (sorted by path)."""
    replace_errors(layout, {stage: rows})


def replace_errors(layout: OutputLayout, by_stage: dict[str, list[dict]]) -> None:
    """Rewrite ``errors.parquet`` in one write: for each stage of ``by_stage``, its rows (sorted by path)
    replace that stage's old rows; the other stages' rows are kept."""
    tables = []
    if layout.errors.exists():
        old = mf.read_table(layout.errors, mf.ERRORS_SCHEMA)
        tables.append(old.filter(pc.invert(pc.is_in(old["stage"], pa.array(list(by_stage), pa.string())))))
    for rows in by_stage.values():
        rows = sorted(rows, key=lambda r: (r.get("source") or "", r.get("path") or "", r["reason"]))
        tables.append(mf.table_from_rows(rows, mf.ERRORS_SCHEMA))
    mf.write_table(pa.concat_tables(tables), layout.errors, mf.ERRORS_SCHEMA)
