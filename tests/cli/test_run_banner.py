"""What `etl-app run` prints at start goes to every log: it says where the API key and Flower's
password are, never the secrets, and names a key that can sign in to the pages."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from etl_app.cli import main
from etl_app.roles import key_id

PROCFILE = "".join(
    f"{name}: true\n" for name in ("release", "web", "worker", "lookups", "dead_letter", "beat", "flower")
)


@pytest.fixture
def start(tmp_path, monkeypatch):
    """`etl-app run`'s output up to starting the processes (migrations and the supervisor skipped)."""
    import etl_app.migrate
    from etl_app.local.supervisor import Supervisor

    monkeypatch.setattr(etl_app.migrate, "upgrade", lambda *args, **kwargs: None)
    monkeypatch.setattr(Supervisor, "run", lambda self: None)
    for name in ("ETL_API_KEYS", "FLOWER_BASIC_AUTH", "CELERY_BROKER_URL", "WEB_PORT", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ETL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/none")  # no embedded servers
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    procfile = tmp_path / "Procfile"
    procfile.write_text(PROCFILE)

    def run(**env: str) -> str:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(main, ["run", "--procfile", str(procfile)])
        assert result.exit_code == 0, result.output
        return result.output

    return run


@pytest.mark.unit
def test_the_banner_says_where_the_generated_secrets_are_without_printing_them(start, tmp_path):
    out = start()
    var = tmp_path / "var"
    key = (var / "api_key").read_text().strip()
    user, _, password = (var / "flower_auth").read_text().strip().partition(":")
    assert key not in out
    assert password not in out
    assert f"{key_id(key)} (role admin), in {var / 'api_key'} (KEY=$(cat {var / 'api_key'}))" in out
    assert f"(user {user}, password in {var / 'flower_auth'})" in out
    assert f'curl -H "Authorization: Bearer $(cat {var / "api_key"})"' in out


@pytest.mark.unit
def test_the_banner_names_the_first_key_that_can_sign_in_to_the_pages(start):
    out = start(ETL_API_KEYS="ingest-only-key:ingest,reading-key:reader", FLOWER_BASIC_AUTH="ops:flower-secret")
    assert "ingest-only-key" not in out and "reading-key" not in out and "flower-secret" not in out
    assert key_id("ingest-only-key") not in out
    assert f"API key      {key_id('reading-key')} (role reader), in ETL_API_KEYS" in out
    assert "(user ops, password in FLOWER_BASIC_AUTH)" in out


@pytest.mark.unit
def test_the_banner_says_when_no_key_can_sign_in_to_the_pages(start):
    out = start(ETL_API_KEYS="ingest-only-key:ingest", FLOWER_BASIC_AUTH="ops:flower-secret")
    assert "ingest-only-key" not in out
    assert "none of ETL_API_KEYS may sign in to the pages" in out


@pytest.mark.unit
def test_as_root_the_banner_says_once_that_the_workers_run_as_root(start, monkeypatch):
    monkeypatch.delenv("ETL_ROOT_NOTED", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert start().count("as root      the workers run as root too, which Celery advises against") == 1
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "as root" not in start()
