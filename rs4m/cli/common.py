"""Shared pieces of the CLI: the error-to-exit-code group and JSON output.

Every failure ends in one line on stderr and a non-zero exit, never a traceback: an :class:`Rs4mError`
(a bad input or flag: exit 2), an operating-system error such as a full disk or a read-only OUT (the file and
the cause: exit 1), and anything unexpected (its type and message, and how to see the traceback: exit 1).
``rs4m --debug ...`` (or ``RS4M_DEBUG=1``) lets unexpected errors raise with their traceback.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from rs4m.errors import ConfigError, DependencyError, Rs4mError

#: causes of a failed write or read that the user can fix, in their words
OS_CAUSES = {
    errno.ENOSPC: "no space left on the device; free some or give another OUT folder",
    errno.EDQUOT: "disk quota exceeded; free some space or give another OUT folder",
    errno.EROFS: "the file system is read-only; give a writable OUT folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: how to install the trainer, said by every command that needs it (a CPU-only machine must not pull CUDA)
TRAIN_INSTALL = ("pip install 'rs4m[train]' (on a machine without a GPU first `pip install torch==2.13.0 "
                 "--index-url https://download.pytorch.org/whl/cpu`, the CPU build, to skip the multi-GB CUDA one)")
#: files whose frames in a traceback mean a checkpoint or weights file was being read
_CHECKPOINT_READERS = ("torch/serialization.py", "safetensors/")


def require_torch(what: str) -> None:
    """Raise :class:`DependencyError` with the install line when PyTorch or safetensors (the train extra) is
    missing; ``what`` names the command for the message."""
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise DependencyError(f"{what} needs PyTorch and safetensors: {TRAIN_INSTALL}") from None


def debug_enabled(ctx: click.Context) -> bool:
    """True with ``rs4m --debug`` or ``RS4M_DEBUG=1``: unexpected errors then show their traceback."""
    return bool(ctx.find_root().params.get("debug")) or os.environ.get("RS4M_DEBUG", "") not in ("", "0")


@contextmanager
def checkpoint_errors(checkpoint: Path | str | None) -> Iterator[None]:
    """Turn a failure while reading ``checkpoint`` (torch or safetensors raising on a damaged or foreign file)
    into one :class:`ConfigError` naming the file; failures elsewhere pass through unchanged."""
    try:
        yield
    except Exception as err:
        frames = [f.f_code.co_filename.replace(os.sep, "/") for f, _ in traceback.walk_tb(err.__traceback__)]
        reading = any(r in f for f in frames for r in _CHECKPOINT_READERS)
        if checkpoint is None or not (reading or type(err).__module__.startswith("safetensors")):
            raise
        message = " ".join(str(err).split())[:300] or type(err).__name__
        raise ConfigError(f"checkpoint {checkpoint} cannot be read ({type(err).__name__}: {message}); "
                          "it is damaged or not a checkpoint of rs4m pretrain") from None


def describe_failure(err: BaseException) -> str:
    """One line for an error that is not an :class:`Rs4mError`: the file and cause of an OS error, or the type
    and message of anything else with how to get its traceback."""
    message = " ".join(str(err).split())
    if isinstance(err, OSError) and err.errno in OS_CAUSES:
        where = err.filename or "a file"
        return f"cannot use {where}: {OS_CAUSES[err.errno]}"
    if isinstance(err, OSError) and "No space left on device" in message:  # pyarrow drops the errno
        return f"{message}; free some space or give another OUT folder"
    return (f"unexpected {type(err).__name__}: {message[:300]} "
            "(rerun with `rs4m --debug ...` to see the traceback)")


class Rs4mGroup(click.Group):
    """A click group that turns :class:`Rs4mError` into ``rs4m: error: <message>`` on stderr and exit 2, and
    every other failure into one line and exit 1 (see the module doc)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Rs4mError as err:
            click.echo(f"rs4m: error: {err}", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as err:  # one line instead of a traceback, unless --debug
            if debug_enabled(ctx):
                raise
            click.echo(f"rs4m: error: {describe_failure(err)}", err=True)
            ctx.exit(1)


def echo_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


class Bars:
    """The progress callback of the library (:class:`rs4m.stages.build.Tick`) drawn as one tqdm bar per stage
    on stderr; silent with ``quiet``. Use as a context manager so the bars are closed."""

    UNITS = {"scan": "scene", "tile": "unit"}

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, tick: Any) -> None:
        from tqdm import tqdm

        bar = self.bars.get(tick.stage)
        if bar is None:
            bar = self.bars[tick.stage] = tqdm(desc=tick.stage, unit=self.UNITS.get(tick.stage, "item"),
                                               total=tick.total, disable=self.quiet, leave=False)
        bar.update(tick.advance)
        if tick.info:
            bar.set_postfix(**tick.info, refresh=False)

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


def summary_line(counts: dict, seconds: float) -> str:
    """The one-line summary of a build (or of a tile run)."""
    tile = counts.get("tile", {})
    scenes = counts.get("scan", {}).get("scenes")
    errors = counts.get("errors", tile.get("errors", 0))
    parts = [f"scenes {scenes}" if scenes is not None else "scenes (scanned before)",
             f"tiles {tile.get('tiles', 0)}", f"filtered {tile.get('filtered', 0)}"]
    if tile.get("feature_errors"):  # overlap search on, and some tiles have no features
        parts.append(f"tiles without features {tile['feature_errors']}")
    if "dedup" in counts:
        parts.append(f"duplicates {counts['dedup'].get('duplicates', 0)}")
    if "catalog" in counts:
        parts.append(f"manifest {counts['catalog'].get('tiles_kept', 0)}")
    rate = tile.get("tiles", 0) / seconds if seconds > 0 else 0.0
    parts += [f"errors {errors}", f"{seconds:.1f} s", f"{rate:.1f} tiles/s"]
    return "done: " + ", ".join(parts)


def report_failures(units_failed: list[dict]) -> None:
    """One line per distinct cause of the units that failed after retries (a full disk fails them all alike)."""
    by_error: dict[str, list[int]] = {}
    for fail in units_failed:
        by_error.setdefault(fail["error"], []).append(fail["unit"])
    for error, units in by_error.items():
        which = f"unit {units[0]}" if len(units) == 1 else f"{len(units)} units ({', '.join(map(str, units[:5]))}" \
            f"{', ...' if len(units) > 5 else ''})"
        click.echo(f"rs4m: {which} failed after retries: {error} (re-run the same command to retry)", err=True)


def echo_plan(plan: Any) -> None:
    """The plan's warnings and one line per source, on stderr."""
    for line in plan.warnings:
        click.echo(f"rs4m: warning: {line}", err=True)
    for inp in plan.sources:
        click.echo(f"source {inp.source}: {inp.root}", err=True)


def echo_build(report: Any) -> None:
    """The notes, failures and summary line of a finished :func:`rs4m.stages.build.run_build`; exit 1 if a
    unit failed after retries."""
    for line in report.notes:
        click.echo(f"rs4m: note: {line}", err=True)
    report_failures(report.units_failed)
    click.echo(summary_line(report.counts, report.seconds), err=True)
    if not report.ok:
        raise SystemExit(1)


def _set_log_level(level: int) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value:
            return
        log = logging.getLogger("rs4m")
        log.setLevel(level)
        if level < logging.WARNING and not log.handlers:  # below WARNING python's last-resort handler is silent
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
    return callback


def add_verbosity(command: click.Command) -> click.Command:
    """Give ``command`` ``-q/--quiet`` (no warnings or notes from the library; commands with their own
    ``--quiet`` also hide progress bars) and ``-v/--verbose`` (the library's debug log) where it lacks them.
    Both only change what goes to stderr; results on stdout stay the same."""
    for sub in getattr(command, "commands", {}).values():  # the subcommands of a group too
        add_verbosity(sub)
    names = {p.name for p in command.params}
    if "quiet" not in names:
        command.params.append(click.Option(["-q", "--quiet", "log_quiet"], is_flag=True, expose_value=False,
                                           help="No warnings or notes on stderr.",
                                           callback=_set_log_level(logging.ERROR)))
    if "verbose" not in names and "log_verbose" not in names:
        command.params.append(click.Option(["-v", "--verbose", "log_verbose"], is_flag=True, expose_value=False,
                                           help="The library's debug log on stderr.",
                                           callback=_set_log_level(logging.DEBUG)))
    return command
