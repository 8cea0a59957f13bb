"""The tables of a build folder as pandas frames, with the counting rules of the catalog.

Every row of the tiles parts is one tile, with a status from the keep rule (:mod:`rs4m.keep`): filtered,
leaked, duplicate or kept; the kept tiles are the rows of ``manifest.parquet``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa

from rs4m import manifest as mf
from rs4m.dedup import LEAK
from rs4m.keep import statuses
from rs4m.layout import OutputLayout

#: ``--by`` value → name of the per-key object in the stats
BY_KEYS = {"source": "sources", "licence": "licences", "format": "formats"}
#: the value shown for a null key ("format" is null for filtered tiles, which have no stored bytes)
NULL_KEY = "(none)"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DISTRIBUTIONS = ("width", "height", "gsd_m", "richness")

TILE_COLUMNS = ["tile_id", "scene_id", "source", "licence", "format", "filter_reason", "length"]
DEDUP_COLUMNS = ["tile_id", "dup_of", "dup_reason"]
MANIFEST_COLUMNS = ["tile_id", "scene_id", "source", "licence", "format", "length", *DISTRIBUTIONS]
DETAIL_RE = re.compile(r"\s*\(.*\)\s*$")
#: integer columns stay exact integers with nulls (uint64 hashes and int64 group ids would lose bits as floats)
NULLABLE = {pa.int8(): pd.Int8Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
             pa.uint64(): pd.UInt64Dtype()}


# ---------------------------------------------------------------------------------------------- reading


def read_frame(path: Path, schema, columns: list[str] | None = None) -> pd.DataFrame:
    return mf.read_table(path, schema, columns).to_pandas(types_mapper=NULLABLE.get)


def read_optional(path: Path, schema, columns: list[str] | None = None) -> pd.DataFrame:
    if path.exists():
        return read_frame(path, schema, columns)
    names = columns or schema.names
    return mf.read_parts([], schema, names).to_pandas(types_mapper=NULLABLE.get)


def read_tiles_with_status(layout: OutputLayout) -> pd.DataFrame:
    """Every tiles-part row (``TILE_COLUMNS``) with its dedup columns and a ``status`` column (see module doc)."""
    tiles = mf.read_parts(layout.tile_parts(), mf.TILES_SCHEMA, TILE_COLUMNS).to_pandas(types_mapper=NULLABLE.get)
    dedup = read_optional(layout.dedup, mf.DEDUP_SCHEMA, DEDUP_COLUMNS)
    tiles = tiles.merge(dedup, on="tile_id", how="left")
    status = statuses(tiles["filter_reason"].notna().to_numpy(), (tiles["dup_reason"] == LEAK).fillna(False).to_numpy(),
                      tiles["dup_of"].notna().to_numpy())
    return tiles.assign(status=status)


def key_column(frame: pd.DataFrame, by: str) -> pd.Series:
    return frame[by].fillna(NULL_KEY).astype(str)

