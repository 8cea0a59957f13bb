"""The ``rs4m`` command line: thin click commands that parse, build a config, call one library function and
turn known errors into one clear line and a non-zero exit.

Each command lives in its own module under ``rs4m/cli/``; :data:`COMMAND_MODULES` lists them in help order.
"""

from __future__ import annotations

import importlib

import click

from rs4m.cli.common import Rs4mGroup, add_verbosity
from rs4m.version import __version__

#: (module, attribute) of every command; a module is imported when the CLI starts, not at package import.
COMMAND_MODULES: list[tuple[str, str]] = [
    ("rs4m.cli.build", "build"),
    ("rs4m.cli.build", "scan"),
    ("rs4m.cli.build", "tile"),
    ("rs4m.cli.dedup", "dedup"),
    ("rs4m.cli.catalog", "catalog"),
    ("rs4m.cli.dedup", "leakage"),
    ("rs4m.cli.demo", "demo"),
    ("rs4m.cli.verify", "verify"),
    ("rs4m.cli.sources", "sources"),
    ("rs4m.cli.stats", "stats"),
    ("rs4m.cli.inspect", "inspect"),
    ("rs4m.cli.compact", "compact"),
    ("rs4m.cli.eval", "eval"),
    ("rs4m.cli.pretrain", "pretrain"),
    ("rs4m.cli.export", "export"),
]


@click.group(cls=Rs4mGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rs4m")
@click.option("-v", "--debug", is_flag=True, help="Show the traceback of an unexpected error.")
def cli(debug: bool) -> None:
    """rs4m: build a deduplicated remote-sensing pretraining corpus (RS-4M) and pretrain SelectiveMAE on it.

    \b
    Typical flow:
      rs4m build OUT --source folder=DIR     scan, tile, dedup, catalog
      rs4m stats OUT                         what was built
      rs4m verify OUT                        check every shard and row
    """


def get_cli() -> click.Group:
    """The ``rs4m`` group with every command registered (tests drive it with ``CliRunner``)."""
    for module_name, attr in COMMAND_MODULES:
        if attr not in cli.commands:
            module = importlib.import_module(module_name)
            cli.add_command(add_verbosity(getattr(module, attr)))
    return cli


def main() -> None:
    """Console-script entry point."""
    get_cli()()
