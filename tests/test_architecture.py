"""Imports run one way: the core (rs4m) never imports its plugins (rs4m_tools) or the trainer at import time,
no two modules import each other (directly or round a longer circle), and the adapter registry finds plugins
defined elsewhere, including through the entry-point group."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rs4m.errors import SourceError
from rs4m.sources import base as sources_base
from rs4m.sources import get_source, list_sources, register_source
from rs4m.sources.layouts import LayoutAdapter

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rs4m", "rs4m_tools", "pretrain")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``path`` imports anywhere (top level or inside functions)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from pkg import mod`` imports pkg.mod; ``from mod import name`` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def test_the_core_never_imports_its_plugins():
    graph = import_graph()
    offenders = sorted(f"{a} -> {b}" for a, deps in graph.items() if a.split(".")[0] == "rs4m"
                       for b in deps if b.split(".")[0] == "rs4m_tools")
    assert offenders == []


def test_no_module_circle():
    edges = import_graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert circles == []


def test_importing_every_core_module_loads_no_plugin_trainer_or_torch():
    names = sorted(n for n in project_modules() if n.split(".")[0] == "rs4m" and not n.endswith("__main__"))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rs4m_tools', 'pretrain', 'torch'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.fixture(autouse=True)
def private_registry(monkeypatch):
    """Adapters registered by these tests stay out of the registry every other test sees."""
    list_sources()
    monkeypatch.setattr(sources_base, "_REGISTRY", dict(sources_base._REGISTRY))


def test_an_adapter_defined_anywhere_is_found_by_name(tmp_path):
    from PIL import Image

    @register_source
    class _TestOnlyAdapter(LayoutAdapter):
        """An adapter defined here, outside the adapters package: one class, one decorator."""

        name = "test_only_dataset"
        title = "A dataset that exists only in this test"
        licence = "CC0-1.0"
        patterns = ("**/*.png",)

    assert get_source("test_only_dataset") is _TestOnlyAdapter
    assert _TestOnlyAdapter in list_sources()
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert [s.scene_path for s in _TestOnlyAdapter().scenes(tmp_path)] == ["a/x.png"]


def test_entry_point_plugins_load_on_first_lookup(monkeypatch):
    module = types.ModuleType("rs4m_test_plugin")
    exec_lines = ("from rs4m.sources import SourceAdapter, register_source\n"
                  "@register_source\nclass Plugged(SourceAdapter):\n    name = 'plugged_in_dataset'\n")
    exec(compile(exec_lines, "rs4m_test_plugin", "exec"), module.__dict__)  # the plugin's own code, not input
    monkeypatch.setitem(sys.modules, "rs4m_test_plugin", module)
    loaded: list[str] = []

    class FakeEntryPoint:
        name, value = "plugged", "rs4m_test_plugin"

        def load(self):
            loaded.append(self.value)
            return module

    class Broken(FakeEntryPoint):
        name, value = "broken", "no_such_module_anywhere"

        def load(self):
            raise ImportError("no module named no_such_module_anywhere")

    real = sources_base.entry_points
    monkeypatch.setattr(sources_base, "entry_points",
                        lambda group: [*real(group=group), FakeEntryPoint(), Broken()])
    monkeypatch.setattr(sources_base, "_loaded", set())
    with pytest.warns(UserWarning, match="broken"):
        names = {cls.name for cls in list_sources()}
    assert loaded == ["rs4m_test_plugin"] and {"plugged_in_dataset", "dota_v1", "folder"} <= names
    with pytest.raises(SourceError, match="valid names: .*dota_v1"):
        get_source("not_a_dataset")
