"""Exports of a build for other training stacks: Hugging Face Parquet with a dataset card, LitData, MDS, and a
random-access index (``wids``) over the build's own WebDataset shards.

Every export reads ``manifest.parquet`` in record batches and each tile with one ranged read from its shard
(peak memory is set by the batch and row-group sizes, not by the corpus), copies the stored bytes unchanged,
writes each output file under a temporary name and renames it when whole (a rerun skips finished files and
writes the rest; the contents are a function of the build and the options only), and re-reads what it wrote
against the manifest (row counts, tile ids, sha256 of every tile) before it reports success.

:data:`FORMATS` maps a format name to the module that implements it; a module provides ``make_format()``.
"""

from __future__ import annotations

#: export format name → module with ``make_format(**options)``
FORMATS: dict[str, str] = {
    "hf": "rs4m.export.hf",
    "litdata": "rs4m.export.litdata",
    "mds": "rs4m.export.mds",
}
