"""Shared pieces of the CLI: the error-to-exit-code group and JSON output.

Every failure ends in one line on stderr and a non-zero exit, never a traceback: an :class:`Rs4mError`
(a bad input or flag: exit 2), an operating-system error such as a full disk or a read-only OUT (the file and
the cause: exit 1), and anything unexpected (its type and message, and how to see the traceback: exit 1).
``rs4m --debug ...`` (or ``RS4M_DEBUG=1``) lets unexpected errors raise with their traceback.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from rs4m.errors import ConfigError, Rs4mError

#: causes of a failed write or read that the user can fix, in their words
OS_CAUSES = {
    errno.ENOSPC: "no space left on the device; free some or give another OUT folder",
    errno.EDQUOT: "disk quota exceeded; free some space or give another OUT folder",
    errno.EROFS: "the file system is read-only; give a writable OUT folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: files whose frames in a traceback mean a checkpoint or weights file was being read
_CHECKPOINT_READERS = ("torch/serialization.py", "safetensors/")


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


def fail(message: str, code: int = 1) -> None:
    """Stop with one line on stderr and exit ``code``."""
    click.echo(f"rs4m: error: {message}", err=True)
    sys.exit(code)
