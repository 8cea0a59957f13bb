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


# --- conventions: results on stdout, logs on stderr; -q/-v everywhere; --tile-id prefixes; install hints -------

import json  # noqa: E402

import pytest  # noqa: E402

from tests.tiny import build, make_images, run  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    make_images(base / "src", n=3, size=64)
    assert build(base / "out", base / "src").exit_code == 0
    return base / "out"


def test_results_go_to_stdout_and_logs_to_stderr(tiny):
    stats = run("stats", tiny)
    assert stats.exit_code == 0 and stats.stdout.startswith("build ") and "kept 3," in stats.stdout
    assert "kept" not in stats.stderr
    verify = run("verify", tiny, "--no-decode")
    assert verify.exit_code == 0 and "verify OK" in verify.stdout and "verify" not in verify.stderr
    inspect = run("inspect", tiny, "-n", 2)
    assert inspect.stdout.splitlines()[0].split()[0] == "tile_id" and "2 of 3 matching" in inspect.stderr


def test_every_command_takes_quiet_and_verbose():
    for name, command in get_cli().commands.items():
        commands = list(getattr(command, "commands", {}).values()) or [command]
        for cmd in commands:
            flags = {o for p in cmd.params for o in getattr(p, "opts", [])}
            assert {"-q", "-v"} <= flags, (name, cmd.name)


def test_tile_id_takes_any_unique_prefix(tiny):
    ids = sorted(json.loads(run("inspect", tiny, "--json", "-n", 100).stdout)["rows"], key=lambda r: r["tile_id"])
    ids = [r["tile_id"] for r in ids]
    target = ids[0]
    prefix = next(target[:n] for n in range(1, 33) if sum(i.startswith(target[:n]) for i in ids) == 1)
    row = json.loads(run("inspect", tiny, "--tile-id", prefix, "--json").stdout)["rows"]
    assert [r["tile_id"] for r in row] == [target]
    shared = next((a[:1] for a, b in zip(ids, ids[1:], strict=False) if a[:1] == b[:1]), None)
    if shared is not None:
        result = run("inspect", tiny, "--tile-id", shared)
        assert result.exit_code == 2 and "matches" in result.stderr and "give more characters" in result.stderr


def test_train_hints_say_how_to_get_the_cpu_build():
    from rs4m.cli.common import TRAIN_INSTALL

    assert "rs4m[train]" in TRAIN_INSTALL and "torch==2.13.0" in TRAIN_INSTALL and "whl/cpu" in TRAIN_INSTALL


NEEDS_TORCH = [(["pretrain", "--manifest", "m.parquet", "--run", "r"], "pretraining"),
               (["eval", "knn", "--random-init", "vit_test", "--data", "d"], "evaluation")]


@pytest.mark.parametrize(("args", "what"), NEEDS_TORCH)
def test_a_command_that_needs_torch_says_how_to_install_it_in_one_line(args, what, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # as if PyTorch were not installed
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    result = CliRunner().invoke(get_cli(), args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert f"{what} needs PyTorch" in lines[0] and "torch==2.13.0" in lines[0] and "whl/cpu" in lines[0]
