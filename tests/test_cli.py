"""The command line: --version, --help listing every registered command, --help on each."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner

from rs4m import __version__
from rs4m.cli import COMMAND_MODULES, get_cli


def test_version():
    result = CliRunner().invoke(get_cli(), ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_every_command():
    result = CliRunner().invoke(get_cli(), ["--help"])
    assert result.exit_code == 0
    names = sorted({attr for _, attr in COMMAND_MODULES})
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()]
    assert sorted(listed) == names


@pytest.mark.parametrize("name", sorted({attr for _, attr in COMMAND_MODULES}))
def test_each_command_has_help(name):
    result = CliRunner().invoke(get_cli(), [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ") and name in result.output.splitlines()[0]


def test_unknown_command_fails():
    result = CliRunner().invoke(get_cli(), ["frobnicate"])
    assert result.exit_code != 0 and "No such command" in result.output


def test_console_script_runs():
    exe = shutil.which("rs4m")
    if exe is None:
        pytest.skip("rs4m console script not on PATH (package not installed)")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "verify" in proc.stdout
