"""Plugin migrations: a package's revision folder (entry-point group ``etl_app.migrations``)
joins etl_app's in Alembic's version locations as a branch of its own; without one, nothing changes."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from etl_app import migrate

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etl-app-tracks"


def own_head() -> str:
    """etl_app's head, read from migrations/versions alone."""
    return ScriptDirectory(str(migrate.MIGRATIONS)).get_current_head()


@pytest.fixture
def tracks_plugin(monkeypatch):
    """The example package importable and its migrations entry point the only one installed."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    ep = EntryPoint(name="tracks", value="etl_app_tracks.migrations", group=migrate.ENTRY_POINT_GROUP)
    monkeypatch.setattr(migrate, "entry_points", lambda group: [ep] if group == migrate.ENTRY_POINT_GROUP else [])
    yield
    for name in [m for m in sys.modules if m == "etl_app_tracks" or m.startswith("etl_app_tracks.")]:
        del sys.modules[name]


def test_without_plugins_only_etl_apps_own_chain_is_seen(monkeypatch):
    monkeypatch.setattr(migrate, "entry_points", lambda group: [])
    cfg = migrate.alembic_config()
    assert cfg.get_main_option("version_locations") is None
    assert ScriptDirectory.from_config(cfg).get_heads() == [own_head()]


def test_a_plugin_folder_is_a_branch_of_its_own_beside_etl_apps_chain(tracks_plugin):
    locations = migrate.plugin_version_locations()
    folder = (EXAMPLE / "etl_app_tracks" / "migrations").resolve()
    assert [(loc.branch, loc.path) for loc in locations] == [("tracks", folder)]
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert sorted(script.get_heads()) == sorted([own_head(), "tracks_0001"])
    assert sorted(script.get_bases()) == ["0001", "tracks_0001"]
    assert script.get_revision("tracks@head").revision == "tracks_0001"
    assert script.get_revision("tracks_0001").branch_labels == {"tracks"}
    # etl_app's whole chain is still there, down to its own base
    assert [r.revision for r in script.iterate_revisions(own_head(), "base")][-1] == "0001"


def test_an_entry_point_naming_a_plain_module_is_refused(monkeypatch, tmp_path):
    """A module's folder (site-packages, say) is not a revision folder."""
    (tmp_path / "loose_revisions.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="loose", value="loose_revisions", group=migrate.ENTRY_POINT_GROUP)
    monkeypatch.setattr(migrate, "entry_points", lambda group: [ep])
    try:
        with pytest.raises(ValueError, match="must be a package"):
            migrate.alembic_config()
    finally:
        sys.modules.pop("loose_revisions", None)
