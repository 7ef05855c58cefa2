"""Every file of the repository that the code, the tests or the documentation names by its path
exists, and every module, class or function they name by its dotted name (``etl_app.<module>.<name>``) is
there: docstrings and comments point only at what a reader of this repository can open."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("etl_app", "tasks", "schemas", "tests", "bench", "migrations", "scripts", "docs", "examples", "var")
PATH = re.compile(
    r"(?<![\w/.\-])((?:" + "|".join(FOLDERS) + r")/[\w./\-]*\.(?:py|md|sh|html|js|css|toml|cfg|ini|png|json|txt))\b"
)
SOURCES = ("etl_app", "tasks", "schemas", "tests", "bench", "migrations", "scripts", "docs")
TOP = ("README.md", "celeryconfig.py", "wsgi.py", "Makefile", "Procfile", "setup.cfg", "ruff.toml", ".ci/run")


def named_paths() -> dict[str, list[str]]:
    """Each repository path named in a source or documentation file → where."""
    files = [ROOT / name for name in TOP if (ROOT / name).exists()]
    for folder in SOURCES:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".sh", ".html", ".js")]
    found: dict[str, list[str]] = {}
    for path in files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in PATH.finditer(line):
                found.setdefault(match.group(1), []).append(f"{path.relative_to(ROOT)}:{number}")
    return found


def test_every_file_named_in_the_repository_exists():
    missing = {
        path: places
        for path, places in named_paths().items()
        if not (ROOT / path).exists() and not path.startswith("var/") and "*" not in path
    }
    assert missing == {}


def test_the_path_finder_finds_the_paths_a_docstring_names():
    assert PATH.findall("see etl_app/quality/settle.py and docs/quality.md, not x/etl_app/y.py") == [
        "etl_app/quality/settle.py",
        "docs/quality.md",
    ]


DOTTED = re.compile(r"(?<![\w.])((?:etl_app|tasks|schemas)(?:\.\w+)+)")
# Dotted names that are not Python objects: an entry-point group, logger names, a local variable,
# the host of the xlsx XML namespaces.
NOT_OBJECTS = {
    "etl_app.migrations",
    "etl_app.test",
    "etl_app.test.filter",
    "schemas.items",
    "schemas.openxmlformats.org",
}


def resolves(name: str) -> bool:
    """The longest importable module prefix of ``name``, then its attributes, one by one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attribute in parts[i:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_module_class_or_function_named_by_its_dotted_name_exists():
    files = [ROOT / "README.md", ROOT / "celeryconfig.py"]
    for folder in SOURCES:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".html")]
    missing: dict[str, list[str]] = {}
    for path in files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in DOTTED.finditer(line):
                name = match.group(1)
                if name not in NOT_OBJECTS and not resolves(name):
                    missing.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{number}")
    assert missing == {}
