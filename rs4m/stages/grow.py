"""Growing a build: what changed since OUT was built, scanning only what is new, and re-filtering tiles.

A rerun of ``rs4m build`` on an existing build compares the plan with ``build.json`` and the sources with
what the scan saw (``scenes.parquet`` and the scan's error rows):

* a source that is new, and files added to a source, are scanned alone; their scenes become new work units
  numbered after the existing ones, so the existing units (shards and tiles parts) are kept byte for byte;
* a source removed from the plan, a source whose tiling, splits, glob, options or licence changed, and files
  of a source that are gone or changed (size or modification time, against the per-source fingerprint in
  ``build.json``) change what the build is: refused with one line that says so (``--force`` rebuilds);
* changed ``[filters]`` re-evaluate the facts each tiles part stores (``nodata_frac``, ``richness``, the
  reason a tile was dropped): a tile the new filters drop gets its reason (its shard is untouched), and a unit
  holding a tile the new filters would keep but whose pixels were never stored is tiled again;
* changed ``[dedup]`` settings need nothing here: dedup and catalog run again on every build; turning
  ``overlap`` on makes the tile stage redo the units that have no features part (:mod:`rs4m.stages.unitfiles`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rs4m import manifest as mf
from rs4m.config import FilterConfig
from rs4m.engines import Engine
from rs4m.errors import ConfigError
from rs4m.layout import OutputLayout
from rs4m.plan import BuildPlan, source_identity
from rs4m.record import BuildRecord
from rs4m.sources import SceneRef
from rs4m.stages.errors_table import replace_stage_errors


@dataclass
class Seen:
    """What the build's scan saw of one source: scene keys (scene paths and scan-error paths) and the files
    behind them (band files included)."""

    keys: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)


def seen_by_source(layout: OutputLayout) -> dict[str, Seen]:
    """source → what the scan saw, from ``scenes.parquet`` and the scan's rows of ``errors.parquet``."""
    seen: dict[str, Seen] = {}
    scenes = mf.read_table(layout.scenes, mf.SCENES_SCHEMA, columns=["source", "scene_path", "band_paths"])
    for row in scenes.to_pylist():
        s = seen.setdefault(row["source"], Seen())
        s.keys.add(row["scene_path"])
        s.files.update([row["scene_path"], *(row["band_paths"] or ())])
    if layout.errors.exists():
        errors = mf.read_table(layout.errors, mf.ERRORS_SCHEMA, columns=["source", "path", "stage"])
        for row in errors.filter(pc.equal(errors["stage"], "scan")).to_pylist():
            s = seen.setdefault(row["source"], Seen())
            s.keys.add(row["path"])
            s.files.add(row["path"])
    return seen


def _stat(root: Path, rel: str) -> tuple[int, int]:
    """(size, mtime_ns) of a source file; of the archive holding it for an archive member; (-1, -1) for a
    folder or a file that is gone."""
    path = root / rel
    while True:
        try:
            st = os.stat(path)
        except OSError:
            if path == root or path.parent == path:
                return -1, -1
            path = path.parent
            continue
        return (-1, -1) if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns)


def fingerprint(root: Path, files: set[str]) -> dict[str, Any]:
    """Count and sha256 of the sorted (path, size, mtime_ns) of a source's files."""
    h = hashlib.sha256()
    for rel in sorted(files):
        size, mtime = _stat(Path(root), rel)
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return {"files": len(files), "sha256": h.hexdigest()}


@dataclass
class Growth:
    """What a rerun adds: per source the scenes to probe and the enumeration problems not seen before."""

    refs: dict[str, list[SceneRef]] = field(default_factory=dict)
    problems: dict[str, list[dict]] = field(default_factory=dict)
    new_sources: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(self.refs.values()) and not any(self.problems.values())

    def line(self) -> str | None:
        """``2 sources unchanged, 1 new, 37 new files in dior``; None when nothing is new."""
        if self.empty:
            return None
        grown = {s: len(self.refs.get(s, [])) + len(self.problems.get(s, [])) for s in self.refs}
        parts = [f"{len(self.unchanged)} source{'s' if len(self.unchanged) != 1 else ''} unchanged"]
        if self.new_sources:
            parts.append(f"{len(self.new_sources)} new ({', '.join(self.new_sources)})")
        parts += [f"{n} new files in {s}" for s, n in grown.items() if n and s not in self.new_sources]
        return ", ".join(parts)


def _changed_key(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first identity key that differs, in words (``tile_size 64 → 32``)."""
    for key in old:
        if key == "tile":
            for k, v in old[key].items():
                if new[key].get(k) != v:
                    return f"{k} {v!r} → {new[key].get(k)!r}"
        elif mf_json(old[key]) != mf_json(new.get(key)):
            return f"{key} {old[key]!r} → {new.get(key)!r}"
    return None


def mf_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing with a record."""
    import json

    return json.loads(json.dumps(value))


def check_sources(out: Path, record: BuildRecord, plan: BuildPlan) -> None:
    """Refuse a plan that removes a source of the build or changes one's identity (tiling, splits, ...)."""
    layout = OutputLayout(Path(out))
    planned = {inp.source for inp in plan.sources}
    in_build = {e["source"] for e in record.data.get("sources", []) if "source" in e}
    if layout.scenes.exists():
        in_build |= set(pc.unique(mf.read_table(layout.scenes, mf.SCENES_SCHEMA, columns=["source"])["source"])
                        .to_pylist())
    for source in sorted(in_build - planned):
        raise ConfigError(f"{out}: source {source} is in this build but not in the plan; removing a source changes "
                          "the build: --force rebuilds it (or build into a new OUT folder)")
    old = {e["source"]: source_identity(e) for e in record.data.get("sources", []) if "source" in e}
    for entry in plan.source_entries():
        if entry["source"] in old:
            new = {k: v for k, v in source_identity(entry).items() if k in old[entry["source"]]}
            changed = _changed_key(old[entry["source"]], new)
            if changed:
                raise ConfigError(f"{out}: source {entry['source']} changed ({changed}); that changes the build: "
                                  "--force rebuilds it (or build into a new OUT folder)")


def find_growth(out: Path, record: BuildRecord, plan: BuildPlan) -> Growth:
    """The scenes to add to the build in ``out``; refuses files that are gone or changed (see the module doc)."""
    from rs4m.stages.scan import _enumerate

    layout = OutputLayout(Path(out))
    seen = seen_by_source(layout)
    prints = {e["source"]: e.get("fingerprint") for e in record.data.get("sources", []) if "source" in e}
    growth = Growth()
    for inp in plan.sources:
        old = seen.get(inp.source, Seen())
        refs, problems = _enumerate(inp)
        now = {r.scene_path for r in refs} | {p["path"] for p in problems}
        gone = sorted(old.keys - now)
        if gone:
            raise ConfigError(f"{out}: {len(gone)} files of source {inp.source} are gone since the build (e.g. "
                              f"{gone[0]}); that changes the build: --force rebuilds it")
        if prints.get(inp.source) and fingerprint(inp.root, old.files) != prints[inp.source]:
            raise ConfigError(f"{out}: files of source {inp.source} changed since the build (size or time); that "
                              "changes the build: --force rebuilds it")
        growth.refs[inp.source] = [r for r in refs if r.scene_path not in old.keys]
        growth.problems[inp.source] = [p for p in problems if p["path"] not in old.keys]
        if not old.keys:
            growth.new_sources.append(inp.source)
        elif not growth.refs[inp.source] and not growth.problems[inp.source]:
            growth.unchanged.append(inp.source)
    return growth


def scan_growth(out: Path, plan: BuildPlan, growth: Growth, engine: Engine, progress=None) -> dict:
    """Probe the new scenes and append them to ``scenes.parquet`` as new units after the existing ones;
    their scan errors join ``errors.parquet``. Returns the scan counts of the whole build."""
    from rs4m.stages.scan import _tasks, assign_units, probe_all

    layout = OutputLayout(Path(out))
    old = mf.read_table(layout.scenes, mf.SCENES_SCHEMA)
    errors = [p for problems in growth.problems.values() for p in problems]
    inputs = [inp for inp in plan.sources if growth.refs.get(inp.source)]
    rows, probe_errors = probe_all(engine, list(_tasks(inputs, growth.refs)), progress)
    errors += probe_errors
    rows = assign_units(rows, inputs)
    first = (pc.max(old["unit"]).as_py() + 1) if old.num_rows else 0
    for row in rows:
        row["unit"] += first
    if rows:
        mf.write_table(pa.concat_tables([old, mf.table_from_rows(rows, mf.SCENES_SCHEMA)]), layout.scenes,
                       mf.SCENES_SCHEMA)
    if errors:
        replace_stage_errors(layout, "scan", old_scan_errors(layout) + errors)
    return scan_counts(layout, len(rows))


def old_scan_errors(layout: OutputLayout) -> list[dict]:
    if not layout.errors.exists():
        return []
    table = mf.read_table(layout.errors, mf.ERRORS_SCHEMA)
    return table.filter(pc.equal(table["stage"], "scan")).to_pylist()


def scan_counts(layout: OutputLayout, added: int) -> dict:
    """The counts of the build's scan (``build.json`` stages.scan), with the scenes this run added."""
    scenes = mf.read_table(layout.scenes, mf.SCENES_SCHEMA, columns=["source", "unit"])
    per_source: dict[str, int] = {}
    for source in scenes["source"].to_pylist():
        per_source[source] = per_source.get(source, 0) + 1
    return {"scenes": scenes.num_rows, "errors": len(old_scan_errors(layout)),
            "units": (pc.max(scenes["unit"]).as_py() + 1) if scenes.num_rows else 0,
            "per_source": per_source, "added": added}


def record_fingerprints(record: BuildRecord, layout: OutputLayout) -> None:
    """Store each source's fingerprint (of the files its scan saw) in the record's source entries."""
    seen = seen_by_source(layout)
    for entry in record.data.get("sources", []):
        if "root" in entry:
            entry["fingerprint"] = fingerprint(Path(entry["root"]), seen.get(entry["source"], Seen()).files)


# --- filters: re-evaluate the stored facts ------------------------------------------------------------------------

RETILE = object()  # the new filters need the tile's pixels, which were never stored


def refiltered_reason(row: dict, old: FilterConfig, new: FilterConfig) -> Any:
    """The ``filter_reason`` of a stored tile row under ``new`` filters (the tile stage's wording and order:
    nodata, blank, richness), or :data:`RETILE` when the stored facts cannot tell."""
    nodata, reason = row["nodata_frac"], row["filter_reason"]
    if nodata is not None and nodata > new.max_nodata_frac:
        return f"mostly nodata ({nodata:.0%} of the tile)"
    if nodata is None or (reason and reason.startswith("mostly nodata")):
        return RETILE  # blankness and richness of this tile were never measured
    if reason and reason.startswith("blank"):
        return reason if new.drop_blank else RETILE
    if new.drop_blank and not old.drop_blank:
        return RETILE  # kept tiles were never tested for blankness
    richness = row["richness"]
    if richness is not None and richness < new.min_richness:
        return f"low richness ({richness:.3g} < {new.min_richness:g})"
    return RETILE if reason else None  # dropped for low richness before, kept now: its pixels are not stored


def refilter(layout: OutputLayout, old: FilterConfig, new: FilterConfig) -> dict[str, int]:
    """Apply ``new`` filters to every tiles part made with ``old``: rewrite the parts whose reasons change
    (shards untouched) and remove the files of the units that must be tiled again. Returns counts."""
    counts = {"parts_rewritten": 0, "units_retiled": 0}
    for part in layout.tile_parts():
        table = pq.read_table(part)
        rows = table.select(["nodata_frac", "richness", "filter_reason"]).to_pylist()
        reasons = [refiltered_reason(r, old, new) for r in rows]
        if any(r is RETILE for r in reasons):
            unit = int(part.stem.split("-")[1])
            for path in layout.unit_files(unit):  # the part first: the unit is undone
                path.unlink(missing_ok=True)
            counts["units_retiled"] += 1
        elif reasons != [r["filter_reason"] for r in rows]:
            i = table.schema.get_field_index("filter_reason")
            table = table.set_column(i, table.schema.field(i), pa.array(reasons, pa.string()))
            mf.write_table(table, part, metadata={"shard": mf.read_metadata(part, "shard")})
            counts["parts_rewritten"] += 1
    return counts


def units_missing_bytes(layout: OutputLayout) -> list[int]:
    """Units with a tile that was stored once (it has a ``sha256``), lost its bytes to a compaction (no
    ``shard``) and is kept now (not filtered, and by ``dedup.parquet`` neither a duplicate nor leaked)."""
    if not layout.dedup.exists():
        return []
    dedup = mf.read_table(layout.dedup, mf.DEDUP_SCHEMA, columns=["tile_id", "dup_of", "dup_reason"])
    dropped = dedup.filter(pc.or_(pc.is_valid(dedup["dup_of"]),
                                  pc.fill_null(pc.equal(dedup["dup_reason"], "leak"), False)))
    dropped_ids = set(dropped["tile_id"].to_pylist())
    units = []
    for part in layout.tile_parts():
        table = mf.read_table(part, mf.TILES_SCHEMA, columns=["tile_id", "sha256", "shard", "filter_reason"])
        lost = pc.and_(pc.and_(pc.is_valid(table["sha256"]), pc.is_null(table["shard"])),
                       pc.is_null(table["filter_reason"]))
        if any(t not in dropped_ids for t in table.filter(lost)["tile_id"].to_pylist()):
            units.append(int(part.stem.split("-")[1]))
    return units
