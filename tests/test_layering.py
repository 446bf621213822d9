"""The layering the design promises, read from the source (no import runs):
the core never imports Flower or an upper package; the ClientApp and the
server side never import each other; the apps that run inside Flower never
reach the operator's tooling (``fedsense_tools``), which is not in the app
bundle either; no module-level import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("fedsense", "fl_client", "fl_server", "strategies", "fedsense_tools")
APPS = ("fl_client.client_app", "fl_server.server_app")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()
TOOLING = {m for m in MODULES if m.split(".")[0] == "fedsense_tools"}  # the operator's side


def _typing_only(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, top_level_only: bool) -> set[str]:
    """Modules ``name`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    tree = ast.parse(MODULES[name].read_text())
    if not top_level_only:
        nodes = list(ast.walk(tree))
    else:  # also what sits under module-level if/try blocks, not under def or class
        stack, nodes = list(tree.body), []
        while stack:
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)) and not _typing_only(node):
                stack += [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in MODULES}
    return found


def _project(imported: set[str]) -> set[str]:
    return {m for m in imported if m in MODULES}


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.split(".")[0] == "fedsense"))
def test_the_core_imports_no_flower_and_no_upper_package(name):
    bad = {m for m in _imports(name, top_level_only=False)
           if m.split(".")[0] in ("flwr", "fl_client", "fl_server", "strategies", "fedsense_tools", "benchmarks")}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_client_and_server_never_import_each_other(name):
    top = name.split(".")[0]
    forbidden = {"fl_client": ("fl_server", "strategies", "fedsense_tools"), "fl_server": ("fl_client", "fedsense_tools"),
                 "strategies": ("fl_client", "fl_server", "fedsense_tools")}.get(top, ())
    bad = {m for m in _imports(name, top_level_only=False) if m.split(".")[0] in forbidden}
    assert not bad, f"{name} imports {sorted(bad)}"


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += _project(_imports(name, top_level_only=False)) - seen
    return seen


@pytest.mark.parametrize("app", APPS)
def test_the_flower_apps_never_reach_the_operators_tooling(app):
    assert not _closure(app) & TOOLING, sorted(_closure(app) & TOOLING)


def test_the_app_bundle_devices_receive_holds_no_tooling():
    """``flwr run`` ships the files pyproject's fab-include lists to every node."""
    text = (REPO / "pyproject.toml").read_text()
    assert "fl_client/**/*.py" in text and "fl_server/**/*.py" in text
    assert "fedsense_tools" not in text.split("fab-include", 1)[1].split("]", 1)[0]


def test_no_module_level_import_cycle():
    graph = {name: _project(_imports(name, top_level_only=True)) - {name} for name in MODULES}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
