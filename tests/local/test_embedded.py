"""The embedded PostgreSQL and Redis: reachable from other processes, stopped by stop(),
and a launcher killed with SIGKILL does not break the next start."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest
import redis

from etl_app.local.server_processes import processes_in
from etl_app.local.services import EmbeddedServiceError, EmbeddedServices

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def base_dir():
    """A scratch directory that also an account such as ``nobody`` can reach, for the tests where
    PostgreSQL runs as one (pytest's tmp_path sits under a 0700 directory); anything left
    running in it is killed."""
    path = Path(tempfile.mkdtemp(prefix="etl-embedded-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir() and sub.name in ("postgres", "redis"):
            for proc in processes_in(sub, "postgres") + processes_in(sub, "redis-server"):
                proc.kill()
    shutil.rmtree(path, ignore_errors=True)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _in_subprocess(code: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


WRITE_AND_READ = """
    import sys
    import psycopg, redis, sqlalchemy as sa
    db_url, redis_url = sys.argv[1:3]
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS probe (v text)")
        conn.execute("INSERT INTO probe VALUES ('from psycopg')")
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        row = conn.execute(sa.text("SELECT current_database(), count(*) FROM probe")).one()
    r = redis.Redis.from_url(redis_url)
    r.set("probe", "from redis")
    print(row[0], row[1], r.get("probe").decode())
"""


def test_start_connect_from_another_process_and_stop(base_dir):
    var = base_dir / "var"
    services = EmbeddedServices(var)
    try:
        db_url = services.start_postgres()
        redis_url = services.start_redis()
        assert db_url.startswith("postgresql://postgres@/etl_app?host=")
        password = (var / "redis_password").read_text().strip()
        assert len(password) >= 32 and stat.S_IMODE((var / "redis_password").stat().st_mode) == 0o600
        assert redis_url == f"redis://:{password}@127.0.0.1:{services.redis_port}/0"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=services.redis_port).ping()  # no password: refused
        assert services.start_postgres() == db_url and services.start_redis() == redis_url

        assert _in_subprocess(WRITE_AND_READ, db_url, redis_url).split() == ["etl_app", "1", "from", "redis"]
        with pytest.raises(EmbeddedServiceError, match="in use by another running launcher"):
            EmbeddedServices(var).start_redis()
    finally:
        pg_pid, redis_pid, port = services.pg_pid, services.redis_pid, services.redis_port
        socket_file = services.pg_socket_dir / ".s.PGSQL.5432" if services.pg_socket_dir else None
        services.stop()
    services.stop()  # idempotent

    assert pg_pid and redis_pid and _gone(pg_pid) and _gone(redis_pid)
    assert not _port_open(port)
    assert socket_file is not None and not socket_file.exists()
    assert not processes_in(var / "postgres", "postgres")
    # the lock is free again, and the data survived: a new start sees the table
    with EmbeddedServices(var) as again:
        import psycopg

        with psycopg.connect(again.start_postgres()) as conn:
            assert conn.execute("SELECT count(*) FROM probe").fetchone() == (1,)


def test_a_second_launcher_on_a_held_var_dir_says_who_holds_it_in_one_line(tmp_path):
    from etl_app.local.var_dir import VarDirLock

    var = tmp_path / "var"
    held = VarDirLock(var)
    held.acquire()
    try:
        with pytest.raises(EmbeddedServiceError, match=f"in use by another running launcher .*pid {os.getpid()}"):
            VarDirLock(var).acquire()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
        proc = subprocess.run(
            [sys.executable, "-c", "from etl_app.cli import main; main()", "run"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**env, "ETL_VAR_DIR": str(var)},
        )
    finally:
        held.release()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert f"{var} is in use by another running launcher (etl-app run, pid {os.getpid()})" in out
    assert "ETL_VAR_DIR" in out and len(out.strip().splitlines()) == 1, out


def test_embedded_env_is_shell_quoted_and_read_back_in_both_forms(tmp_path):
    from etl_app.cli.run import write_env_file
    from etl_app.config import read_env_file

    urls = {
        "DATABASE_URL": f"postgresql://postgres@/etl_app?host={tmp_path}/a b&port=5432",
        "REDIS_URL": "redis://:0123abcd@127.0.0.1:41234/0",
    }
    path = tmp_path / "embedded.env"
    write_env_file(path, urls)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(str(path)) == urls
    shell = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; printf "%s\\n" "$DATABASE_URL" "$REDIS_URL"', "-", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.splitlines() == [urls["DATABASE_URL"], urls["REDIS_URL"]]
    old = tmp_path / "old.env"  # as earlier versions wrote it
    old.write_text("".join(f"{k}={v}\n" for k, v in urls.items()))
    assert read_env_file(str(old)) == urls


LAUNCHER = """
    import json, sys, time
    from etl_app.local.services import EmbeddedServices
    s = EmbeddedServices(sys.argv[1])
    info = dict(db=s.start_postgres(), redis=s.start_redis())
    info.update(pg_pid=s.pg_pid, redis_pid=s.redis_pid, socket_dir=str(s.pg_socket_dir))
    print(json.dumps(info), flush=True)
    time.sleep(120)
"""


def test_next_start_after_launcher_was_killed(base_dir):
    # A var dir deep enough that PGDATA's socket path exceeds the unix socket limit.
    var = base_dir / ("d" * 70) / "var"
    launcher = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LAUNCHER), str(var)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        old = json.loads(launcher.stdout.readline())
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
    assert not old["socket_dir"].startswith(str(var))  # moved to a short directory
    assert len(str(var / "postgres" / ".s.PGSQL.5432")) > 107
    # the killed launcher's servers are still up (and hold some data)
    assert not _gone(old["pg_pid"]) and not _gone(old["redis_pid"])
    _in_subprocess(WRITE_AND_READ, old["db"], old["redis"])

    with EmbeddedServices(var) as services:
        db_url, redis_url = services.start_postgres(), services.start_redis()
        assert _gone(old["pg_pid"]) and _gone(old["redis_pid"])
        assert services.pg_pid != old["pg_pid"] and services.redis_pid != old["redis_pid"]
        # PostgreSQL data survives the unclean stop; this wrote a second row
        assert _in_subprocess(WRITE_AND_READ, db_url, redis_url).split()[:2] == ["etl_app", "2"]
        pg_pid, redis_pid = services.pg_pid, services.redis_pid
    assert _gone(pg_pid) and _gone(redis_pid)
    assert not Path(old["socket_dir"]).exists()  # the short socket directory is removed on stop


AS_ROOT = not hasattr(os, "geteuid") or os.geteuid() != 0
only_as_root = pytest.mark.skipif(AS_ROOT, reason="only as root")


def _user_namespaces() -> bool:
    from etl_app.local.postgres_as_root import resolve

    return resolve(Path("/nonexistent/postgres"), None).in_namespace


@only_as_root
def test_root_says_which_directory_blocks_the_postgres_account(base_dir):
    """When PostgreSQL runs as an account (asked for here; also where user namespaces are missing)."""
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    services = EmbeddedServices(private / "var", pg_account="nobody")
    with pytest.raises(EmbeddedServiceError, match=r"as the unprivileged account 'nobody'") as raised:
        services.start_postgres()
    services.stop()
    blocked = str(raised.value).split("no search (x) permission on: ", 1)[1].split(". Fix", 1)[0]
    assert str(private) in blocked.split(", ")


@only_as_root
def test_root_runs_postgres_in_a_folder_no_other_account_can_enter(base_dir):
    if not _user_namespaces():
        pytest.skip("user namespaces are not available here")
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    var = private / "var"
    with EmbeddedServices(var) as services:
        import psycopg

        with psycopg.connect(services.start_postgres()) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert services.postgres_account() is None  # not a system account: root's own uid
        pg_pid = services.pg_pid
    assert _gone(pg_pid)
    # The cluster's files belong to root, 0700, and the private folder was left as it was.
    assert (var / "postgres").stat().st_uid == 0
    assert stat.S_IMODE((var / "postgres").stat().st_mode) == 0o700
    assert {p.lstat().st_uid for p in (var / "postgres").rglob("*")} == {0}
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


@only_as_root
def test_root_keeps_running_a_cluster_made_by_an_account_as_that_account(base_dir):
    import psycopg

    from etl_app.local.postgres_as_root import unsearchable_dirs

    nobody = pwd.getpwnam("nobody")
    bin_dir = Path(sys.executable).parent
    if unsearchable_dirs(bin_dir, nobody.pw_uid, {nobody.pw_gid}):
        pytest.skip("the virtualenv is in a folder the account 'nobody' cannot enter")
    var = base_dir / "var"
    with EmbeddedServices(var, pg_account="nobody") as first, psycopg.connect(first.start_postgres()) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    assert (var / "postgres").stat().st_uid == nobody.pw_uid

    with EmbeddedServices(var) as again:
        url = again.start_postgres()
        assert again.postgres_account() == "nobody"
        assert psutil.Process(again.pg_pid).uids().real == nobody.pw_uid
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [(1,)]
