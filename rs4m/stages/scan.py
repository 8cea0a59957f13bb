"""Scan stage: enumerate every source's scenes, probe each once, write ``scenes.parquet``.

Each scene row records the file's size and sha256, raster size, bands, dtype, CRS, transform, GSD and
footprint; scenes are sorted by (source, scene_path) and cut into work units (``unit``), never spanning two
sources, so each unit carries one source's tiling. A file that cannot be opened (for any reason, whatever the
exception) becomes an error row, and so does a FIFO, socket or device named like an image, checked before
anything opens it. A multi-page TIFF or animated GIF is scanned, with an error row saying only its first page
is used.

The scan's outputs are one commit: ``errors.parquet`` is written first and ``scenes.parquet``, whose presence
tells a rerun that the scan is done, last; a scan killed in between runs again.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import shapely

from rs4m import manifest as mf
from rs4m.config import DEFAULT_MAX_SCENE_PIXELS
from rs4m.engines import Engine, UnitFailure
from rs4m.errors import BadInput, OutputError
from rs4m.layout import OutputLayout
from rs4m.raster import gdal_path, open_scene
from rs4m.sources import ScanProblem, SceneRef
from rs4m.stages import scan_report
from rs4m.stages.errors_table import replace_stage_errors
from rs4m.stages.sources import SourceInput
from rs4m.units import assign_units as assign_scene_units
from rs4m.whole_decode import open_regular

PROBE_BATCH = 32
log = logging.getLogger("rs4m")


@dataclass(frozen=True)
class ProbeTask:
    """A batch of scenes of one source to probe (picklable; a pure function of its fields)."""

    source: str
    root: str
    licence: str
    max_pixels: int
    refs: tuple[SceneRef, ...]
    grey: str = "refuse"
    max_scene_pixels: int = DEFAULT_MAX_SCENE_PIXELS


def _file_facts(root: Path, ref: SceneRef) -> tuple[int | None, str | None]:
    """Size and sha256 of the scene's file(s); (None, None) for archive members (read in place only)."""
    rels = ref.band_paths or (ref.scene_path,)
    if any(gdal_path(root, r).startswith("/vsi") for r in rels):
        return None, None
    h, size = hashlib.sha256(), 0
    for rel in rels:
        with open_regular(root / rel) as fh:  # never blocks: a FIFO or device is refused before it is read
            try:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
                    size += len(block)
            except OSError as err:
                raise BadInput("the file cannot be read", str(err)) from None
    return size, h.hexdigest()


def probe_scene(task: ProbeTask, ref: SceneRef) -> tuple[dict, int]:
    """One scene row (without ``unit``) and the file's page count; raises :class:`BadInput` for an unusable
    scene."""
    root = Path(task.root)
    size, sha = _file_facts(root, ref)
    if size == 0:
        raise BadInput("empty file (0 bytes)")
    with open_scene(root, ref, max_pixels=task.max_pixels, grey=task.grey, max_scene_pixels=task.max_scene_pixels,
                    max_scene_bytes=None) as reader:  # no pixels are decoded: the tile stage checks the budget
        info, pages = reader.info, reader.page_count()
    if reader.grey_replicated:  # the tile stage reads band 1 as R, G and B; bands stays 1 in the manifest
        ref = replace(ref, rgb_bands=(1, 1, 1))
    return {
        "scene_id": mf.make_scene_id(task.source, ref.scene_path), "source": task.source,
        "source_root": task.root, "scene_path": ref.scene_path, "band_paths": list(ref.band_paths) or None,
        "rgb_bands": list(ref.rgb_bands) if ref.rgb_bands else None, "split": ref.split, "licence": task.licence,
        "bytes": size, "sha256": sha, "driver": info.driver, "width": info.width, "height": info.height,
        "bands": info.bands, "dtype": info.dtype, "crs": info.crs,
        "transform": list(info.transform) if info.transform else None, "gsd_m": info.gsd_m,
        "geometry": shapely.to_wkb(info.footprint) if info.footprint is not None else None,
    }, pages


def _problem(task: ProbeTask, ref: SceneRef, err: Exception) -> dict:
    """The error row of a scene whose probe raised ``err`` (any exception: one odd file never stops a batch)."""
    if isinstance(err, BadInput):
        reason, detail = err.reason, err.detail
    else:
        reason = f"the file could not be probed: unexpected {type(err).__name__}"
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
    return {"path": ref.scene_path, "source": task.source, "stage": "scan", "reason": reason, "detail": detail}


def probe_batch(task: ProbeTask) -> tuple[list[dict], list[dict]]:
    """Probe a batch: (scene rows, error rows)."""
    rows, errors = [], []
    for ref in task.refs:
        try:
            row, pages = probe_scene(task, ref)
        except Exception as err:  # noqa: BLE001 - any per-scene failure is that scene's error row
            errors.append(_problem(task, ref, err))
            continue
        rows.append(row)
        if pages > 1:
            kind = "an animated GIF" if row["driver"] == "GIF" else "a multi-page TIFF"
            errors.append({"path": ref.scene_path, "source": task.source, "stage": "scan",
                           "reason": f"{kind} of {pages} pages: only the first page is used",
                           "detail": f"driver {row['driver']}, {pages} pages"})
    return rows, errors


def _enumerate(inp: SourceInput) -> tuple[list[SceneRef], list[dict]]:
    refs, errors = [], []
    for item in inp.adapter().scenes(inp.root, inp.splits()):
        if isinstance(item, ScanProblem):
            errors.append({"path": item.path, "source": inp.source, "stage": "scan",
                           "reason": item.reason, "detail": item.detail})
        else:
            refs.append(item)
    if inp.spec.max_images:
        # a cap samples evenly across the dataset (first N by a hash of the path, not the first classes)
        refs.sort(key=lambda r: hashlib.blake2b(r.scene_path.encode(), digest_size=8).digest())
        refs = refs[: inp.spec.max_images]
    refs.sort(key=lambda r: r.scene_path)
    return refs, errors


def _tasks(inputs: list[SourceInput], refs_by_source: dict[str, list[SceneRef]]) -> Iterator[ProbeTask]:
    for inp in inputs:
        refs = refs_by_source[inp.source]
        for i in range(0, len(refs), PROBE_BATCH):
            yield ProbeTask(inp.source, str(inp.root), inp.licence, inp.spec.tile.max_pixels,
                            tuple(refs[i:i + PROBE_BATCH]), inp.spec.tile.grey or "refuse",
                            inp.spec.tile.max_scene_pixels)


def assign_units(rows: list[dict], inputs: list[SourceInput]) -> list[dict]:
    """Sort rows by (source, scene_path) and number work units per source in that order, by scene count
    or, with ``shard_bytes``, by estimated shard size (:mod:`rs4m.units`)."""
    return assign_scene_units(rows, {inp.source: inp.spec.tile for inp in inputs})


def probe_all(engine: Engine, tasks: list[ProbeTask], progress=None) -> tuple[list[dict], list[dict]]:
    """Probe every batch: (scene rows, error rows). A batch that fails as a whole (its worker died on a file)
    is probed again one scene at a time, so only the file that kills a worker becomes an error row."""
    rows: list[dict] = []
    errors: list[dict] = []
    again: list = []
    for task, result in engine.map_units(probe_batch, tasks):
        if isinstance(result, UnitFailure) and len(task.refs) > 1:
            again.extend(replace(task, refs=(ref,)) for ref in task.refs)
            continue
        if isinstance(result, UnitFailure):
            errors.append({"path": task.refs[0].scene_path, "source": task.source, "stage": "scan",
                           "reason": "probing the file failed unexpectedly (its reader crashed)",
                           "detail": result.error})
        else:
            rows.extend(result[0])
            errors.extend(result[1])
        if progress:
            progress(len(task.refs))
    if again:
        more_rows, more_errors = probe_all(engine, again, progress)
        rows, errors = rows + more_rows, errors + more_errors
    return rows, errors


def run_scan(out: Path, inputs: list[SourceInput], engine: Engine, progress=None) -> dict:
    """Scan every source into ``OUT/scenes.parquet``; scan errors go to ``errors.parquet``. Returns counts."""
    layout = OutputLayout(Path(out))
    refs_by_source, errors = {}, []
    for inp in inputs:
        refs_by_source[inp.source], problems = _enumerate(inp)
        errors.extend(problems)
        for line in scan_report.slow_archives(inp, refs_by_source[inp.source]):
            log.warning("rs4m: note: %s", line)
    rows, probe_errors = probe_all(engine, list(_tasks(inputs, refs_by_source)), progress)
    errors.extend(probe_errors)
    rows = assign_units(rows, inputs)
    empty = scan_report.empty_sources(inputs, {s: len(r) for s, r in refs_by_source.items()}, rows, errors)
    for source, why in empty.items() if rows else ():
        log.warning("rs4m: warning: source %s yielded nothing: %s", source, why)
    if not rows:  # no scenes.parquet: a rerun scans again and says the same
        replace_stage_errors(layout, "scan", errors)
        raise OutputError("nothing readable: " + " | ".join(f"source {s}: {why}" for s, why in empty.items())
                          + f" (every problem is a row of {layout.errors})")
    # errors first: scenes.parquet marks the scan as done, so a kill between the two writes rescans
    replace_stage_errors(layout, "scan", errors)
    mf.write_table(mf.table_from_rows(rows, mf.SCENES_SCHEMA), layout.scenes, mf.SCENES_SCHEMA)
    per_source = {inp.source: sum(1 for r in rows if r["source"] == inp.source) for inp in inputs}
    return {"scenes": len(rows), "errors": len(errors), "units": (rows[-1]["unit"] + 1) if rows else 0,
            "per_source": per_source}
