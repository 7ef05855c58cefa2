"""``etl-app run`` (migrate, then every process of the Procfile, supervised) and ``etl-app migrate``."""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from etl_app.config import ROOT_NOTED_ENV, Settings, embedded_env_path, is_rabbitmq, project_dir, var_dir
from etl_app.roles import ADMIN, READ, ApiKey, parse_keys

PROCESSES = ("web", "worker", "lookups", "dead_letter", "beat", "flower")


def _secret_file(path: Path, make) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """``NAME=value`` lines, shell-quoted (``set -a; . var/embedded.env`` works; a URL holds
    ``&``), readable by :func:`etl_app.config.read_env_file`; 0600, as the Redis URL carries its
    password."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items()))


@click.command()
@click.option("--revision", default="heads", show_default=True)
def migrate(revision: str) -> None:
    """Apply the database migrations: etl_app's and those of every installed package that adds
    record types (entry-point group ``etl_app.migrations``), each branch to its head."""
    from etl_app.migrate import upgrade

    settings = Settings.from_env()
    if not settings.database_url:
        raise click.ClickException("DATABASE_URL is not set (or use `etl-app run`, which starts an embedded one)")
    upgrade(settings.database_url, revision)
    click.echo(f"database migrated to {revision}")


def prepare_environment(env: dict[str, str], var: Path) -> tuple[dict[str, str], object | None]:
    """Fill in what `make run` needs: embedded servers when no URLs are set, an API key and
    Flower credentials (generated once under ``var``). Returns the environment and the embedded
    servers handle (or None).

    The embedded Redis is started whenever no Redis is given: REDIS_URL unset and the broker
    (CELERY_BROKER_URL) unset or RabbitMQ's, which holds the queues only; the stash, caches and
    rate limits need a Redis. A Redis CELERY_BROKER_URL without REDIS_URL is the cache too."""
    embedded = None
    broker = env.get("CELERY_BROKER_URL", "")
    needs_redis = not env.get("REDIS_URL") and (not broker or is_rabbitmq(broker))
    if not env.get("DATABASE_URL") or needs_redis:
        from etl_app.local.services import EmbeddedServices

        embedded = EmbeddedServices(var)
        urls = {}
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = urls["DATABASE_URL"] = embedded.start_postgres()
        if needs_redis:
            env["REDIS_URL"] = urls["REDIS_URL"] = embedded.start_redis()
        write_env_file(Path(embedded_env_path(env)), urls)
    env.setdefault("ETL_API_KEYS", _secret_file(var / "api_key", lambda: secrets.token_urlsafe(32)))
    env.setdefault("FLOWER_BASIC_AUTH", _secret_file(var / "flower_auth", lambda: "admin:" + secrets.token_urlsafe(16)))
    env.setdefault("ETL_VAR_DIR", str(var))
    env.setdefault("WEB_PORT", env.get("PORT", "8000"))  # PORT as platforms set it, WEB_PORT the Procfile's
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env, embedded


def _signin_key(entries: str) -> ApiKey | None:
    """The first key of ``ETL_API_KEYS`` that may sign in to the pages (the ``read`` right)."""
    return next((key for key in parse_keys(entries.split(",")) if key.role == ADMIN or key.may(READ)), None)


def banner(env: dict[str, str], var: Path, given: Mapping[str, str]) -> list[str]:
    """What `etl-app run` prints at start: the addresses, where the API key and Flower's password
    are (the files under ``var`` it generated, or the variables set), never the secrets themselves,
    as this goes to every log of the service."""
    port, flower_port = env["WEB_PORT"], env.get("FLOWER_PORT", "5555")
    key_file, flower_file = var / "api_key", var / "flower_auth"
    key = _signin_key(env["ETL_API_KEYS"])
    if given.get("ETL_API_KEYS"):  # the operator's own keys: named by key id, read from where they set them
        read_key, where = "$KEY", "ETL_API_KEYS (KEY=that key)"
    else:
        read_key = f"$(cat {shlex.quote(str(key_file))})"
        where = f"{key_file} (KEY={read_key})"
    if key is None:
        key_line = "none of ETL_API_KEYS may sign in to the pages (that needs a reader, operator or admin key)"
    else:
        key_line = f"{key.id} (role {key.role}), in {where}"
    flower_user = env["FLOWER_BASIC_AUTH"].split(",")[0].partition(":")[0]
    flower_where = "FLOWER_BASIC_AUTH" if given.get("FLOWER_BASIC_AUTH") else str(flower_file)
    lines = [
        click.style("etl_app is starting", bold=True),
        f"  API          http://127.0.0.1:{port}/api/v1   (docs: http://127.0.0.1:{port}/docs)",
        f"  API key      {key_line}",
        f"  pages        http://127.0.0.1:{port}/ui/   (sign in with "
        + ("that key)" if key is not None else "a key with the read right)"),
        f"  Flower       http://127.0.0.1:{flower_port}   (user {flower_user}, password in {flower_where})",
    ]
    local = f"embedded under {var}"
    redis_from = local if not given.get("REDIS_URL") and env.get("REDIS_URL") else "REDIS_URL"
    broker = env.get("CELERY_BROKER_URL", "")
    lines.append(f"  database     {'DATABASE_URL' if given.get('DATABASE_URL') else local}")
    if is_rabbitmq(broker):
        vhost = unquote(urlsplit(broker).path[1:]) or "/"
        lines.append(f"  broker       RabbitMQ, CELERY_BROKER_URL (virtual host {vhost})")
        lines.append(f"  Redis        {redis_from}   (stash, caches, rate limits)")
    else:
        lines.append(f"  broker       Redis, {'CELERY_BROKER_URL' if broker else redis_from}")
    if env.get(ROOT_NOTED_ENV) == "1":
        lines.append(
            "  as root      the workers run as root too, which Celery advises against (said here once, not by "
            "each worker); a service runs them as an account of its own (docs/processes.md, systemd)"
        )
    if key is not None:
        lines.append(
            f"""  try          curl -H "Authorization: Bearer {read_key}" http://127.0.0.1:{port}/api/v1/record-types"""
        )
    return lines


def _default_procfile() -> str:
    """./Procfile, else the checkout's (``etl-app run`` from another folder)."""
    root = project_dir()
    if os.path.isfile("Procfile") or root is None:
        return "Procfile"
    return os.path.join(root, "Procfile")


@click.command()
@click.option(
    "--procfile",
    default=_default_procfile,
    show_default="./Procfile, else the checkout's",
    type=click.Path(exists=True, dir_okay=False),
)
def run(procfile: str) -> None:
    """Migrate, then run every process of the Procfile but release (web, the pipeline, lookups
    and dead-letter workers, beat, Flower) in the foreground; one that exits is started again
    (after 1 s, doubling up to 30 s), the others keep running. Ctrl-C stops them all.

    With no DATABASE_URL / REDIS_URL set, an embedded PostgreSQL and Redis are started
    under the var folder (ETL_VAR_DIR, else ``var`` in the checkout) and stopped again on exit.
    The processes run in the Procfile's folder (its lines name files of the checkout)."""
    from etl_app.local.errors import EmbeddedServiceError
    from etl_app.local.supervisor import Supervisor, procfile_commands, restarts_path
    from etl_app.migrate import upgrade

    try:
        commands = procfile_commands(Path(procfile), PROCESSES)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None

    var = Path(var_dir())
    var.mkdir(parents=True, exist_ok=True)
    given = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        given[ROOT_NOTED_ENV] = "1"  # the banner says it; the workers do not repeat it
    try:
        env, embedded = prepare_environment(given, var)
    except EmbeddedServiceError as exc:  # it says why and where the server's log is
        raise click.ClickException(str(exc)) from None
    try:
        upgrade(env["DATABASE_URL"])
        for line in banner(env, var, given=os.environ):
            click.echo(line)
        # until Ctrl-C, SIGTERM or SIGHUP has stopped every process; then the embedded servers stop
        workdir = Path(procfile).resolve().parent
        Supervisor(commands, env=env, cwd=workdir, restarts_file=restarts_path(env)).run()
    finally:
        if embedded is not None:
            Path(embedded_env_path(env)).unlink(missing_ok=True)
            embedded.stop()
