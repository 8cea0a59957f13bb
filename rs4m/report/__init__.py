"""What a build holds, in numbers and pictures.

- :mod:`rs4m.report.tables`: the build's tables as frames, with the catalog's counting rules;
- :mod:`rs4m.report.stats`: ``rs4m stats`` (counts, distributions, the plot);
- :mod:`rs4m.report.inspect`: ``rs4m inspect`` (selecting tiles, their bytes, contact sheets).
"""

from rs4m.report.inspect import (
    PAD_PX,
    SHOW_COLUMNS,
    all_tiles,
    contact_sheet,
    duplicate_groups,
    load_manifest,
    records,
    select_tiles,
    tile_bytes,
)
from rs4m.report.stats import compute_stats, format_stats, per_key, plot_stats, quantiles, text_table
from rs4m.report.tables import read_tiles_with_status

__all__ = [
    "PAD_PX", "SHOW_COLUMNS", "all_tiles", "compute_stats", "contact_sheet", "duplicate_groups", "format_stats",
    "load_manifest", "per_key", "plot_stats", "quantiles", "read_tiles_with_status", "records", "select_tiles",
    "text_table", "tile_bytes",
]
