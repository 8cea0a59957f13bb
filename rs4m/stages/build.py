"""``rs4m build``: scan → tile → dedup → catalog, resumable at every stage, with ``build.json`` as its record.

``build.json`` holds the resolved plan (sources with their roots and tiling, filters, dedup settings), tool
versions, start and end times and the counts of each stage. The single stages (``rs4m tile OUT`` ...) read the
plan from it, so each can be re-run on its own.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rs4m import __version__
from rs4m import manifest as mf
from rs4m.config import FilterConfig, Recipe
from rs4m.errors import ConfigError, OutputError
from rs4m.layout import OutputLayout
from rs4m.stages.sources import SourceInput


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def tool_versions() -> dict[str, str]:
    """Versions of rs4m and the libraries whose behaviour shapes the output."""
    import numpy
    import PIL
    import pyarrow
    import rasterio
    import simplejpeg

    return {"rs4m": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
            "pillow": PIL.__version__, "simplejpeg": simplejpeg.__version__}


def plan_record(inputs: list[SourceInput], recipe: Recipe, recipe_path: Path | None) -> dict[str, Any]:
    """The resolved plan as stored in ``build.json``."""
    return {
        "recipe": str(recipe_path) if recipe_path else None,
        "sources": [{"adapter": i.spec.name, "source": i.source, "root": str(i.root), "licence": i.licence,
                     "splits": list(i.splits()) if i.splits() is not None else None,
                     "max_images": i.spec.max_images, "tile": dataclasses.asdict(i.spec.tile)} for i in inputs],
        "filters": dataclasses.asdict(recipe.filters),
        "dedup": dict(recipe.dedup),
    }


def read_record(out: Path) -> dict[str, Any]:
    """``OUT/build.json``; an :class:`OutputError` saying what to run when it is missing."""
    path = OutputLayout(Path(out)).build_json
    if not path.exists():
        raise OutputError(f"{out} has no build.json; start with `rs4m build {out} --source ...` or `rs4m scan`")
    return json.loads(path.read_text())


def update_record(out: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``build.json`` (``stages`` entries are merged one level deep)."""
    path = OutputLayout(Path(out)).build_json
    record = json.loads(path.read_text()) if path.exists() else {}
    for key, value in fields.items():
        if key == "stages":
            record.setdefault("stages", {}).update(value)
        else:
            record[key] = value
    mf.atomic_write_json(path, record)
    return record


def start_record(out: Path, plan: dict[str, Any], force: bool) -> None:
    """Begin (or resume) a build in ``OUT``: a different plan in an existing folder needs ``--force``."""
    layout = OutputLayout(Path(out))
    if layout.build_json.exists() and not force:
        old = read_record(out)
        old_plan = {k: old.get(k) for k in plan}
        if json.loads(json.dumps(old_plan)) != json.loads(json.dumps(plan)):
            raise ConfigError(f"{out} holds a build with different sources or settings; "
                              "use another OUT folder, or --force to rebuild it from scratch")
    if force and layout.root.exists():
        for name in ("scenes.parquet", "tiles", "shards", "shards.parquet", "dedup.parquet", "dedup.json",
                     "manifest.parquet", "errors.parquet", "build.json"):
            target = layout.root / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    layout.root.mkdir(parents=True, exist_ok=True)
    update_record(out, **plan, versions=tool_versions(), started=_now(), finished=None)


def tile_configs(record: dict[str, Any]) -> dict[str, dict]:
    """source → TileConfig fields, from ``build.json``."""
    return {s["source"]: s["tile"] for s in record["sources"]}


def filters_of(record: dict[str, Any]) -> FilterConfig:
    return FilterConfig(**record.get("filters", {}))


def finish_record(out: Path, started: float) -> dict[str, Any]:
    return update_record(out, finished=_now(), seconds=round(time.perf_counter() - started, 3))


def run_stages(out: Path, inputs: list[SourceInput], engine, force: bool = False, quiet: bool = False) -> dict:
    """Scan (unless ``scenes.parquet`` is already there) then tile the pending units; return stage counts.

    Later stages (dedup, catalog) run through :func:`run_post_tile`.
    """
    from tqdm import tqdm

    from rs4m.stages.scan import run_scan
    from rs4m.stages.tile import run_tile

    layout = OutputLayout(Path(out))
    counts: dict[str, Any] = {}
    if not layout.scenes.exists():
        with tqdm(desc="scan", unit="scene", disable=quiet, leave=False) as bar:
            counts["scan"] = run_scan(out, inputs, engine, progress=bar.update)
        update_record(out, stages={"scan": counts["scan"]})
    record = read_record(out)
    units = mf.read_table(layout.scenes, mf.SCENES_SCHEMA, columns=["unit"]).column("unit")
    with tqdm(desc="tile", unit="unit", total=len(set(units.to_pylist())), disable=quiet, leave=False) as bar:
        def tick(result: dict) -> None:
            bar.update(1)
            bar.set_postfix(tiles=result["kept"], refresh=False)

        done_before = len(list(layout.tile_parts()))
        bar.update(done_before)
        counts["tile"] = run_tile(out, tile_configs(record), filters_of(record), engine, force=False,
                                  progress=tick)
    update_record(out, stages={"tile": counts["tile"]})
    counts["errors"] = error_count(layout)
    return counts


def error_count(layout: OutputLayout) -> int:
    """Rows of ``errors.parquet`` (every stage), 0 when there is none."""
    return mf.read_table(layout.errors, mf.ERRORS_SCHEMA, columns=["stage"]).num_rows if layout.errors.exists() else 0


def run_post_stages(out: Path, quiet: bool = False) -> dict:
    """Dedup then catalog (each where its module exists), recording counts in ``build.json``."""
    import importlib.util

    counts: dict[str, Any] = {}
    record = read_record(out)
    if importlib.util.find_spec("rs4m.stages.dedup"):
        from rs4m.config import from_mapping
        from rs4m.stages.dedup import DedupConfig, run_dedup

        config = from_mapping(DedupConfig, record.get("dedup", {}), "recipe [dedup]")
        report = run_dedup(Path(out), config)
        counts["dedup"] = report if isinstance(report, dict) else dataclasses.asdict(report)
        update_record(out, stages={"dedup": counts["dedup"]})
    if importlib.util.find_spec("rs4m.stages.catalog"):
        from rs4m.stages.catalog import run_catalog

        counts["catalog"] = run_catalog(Path(out))
        update_record(out, stages={"catalog": counts["catalog"]})
    return counts
