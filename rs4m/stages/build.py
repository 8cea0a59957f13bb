"""``rs4m build``: scan → tile → dedup → catalog, resumable at every stage, with ``build.json`` as its record.

``build.json`` holds the resolved plan (sources with their roots and tiling, filters, dedup settings), tool
versions, start and end times and the counts of each stage. The single stages (``rs4m tile OUT`` ...) read the
plan from it, so each can be re-run on its own.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow.compute as pc

from rs4m import __version__
from rs4m import manifest as mf
from rs4m.config import FilterConfig, Recipe
from rs4m.errors import ConfigError, OutputError
from rs4m.killpoints import kill_point
from rs4m.layout import LOCK_NAME, OutputLayout, is_leftover_name, leftover_files, owned_files
from rs4m.lock import BuildLock
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


def check_out_folder(out: Path, roots: list[Path]) -> None:
    """Refuse an OUT that overlaps a source root, or that is a non-empty folder holding no rs4m build.

    Both are checked before anything is written or deleted, so neither a build nor ``--force`` ever touches
    a source image or a folder of the user's that never was a build.
    """
    here = Path(out).resolve()
    for root in roots:
        root = Path(root).resolve()
        if here == root or root in here.parents:
            raise ConfigError(f"OUT {out} is inside the source folder {root}; give an OUT folder outside it")
        if here in root.parents:
            raise ConfigError(f"the source folder {root} is inside OUT {out}; give an OUT folder outside it")
    layout = OutputLayout(Path(out))
    if not layout.root.exists():
        return
    if not layout.root.is_dir():
        raise ConfigError(f"OUT {out} is a file, not a folder")
    if layout.build_json.exists():
        return
    foreign = [p.name for p in layout.root.iterdir()
               if p.name != LOCK_NAME and not is_leftover_name(".", p.name)]
    if foreign:
        raise ConfigError(f"OUT {out} is not empty and holds no rs4m build (no build.json; it has "
                          f"{sorted(foreign)[0]!r}); give a new or empty folder")


def remove_build(layout: OutputLayout) -> int:
    """Delete the files a build wrote in ``layout.root`` (:func:`rs4m.layout.owned_files`), then its folders
    where they are left empty; a file of any other name stays. Returns the number of files deleted.

    A build folder that is a symlink is refused: what it points at is outside OUT, so ``--force`` cannot
    tell the build's files there from anyone else's."""
    for folder in (layout.tiles_dir, layout.unit_errors_dir, layout.shards_dir):
        if folder.is_symlink():
            raise ConfigError(f"{folder} is a symlink; --force deletes only inside {layout.root}, so remove "
                              "the link (or rebuild into a new OUT folder)")
    files = owned_files(layout.root)
    for path in files:
        path.unlink(missing_ok=True)
    for folder in (layout.unit_errors_dir, layout.tiles_dir, layout.shards_dir):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    return len(files)


def start_record(out: Path, plan: dict[str, Any], force: bool) -> None:
    """Begin (or resume) a build in ``OUT``: a different plan in an existing folder needs ``--force``, which
    deletes only the files the build wrote (:func:`remove_build`). The caller holds ``OUT``'s lock."""
    layout = OutputLayout(Path(out))
    check_out_folder(out, [Path(s["root"]) for s in plan.get("sources", [])])
    if layout.build_json.exists() and not force:
        old = read_record(out)
        old_plan = {k: old.get(k) for k in plan}
        if json.loads(json.dumps(old_plan)) != json.loads(json.dumps(plan)):
            raise ConfigError(f"{out} holds a build with different sources or settings; "
                              "use another OUT folder, or --force to rebuild it from scratch")
    if force and layout.root.exists():
        remove_build(layout)
    layout.root.mkdir(parents=True, exist_ok=True)
    update_record(out, **plan, versions=tool_versions(), started=_now(), finished=None)


def remove_leftovers(layout: OutputLayout) -> int:
    """Delete temp files of killed writes and staged files of an uncommitted compaction; return their count."""
    leftovers = leftover_files(layout.root)
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def _may_hold_a_build(layout: OutputLayout) -> bool:
    """True for an empty folder (a build about to start) or one holding files a build writes."""
    if layout.build_json.exists() or owned_files(layout.root):
        return True
    return not any(p.name != LOCK_NAME for p in layout.root.iterdir())


@contextmanager
def writing(out: Path, command: str, settle: bool = True) -> Iterator[OutputLayout]:
    """Hold ``OUT``'s writer lock for ``command``; first (``settle``) finish the renames of an interrupted
    compaction and delete what killed writes left behind, so every writer starts from committed files."""
    from rs4m.compact import finish_swaps

    layout = OutputLayout(Path(out))
    if not layout.root.is_dir() or not _may_hold_a_build(layout):
        yield layout  # nothing a build wrote is here (and no lock file is left): the command says what it misses
        return
    with BuildLock(layout.root, command):
        if settle:
            finish_swaps(layout)
            remove_leftovers(layout)
        yield layout


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
        kill_point("build:scanned")
        update_record(out, stages={"scan": counts["scan"]})
    else:
        counts["unseen"] = unseen_files(layout, inputs)
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


def unseen_files(layout: OutputLayout, inputs: list[SourceInput]) -> dict[str, list[str]]:
    """source → files a scan would pick now that the build's scan did not see (neither a scene nor a scan
    error row): files added to a source after it was scanned. Lists the folders, opens no file."""
    from rs4m.stages.scan import _enumerate

    seen: dict[str, set[str]] = {}
    scenes = mf.read_table(layout.scenes, mf.SCENES_SCHEMA, columns=["source", "scene_path"])
    for source, path in zip(scenes["source"].to_pylist(), scenes["scene_path"].to_pylist()):
        seen.setdefault(source, set()).add(path)
    if layout.errors.exists():
        errors = mf.read_table(layout.errors, mf.ERRORS_SCHEMA, columns=["source", "path", "stage"])
        for row in errors.filter(pc.equal(errors["stage"], "scan")).to_pylist():
            seen.setdefault(row["source"], set()).add(row["path"])
    unseen = {}
    for inp in inputs:
        refs, problems = _enumerate(inp)
        paths = sorted({r.scene_path for r in refs} | {p["path"] for p in problems})
        new = [p for p in paths if p not in seen.get(inp.source, set())]
        if new:
            unseen[inp.source] = new
    return unseen


def unseen_lines(unseen: dict[str, list[str]], inputs: list[SourceInput], out: Path) -> list[str]:
    """One line per source with files the build has not seen, saying what to do."""
    roots = {inp.source: inp.root for inp in inputs}
    return [f"{len(paths)} new files in {roots[source]} since this build (e.g. {paths[0]}); they are not in it: "
            f"rebuild with `rs4m build {out} ... --force` or build into a new OUT folder to include them"
            for source, paths in unseen.items()]


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
        kill_point("build:catalogued")
        update_record(out, stages={"catalog": counts["catalog"]})
    return counts
