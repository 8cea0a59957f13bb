"""Shared pieces of the CLI: the error-to-exit-code group and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from rs4m.errors import Rs4mError


class Rs4mGroup(click.Group):
    """A click group that turns :class:`Rs4mError` into ``rs4m: error: <message>`` on stderr and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Rs4mError as err:
            click.echo(f"rs4m: error: {err}", err=True)
            ctx.exit(2)


def echo_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> None:
    """Stop with one line on stderr and exit ``code``."""
    click.echo(f"rs4m: error: {message}", err=True)
    sys.exit(code)
