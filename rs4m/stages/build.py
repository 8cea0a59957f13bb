"""The build runner: :func:`run_build` runs the stages of a :class:`~rs4m.plan.BuildPlan` in order.

``rs4m build`` runs scan → tile → dedup → catalog → compact (final shards; not with ``keep_dropped``); the
single-stage commands (``rs4m scan``, ``rs4m tile OUT``, ``rs4m dedup``, ``rs4m catalog``, ``rs4m compact``)
run the same runner with one stage. Every stage resumes: scan probes only what is new since the build's scan
(:mod:`rs4m.stages.grow`), tile runs only the units without a tiles part (after re-filtering the existing
ones when the filters changed), dedup and catalog are cheap and deterministic and run again, compact rewrites
only the shards holding a dropped tile. The runner holds OUT's writer lock, checks the plan against the build
already in OUT (a removed or changed source needs ``--force``) and records each stage's counts in
``build.json`` (:mod:`rs4m.record`) when it ends. Progress goes to a callback; the library draws no bars.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from rs4m import manifest as mf
from rs4m.config import FilterConfig
from rs4m.engines import Engine, get_engine
from rs4m.errors import ConfigError, OutputError
from rs4m.killpoints import kill_point
from rs4m.layout import LOCK_NAME, OutputLayout, is_leftover_name, leftover_files, owned_files
from rs4m.lock import BuildLock
from rs4m.plan import BuildPlan
from rs4m.record import BuildRecord, now, tool_versions
from rs4m.stages.grow import Growth

#: the stages of ``rs4m build``, in order; ``compact`` may follow catalog
STAGES = ("scan", "tile", "dedup", "catalog")
ALL_STAGES = (*STAGES, "compact")


@dataclass(frozen=True)
class Tick:
    """A progress event: ``stage`` did ``advance`` more items; ``total`` (when known) is given once at its
    start together with the items already done before this run (``advance``)."""

    stage: str
    advance: int = 0
    total: int | None = None
    info: dict[str, Any] | None = None


Progress = Callable[[Tick], None]


@dataclass
class BuildReport:
    """What one :func:`run_build` did: per-stage counts (as ``build.json`` records them) and notes."""

    counts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def units_failed(self) -> list[dict]:
        return self.counts.get("tile", {}).get("units_failed", [])

    @property
    def ok(self) -> bool:
        """False if a unit failed after retries."""
        return not self.units_failed


def read_record(out: Path) -> dict[str, Any]:
    """``OUT/build.json`` as a dict (:meth:`rs4m.record.BuildRecord.load`, for readers of a finished build)."""
    return BuildRecord.load(Path(out)).data


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
    for folder in (layout.tiles_dir, layout.unit_errors_dir, layout.shards_dir, layout.features_dir):
        if folder.is_symlink():
            raise ConfigError(f"{folder} is a symlink; --force deletes only inside {layout.root}, so remove "
                              "the link (or rebuild into a new OUT folder)")
    files = owned_files(layout.root)
    for path in files:
        path.unlink(missing_ok=True)
    for folder in (layout.unit_errors_dir, layout.tiles_dir, layout.shards_dir, layout.features_dir):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    return len(files)


def start_record(out: Path, plan: BuildPlan, force: bool) -> tuple[BuildRecord, Growth | None]:
    """Begin (or resume, or grow) a build in ``OUT``; the caller holds ``OUT``'s lock.

    An existing build may gain sources and files and change its filters and dedup settings; a plan that
    removes or changes a source is refused (:mod:`rs4m.stages.grow`) unless ``force``, which deletes only the
    files the build wrote (:func:`remove_build`). Returns the record and what the rerun adds (None for a new
    build or one not scanned yet)."""
    from rs4m.stages.grow import check_sources, find_growth

    layout = OutputLayout(Path(out))
    check_out_folder(out, [inp.root for inp in plan.sources])
    record = BuildRecord.load(out, missing_ok=True)
    growth = None
    if force and layout.root.exists():
        remove_build(layout)
        record = BuildRecord(Path(out))
    elif record.exists:
        check_sources(out, record, plan)
        growth = find_growth(out, record, plan) if layout.scenes.exists() else None
    layout.root.mkdir(parents=True, exist_ok=True)
    # the filters the existing tiles parts were made with: the tile stage re-filters them when these differ
    record.data.setdefault("tiles_filters", record.data.get("filters") or asdict(plan.filters))
    record.data.update(plan.record_fields(), versions=tool_versions(), started=now(), finished=None)
    record.save()
    return record, growth


class _Run:
    """One run of the runner: the plan, the record and (made when a stage needs it) the engine."""

    def __init__(self, out: Path, plan: BuildPlan, record: BuildRecord, engine: Engine | None,
                 progress: Progress | None, retile: bool, growth: Growth | None = None) -> None:
        self.out, self.plan, self.record, self.retile, self.growth = Path(out), plan, record, retile, growth
        self.layout = OutputLayout(self.out)
        self.progress = progress or (lambda tick: None)
        self._engine, self._own_engine = engine, engine is None
        self.report = BuildReport()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            e = self.plan.engine
            self._engine = get_engine(e.name, workers=e.workers, address=e.address)
        return self._engine

    def close(self) -> None:
        if self._own_engine and self._engine is not None:
            self._engine.close()

    def record_stage(self, stage: str, counts: dict[str, Any]) -> None:
        self.report.counts[stage] = counts
        if self.record.exists or stage != "dedup":  # a bare `rs4m dedup` on tiles parts makes no build.json
            self.record.stage(stage, counts)

    def scan(self) -> bool:
        """Scan every source (a new build) or only what is new since the build's scan (a grown one)."""
        from rs4m.stages.grow import record_fingerprints, scan_growth
        from rs4m.stages.scan import run_scan

        tick = lambda n: self.progress(Tick("scan", n))  # noqa: E731
        if not self.layout.scenes.exists():
            counts = run_scan(self.out, list(self.plan.sources), self.engine, progress=tick)
        elif self.growth is not None and not self.growth.empty:
            counts = scan_growth(self.out, self.plan, self.growth, self.engine, progress=tick)
            self.report.notes.append(f"growing the build: {self.growth.line()}")
        else:
            return True
        kill_point("build:scanned")
        record_fingerprints(self.record, self.layout)
        self.record_stage("scan", counts)
        return True

    def refilter(self) -> None:
        """Bring the existing tiles parts to the plan's filters (:func:`rs4m.stages.grow.refilter`)."""
        from rs4m.config import from_mapping
        from rs4m.stages.grow import refilter

        made_with = self.record.data.get("tiles_filters")
        old = from_mapping(FilterConfig, made_with, "build.json tiles_filters") if made_with else self.plan.filters
        if old != self.plan.filters and not self.retile:
            counts = refilter(self.layout, old, self.plan.filters)
            self.report.counts["refilter"] = counts
            self.report.notes.append(f"filters changed: {counts['parts_rewritten']} tiles parts re-filtered from "
                                     f"their stored facts, {counts['units_retiled']} units tiled again")
        if self.record.exists and made_with != asdict(self.plan.filters):
            self.record.data["tiles_filters"] = asdict(self.plan.filters)
            self.record.save()

    def tile(self) -> bool:
        """Tile the pending units; False (stop) when every unit failed and there is nothing to dedup."""
        from rs4m.stages.tile import run_tile

        if not self.layout.scenes.exists():
            raise OutputError(f"{self.out} has no scenes.parquet; run `rs4m build {self.out} --source ...` "
                              f"(or `rs4m scan`) first")
        units = mf.read_table(self.layout.scenes, mf.SCENES_SCHEMA, columns=["unit"]).column("unit")
        self.refilter()
        done = 0 if self.retile else len(self.layout.tile_parts())
        self.progress(Tick("tile", done, total=len(pc.unique(units))))
        tiling = {source: asdict(tile) for source, tile in self.plan.tile_configs().items()}
        counts = run_tile(self.out, tiling, self.plan.filters, self.engine, force=self.retile,
                          progress=lambda r: self.progress(Tick("tile", 1, info={"tiles": r["kept"]})),
                          features=self.plan.dedup.overlap)
        self.record_stage("tile", counts)
        self.report.counts["errors"] = error_count(self.layout)
        return not counts["units_failed"] or bool(self.layout.tile_parts())

    def dedup(self) -> bool:
        from rs4m.stages.dedup import run_dedup

        # on a cluster the Hamming candidate search runs as its units (the same result, byte for byte)
        engine = self.engine if getattr(self.engine, "cluster", False) else None
        self.record_stage("dedup", run_dedup(self.out, self.plan.dedup, engine=engine).to_dict())
        return True

    def catalog(self) -> bool:
        from rs4m.stages.catalog import run_catalog

        self.restore_bytes()
        counts = run_catalog(self.out)
        kill_point("build:catalogued")
        self.record_stage("catalog", counts)
        return True

    def restore_bytes(self) -> None:
        """Tile again the units holding a tile that dedup keeps now but whose bytes a compaction dropped
        (a later dedup with other settings, or a grown build), so that no manifest row lacks its bytes."""
        from rs4m.stages.grow import units_missing_bytes
        from rs4m.stages.tile import run_tile

        units = units_missing_bytes(self.layout)
        if not units:
            return
        for unit in units:  # the part first: the unit is undone
            for path in self.layout.unit_files(unit):
                path.unlink(missing_ok=True)
        tiling = {source: asdict(tile) for source, tile in self.plan.tile_configs().items()}
        counts = run_tile(self.out, tiling, self.plan.filters, self.engine, features=self.plan.dedup.overlap)
        self.report.notes.append(f"{len(units)} units tiled again: dedup keeps tiles of theirs whose bytes "
                                 "a compaction had dropped")
        if counts["units_failed"]:
            raise OutputError(f"tiling units {units} again failed: {counts['units_failed'][0]['error']}")

    def compact(self) -> bool:
        from rs4m.compact import run_compact
        from rs4m.export.wids import write_wids_index

        report = run_compact(self.out)
        self.report.counts["compact"] = report.to_dict()
        # the shards' sizes and sha256 may have changed (in this run or in a killed one it finished): the index
        # the catalog wrote is rewritten from shards.parquet (cheap, no shard is read)
        write_wids_index(self.out)
        if report.shards_rewritten:
            self.record.stage("compact", report.to_dict())
        return True


def _check_stages(stages: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown or not stages:
        raise ConfigError(f"unknown stage {unknown[0] if unknown else '(none)'!r}; valid: {', '.join(ALL_STAGES)}")
    return tuple(sorted(set(stages), key=ALL_STAGES.index))


def run_build(out: Path, plan: BuildPlan, stages: tuple[str, ...] | list[str] | None = None, *, force: bool = False,
              retile: bool = False, engine: Engine | None = None, progress: Progress | None = None,
              record: BuildRecord | None = None, command: str = "build") -> BuildReport:
    """Run ``stages`` (in their order, :data:`ALL_STAGES`; default: :meth:`BuildPlan.stages`, the whole build
    ending with final shards) of ``plan`` on the build in ``out``.

    A run that includes ``scan`` begins or resumes the build (the plan must equal the one in OUT unless
    ``force``, which first deletes the files the build wrote); other stages run on the build already in OUT
    (``record``: its ``build.json``, if already read). ``retile`` redoes every unit of the tile stage.
    ``engine`` is used as given (else made from ``plan.engine`` and closed at the end); ``progress`` gets a
    :class:`Tick` per item done. Holds OUT's writer lock (named ``command``) throughout.
    """
    started = time.perf_counter()
    stages = _check_stages(plan.stages() if stages is None else stages)
    if "scan" in stages:  # before anything is written: never touch a folder that is not a build
        check_out_folder(out, [inp.root for inp in plan.sources])
        Path(out).mkdir(parents=True, exist_ok=True)
    with writing(out, command, settle=not force and stages[0] != "compact"):
        growth = None
        if "scan" in stages:
            record, growth = start_record(out, plan, force)
        elif record is None:
            record = BuildRecord.load(out, missing_ok=True)
        run = _Run(Path(out), plan, record, engine, progress, retile, growth)
        try:
            for stage in stages:
                if not getattr(run, stage)():
                    break
        finally:
            run.close()
        run.report.seconds = time.perf_counter() - started
        if "scan" in stages and "catalog" in stages:
            record.data.update(finished=now(), seconds=round(run.report.seconds, 3))
            record.save()
    return run.report


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


def error_count(layout: OutputLayout) -> int:
    """Rows of ``errors.parquet`` (every stage), 0 when there is none."""
    return mf.read_table(layout.errors, mf.ERRORS_SCHEMA, columns=["stage"]).num_rows if layout.errors.exists() else 0


