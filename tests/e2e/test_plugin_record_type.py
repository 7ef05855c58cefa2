"""A record type of one's own, end to end: the example package ``examples/etl-app-tracks``,
copied out of the source tree and installed with pip, is migrated by ``etl-app migrate`` (its
own Alembic branch beside etl_app's) and its records go API → real celery worker → its table.

The package is installed into a folder of this test's own (``pip install --target``) that only
the subprocesses of this test see (``PYTHONPATH``): the registry is loaded once per process, so
this test process, the shared test database and any other run in the same virtualenv never
see the ``tracks`` type. Nothing is left behind: the folder and the database go at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from etl_app.migrate import MIGRATIONS
from etl_app.record_types import get_registry

from tests.helpers.procs import BIN, ROOT, running_stack
from tests.helpers.support import RUN_ID, Api, fresh_database, redis_db

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "etl-app-tracks"
E2E_REDIS = redis_db(15)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Iterator[Path]:
    """The example package, copied outside the source tree and pip-installed (no network) into a
    folder of its own; removed at the end."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "etl-app-tracks"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*argv, "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield site
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def plugin_env(plugin_path: Path) -> dict[str, str]:
    """What a process needs to see the installed package."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def plugin_database() -> Iterator[str]:
    """An empty database of this module's own, so the tracks table never reaches the shared one."""
    with fresh_database(f"plugin_{RUN_ID}", migrate=False) as url:
        yield url


def run(argv: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def query(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def track(track_id: str, **overrides) -> dict:
    return {
        "track_id": track_id,
        "title": "So What",
        "artist": "Miles Davis",
        "album": "Kind of Blue",
        "genre": "jazz",
        "duration_seconds": 562,
        "released_on": "1959-08-17",
        "explicit": False,
        **overrides,
    }


def test_etl_app_migrate_applies_etl_apps_chain_and_the_plugins_branch(plugin_env, plugin_database):
    own_head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    migrate = [str(BIN / "etl-app"), "migrate"]
    for _ in range(2):  # the second run finds both branches at their heads and changes nothing
        done = run(migrate, {**plugin_env, "DATABASE_URL": plugin_database})
        assert done.returncode == 0, done.stdout + done.stderr
        versions = sorted(v for (v,) in query(plugin_database, "SELECT version_num FROM alembic_version"))
        assert versions == sorted([own_head, "tracks_0001"])
    tables = {t for (t,) in query(plugin_database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"tracks", "raw_records", "ingestions", "tutors"} <= tables
    columns = [
        c
        for (c,) in query(
            plugin_database,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tracks' ORDER BY ordinal_position",
        )
    ]
    assert columns[:4] == ["track_id", "title", "artist", "album"]
    assert {"duration_minutes", "decade", "years_since_release", "is_long", "ingestion_id", "raw_record_id"} <= set(
        columns
    )


def test_the_migration_tests_pass_with_the_plugin_installed(plugin_env):
    """tests/migrations/test_migrations.py in a process that sees the package: its table and its branch
    agree (autogenerate finds no difference), and every branch goes down to base and back."""
    done = run(
        [sys.executable, "-m", "pytest", "tests/migrations/test_migrations.py", "-q", "-p", "no:cacheprovider"],
        plugin_env,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    tests = (ROOT / "tests/migrations/test_migrations.py").read_text().count("\ndef test_")
    assert f"{tests} passed" in done.stdout and tests >= 4, done.stdout[-2000:]


def test_tracks_go_from_the_api_to_their_table_with_derived_fields(plugin_env, plugin_database, tmp_path, unique):
    done = run([str(BIN / "etl-app"), "migrate"], {**plugin_env, "DATABASE_URL": plugin_database})
    assert done.returncode == 0, done.stdout + done.stderr
    env = {**plugin_env, "ETL_RETRY_BACKOFF_SECONDS": "1", "ETL_RETRY_BACKOFF_MAX_SECONDS": "2"}
    with running_stack(plugin_database, E2E_REDIS, tmp_path, **env) as stack:
        stack.worker()
        stack.web()
        api = Api(stack.web_url)

        types = {t["name"]: t for t in api.get("record-types").json()["record_types"]}
        assert {"tutors", "students", "sessions", "feedback", "tracks"} <= set(types)
        assert types["tracks"]["key"] == "track_id"
        assert types["tracks"]["derived_fields"] == ["duration_minutes", "decade", "years_since_release", "is_long"]
        assert [f["name"] for f in types["tracks"]["fields"] if f["expected"]] == ["album", "genre"]

        a, b, c = f"{unique}-A", f"{unique}-B", f"{unique}-C"
        batch = [
            track(a),
            track(b, title="Intro", artist="The xx", album=None, genre="pop", duration_seconds=127, released_on=None),
            track(c, title="Echoes", artist="Pink Floyd", duration_seconds=1410, released_on="1971-10-30"),
        ]
        r = api.post("tracks/batch", batch)
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 3
        status = api.wait_finished(r.json()["ingestion_id"], timeout=60)
        assert status["counts"] == {
            "received": 3,
            "in_flight": 0,
            "persisted": 3,
            "dead": 0,
            "rejected": 0,
            "rejections_not_stored": 0,
        }
        quality = status["quality"]  # the type's expected fields: album (2 of 3) and genre (3 of 3)
        assert list(quality["completeness"])[:3] == ["track_id", "title", "artist"]  # the schema's order
        assert (quality["completeness"]["released_on"], quality["completeness"]["overall"]) == (0.6667, 0.8333)
        assert (quality["score"], quality["level"]) == (0.9583, "excellent")  # (1 + 5/6 + 1 + 1) / 4

        rows = query(
            plugin_database,
            "SELECT track_id, title, duration_minutes, decade, is_long, years_since_release IS NULL,"
            " ingestion_id::text, raw_record_id IS NOT NULL FROM tracks WHERE track_id LIKE %s ORDER BY track_id",
            f"{unique}-%",
        )
        ingestion = r.json()["ingestion_id"]
        assert rows == [
            (a, "So What", 9.37, 1950, False, False, ingestion, True),
            (b, "Intro", 2.12, None, False, True, ingestion, True),
            (c, "Echoes", 23.5, 1970, True, False, ingestion, True),
        ]

        body = api.get(f"records/tracks/{a}").json()
        assert body["record_type"] == "tracks" and body["key"] == a
        assert body["fields"]["artist"] == "Miles Davis" and body["fields"]["released_on"] == "1959-08-17"
        received = int(body["lineage"]["received_at"][:4])
        assert body["derived"] == {
            "duration_minutes": 9.37,
            "decade": 1950,
            "years_since_release": received - 1959 - (body["lineage"]["received_at"][5:10] < "08-17"),
            "is_long": False,
        }
        assert body["lineage"]["ingestion_id"] == ingestion

        future = api.post("tracks", track(f"{unique}-F", released_on="2099-01-01"))
        assert future.status_code == 422, future.text  # check_as_of runs in the API too
        assert "released_on" in future.text
        assert api.get(f"records/tracks/{unique}-F").status_code == 404


def test_this_process_and_the_shared_database_never_saw_the_plugin(engine):
    """The package was only ever on the subprocesses' path."""
    import sqlalchemy as sa

    assert "tracks" not in get_registry()
    assert "tracks" not in sa.inspect(engine).get_table_names()
