"""Apply Alembic migrations from code (used by `etl-app migrate`, `etl-app run` and the tests).

etl_app's own revisions live in ``migrations/versions``. A package that adds record types
keeps the revisions of its tables in a folder of its own, named by an entry point of the
group ``etl_app.migrations``: the entry point's name is the branch label of its first
revision (``branch_labels = ("<name>",)``, ``down_revision = None``) and its value the
package whose folder holds the revision files. Every such folder joins Alembic's
``version_locations``, so one ``alembic_version`` table tracks etl_app's chain and each
package's branch, and :func:`upgrade` moves them all to their heads.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
ENTRY_POINT_GROUP = "etl_app.migrations"


@dataclass(frozen=True)
class VersionLocation:
    """One package's folder of Alembic revisions and the branch label its first one carries."""

    branch: str
    path: Path


def package_folder(package_name: str) -> Path:
    """The folder of a package. A plain module is refused: its folder would be whatever holds
    it (site-packages, say), whose every ``.py`` file Alembic would read as a revision."""
    package = importlib.import_module(package_name)
    locations = list(getattr(package, "__path__", None) or ())
    if len(locations) != 1:
        raise ValueError(f"{package_name!r} must be a package with one folder holding its Alembic revisions")
    return Path(locations[0]).resolve()


def plugin_version_locations() -> list[VersionLocation]:
    """The revision folders of the installed packages, by entry point (group ``etl_app.migrations``)."""
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        path = package_folder(ep.module)
        if not path.is_dir():
            raise ValueError(f"entry point {ep.name!r} of {ENTRY_POINT_GROUP}: {path} is not a folder")
        found.append(VersionLocation(ep.name, path))
    return found


def alembic_config(database_url: str | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    plugins = plugin_version_locations()
    if plugins:  # etl_app's own folder must be named too once version_locations is set
        folders = [MIGRATIONS / "versions", *(p.path for p in plugins)]
        cfg.set_main_option("version_locations", os.pathsep.join(str(f).replace("%", "%%") for f in folders))
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str | None = None, revision: str = "heads") -> None:
    """Upgrade to ``revision``; by default every branch (etl_app's and each package's) to its head."""
    command.upgrade(alembic_config(database_url), revision)
