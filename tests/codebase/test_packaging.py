"""Building the package (``pip install -e .`` as ``make install`` runs it, and a wheel) says nothing
about the pages' files, and ships every one of them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "celeryconfig.py", "wsgi.py")
PACKAGES = ("etl_app", "tasks", "schemas")

BUILD = """
import setuptools.build_meta as backend
print("wheel:", backend.build_wheel("dist"))
print("editable:", backend.build_editable("dist"))
"""


def test_the_build_does_not_warn_about_the_pages_folders_and_ships_their_files(tmp_path):
    # a copy: the build writes build/ and *.egg-info beside the sources
    for name in SOURCES:
        shutil.copy(ROOT / name, tmp_path / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    # the calls pip makes to the build backend (PEP 517, PEP 660 for -e), with this environment's setuptools
    done = subprocess.run(
        [sys.executable, "-c", BUILD], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    said = done.stdout + done.stderr
    assert "etl_app.ui.static" not in said and "etl_app.ui.templates" not in said, said
    assert "Deprecat" not in said, said

    wheel = next((tmp_path / "dist").glob("etl_app-*-py3-none-any.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    pages = [p for p in (ROOT / "etl_app" / "ui").rglob("*") if p.suffix in (".html", ".css", ".js")]
    assert len(pages) > 20
    missing = [str(p.relative_to(ROOT)) for p in pages if str(p.relative_to(ROOT)) not in shipped]
    assert missing == []
