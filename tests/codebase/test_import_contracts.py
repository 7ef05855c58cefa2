"""The code's shape, checked: the import contracts of setup.cfg (edges call domains, domains never
call edges, no edge borrows from another) and no import cycle among the project's modules."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest
from importlinter import cli

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("etl_app", "tasks", "schemas")


@pytest.fixture
def loggers_kept() -> Iterator[None]:
    """lint_imports configures its logging with logging.config.dictConfig, which disables every
    logger that exists already (the app's among them): each one's state is put back afterwards,
    or every later test that reads the app's log lines (caplog) would find none."""
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    before = [(lg, lg.disabled, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    yield
    for lg, disabled, level, handlers, propagate in before:
        lg.disabled, lg.handlers, lg.propagate = disabled, handlers, propagate
        lg.setLevel(level)


def test_the_import_contracts_of_setup_cfg_are_kept(monkeypatch, loggers_kept):
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(config_filename=os.fspath(ROOT / "setup.cfg"), no_cache=True, no_logo=True) == 0


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_module_of_the_project_imports_itself_back_through_others():
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
