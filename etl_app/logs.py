"""Logging, configured in one place for every process (web, worker, beat, commands).

``ETL_LOG_FORMAT=json`` writes one JSON object per line (time, level, logger, message, and when
known ingestion_id, record_type, task_id, task_name, request_id); anything else is plain text.
``ETL_LOG_LEVEL`` (default INFO) is the root logger's level. :func:`configure` is called by the
app factory, by Celery's ``setup_logging`` signal (worker and beat) and, for gunicorn's own error
and access logs, by :class:`GunicornLogger` (the Procfile's ``--logger-class``).

No secret reaches a log line: every line is masked by :class:`SecretMasker`, which replaces the
password of any ``scheme://user:password@`` URL and every known secret value (the API and metrics
keys, FLOWER_BASIC_AUTH, the passwords of DATABASE_URL, REDIS_URL and CELERY_BROKER_URL, and
anything passed to :func:`add_secrets`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

FORMAT_ENV = "ETL_LOG_FORMAT"
LEVEL_ENV = "ETL_LOG_LEVEL"
CONTEXT_FIELDS = ("ingestion_id", "record_type", "task_id", "task_name", "request_id")
MASK = "***"
# The settings whose values are secrets (comma-separated lists) or URLs that may carry a password.
SECRET_ENV = ("ETL_API_KEYS", "ETL_METRICS_KEY", "FLOWER_BASIC_AUTH")
URL_ENV = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words

_context: ContextVar[Mapping[str, Any]] = ContextVar("etl_log_context", default=MappingProxyType({}))


# -- context --------------------------------------------------------------------------------------


def bind(**fields: Any) -> Token:
    """Add fields (None ones are left out) to this context's log lines; :func:`unbind` the token."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: Token) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


# Whether this process may run a Celery task: not a gunicorn process (GunicornLogger.setup), which
# only sends them; asking Celery costs an exception caught in every line of a web process.
tasks_run_here = True


def current_fields() -> dict[str, Any]:
    """The context fields of a line logged now: bound ones, and the Celery task being run."""
    fields = dict(_context.get())
    task = _current_task() if tasks_run_here else None
    if task is not None:
        request = getattr(task, "request", None)
        task_id = getattr(request, "id", None)
        if task_id:
            fields.setdefault("task_id", task_id)
            fields.setdefault("task_name", task.name)
    return fields


def _current_task() -> Any:
    celery_state = sys.modules.get("celery._state")  # only where Celery is loaded
    return celery_state.get_current_task() if celery_state is not None else None


# -- secrets --------------------------------------------------------------------------------------

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s/]+@")


class SecretMasker:
    """Masks URL passwords and known secret values in text."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str | None]) -> None:
        new = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
        with self._lock:
            if new <= self._secrets:
                return
            self._secrets = self._secrets | new
            ordered = sorted(self._secrets, key=len, reverse=True)  # longest first: no half-masked values
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def mask(self, text: str) -> str:
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text


masker = SecretMasker()


def url_secrets(url: str | None) -> list[str]:
    """The password of a URL (as written and decoded), if it has one."""
    try:
        password = urlsplit(url or "").password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def entry_secrets(entries: Iterable[str], *, secret_side: str = "head") -> list[str]:
    """Entries of a secret list, whole and their secret side of a colon: the head of an API key
    entry ``key:role``, the tail (``secret_side="tail"``) of a basic-auth ``user:password``."""
    values: list[str] = []
    for entry in entries:
        entry = entry.strip()
        values.append(entry)
        if ":" in entry:
            values.append(entry.rpartition(":")[0] if secret_side == "head" else entry.partition(":")[2])
    return values


def secrets_from_env(env: Mapping[str, str]) -> list[str]:
    values: list[str] = []
    for name in SECRET_ENV:
        side = "tail" if name == "FLOWER_BASIC_AUTH" else "head"
        values += entry_secrets(env.get(name, "").split(","), secret_side=side)
    for name in URL_ENV:
        values += url_secrets(env.get(name))
    return values


def add_secrets(*values: str | None) -> None:
    """Values never to be written to a log (URLs are reduced to their password)."""
    for value in values:
        if value and "://" in value:
            masker.add(url_secrets(value))
        else:
            masker.add([value])


class SecretFilter(logging.Filter):
    """Masks the rendered message of a record (for handlers whose formatter is not ours)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = masker.mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


# -- formatters -----------------------------------------------------------------------------------


class PerSecond:
    """``text(second)`` for the whole second of a timestamp, worked out once a second: a log
    line's time (to the millisecond, the rest added) and an answer's Date are written to the
    second, and formatting a time costs more than the rest of a short line."""

    def __init__(self, text: Callable[[int], str]) -> None:
        self._text = text
        self._cached: tuple[int, str] = (-1, "")  # one tuple: read and replaced whole, by any thread

    def __call__(self, timestamp: float) -> str:
        second = int(timestamp)
        cached = self._cached
        if cached[0] != second:
            cached = (second, self._text(second))
            self._cached = cached
        return cached[1]


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = current_fields()
    for name in CONTEXT_FIELDS:  # extra={"ingestion_id": ...} wins over the context
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; every string in it masked."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": masker.mask(record.getMessage()),
            "process": record.process,
        }
        for name, value in _fields_of(record).items():
            data[name] = masker.mask(value) if isinstance(value, str) else value
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            atoms = record.args  # gunicorn's access-log atoms: the request line's parts
            data["http"] = {
                "method": atoms.get("m"),
                "path": masker.mask(str(atoms.get("U", ""))),
                "status": atoms.get("s"),
                "duration_ms": round(int(atoms.get("D", 0)) / 1000, 1),
            }
        if record.exc_info:
            data["exc_info"] = masker.mask(self.formatException(record.exc_info))
        if record.stack_info:
            data["stack_info"] = masker.mask(self.formatStack(record.stack_info))
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    """gunicorn's layout plus the logger name and the context fields; masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
        self._seconds = PerSecond(lambda second: time.strftime(self.default_time_format, self.converter(second)))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own time (``2026-01-02 03:04:05,678``), its seconds part worked out once a second."""
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.default_msec_format % (self._seconds(record.created), record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields_of(record)
        if fields:
            head, sep, tail = line.partition("\n")  # after the message, before any traceback
            line = head + " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" + sep + tail
        return masker.mask(line)


def json_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(FORMAT_ENV, "").strip().lower() == "json"


def formatter(env: Mapping[str, str] | None = None) -> logging.Formatter:
    return JsonFormatter() if json_enabled(env) else TextFormatter()


def level(default: str | int | None = None, env: Mapping[str, str] | None = None) -> int:
    """ETL_LOG_LEVEL, else ``default`` (e.g. celery's --loglevel), else INFO."""
    env = os.environ if env is None else env
    raw = env.get(LEVEL_ENV, "").strip() or default or "INFO"
    if isinstance(raw, int):
        return raw
    value = logging.getLevelName(raw.upper())
    if not isinstance(value, int):
        raise ValueError(f"{LEVEL_ENV} must be a logging level (DEBUG, INFO, WARNING, ERROR): {raw!r}")
    return value


# -- configuration --------------------------------------------------------------------------------


class _Handler(logging.StreamHandler):
    """The root handler :func:`configure` installs (found again by its class)."""


def configure(default_level: str | int | None = None) -> logging.Handler:
    """Install (or update) the root handler: stderr, the chosen format, masked; the root level
    from ETL_LOG_LEVEL. Idempotent: called again it reconfigures the same handler."""
    masker.add(secrets_from_env(os.environ))
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _Handler)), None)
    if handler is None:
        handler = _Handler(sys.stderr)
        handler.addFilter(SecretFilter())
        root.addHandler(handler)
    handler.setFormatter(formatter())
    root.setLevel(level(default_level))
    logging.captureWarnings(True)
    return handler


try:  # gunicorn is only importable where it is installed (it is a dependency of the service)
    from gunicorn import glogging
except ImportError:  # pragma: no cover
    glogging = None

if glogging is not None:

    def _escaped(value: Any) -> Any:
        return value.replace('"', '\\"') if isinstance(value, str) else value

    class _SafeOnRead(glogging.SafeAtoms):
        """gunicorn's SafeAtoms (a missing atom reads ``-``, a ``"`` in a string reads ``\\"``),
        each atom escaped when the line reads it instead of every atom beforehand."""

        def __init__(self, atoms: Mapping[str, Any]) -> None:
            dict.__init__(self, atoms)

        def __getitem__(self, key: str) -> Any:
            return _escaped(super().__getitem__(key))

        def get(self, key: str, default: Any = None) -> Any:
            return _escaped(dict.get(self, key, default))

    class GunicornLogger(glogging.Logger):
        """gunicorn's error and access logs in the same format as the app's, masked.

        The access log line is gunicorn's (``access_log_format``); it holds no request header
        but the Referer and User-Agent, so no Authorization value is ever written."""

        atoms_wrapper_class = _SafeOnRead

        def setup(self, cfg: Any) -> None:
            """Also: the web process's log records name no thread (no line of ours shows one):
            each connection is a greenlet of its own, and naming it made a dummy Thread object
            for every request's access line; and its lines name no Celery task, as it runs none."""
            global tasks_run_here
            super().setup(cfg)
            logging.logThreads = False
            logging.logMultiprocessing = False
            tasks_run_here = False
            masker.add(secrets_from_env(os.environ))
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:  # no SecretFilter: this formatter masks the whole line
                    handler.setFormatter(formatter())

        _now = PerSecond(lambda second: time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second)))

        def now(self) -> str:
            """gunicorn's ``%(t)s`` (``[02/Jan/2026:03:04:05 +0000]``), worked out once a second."""
            return self._now(time.time())

        def atoms(self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: Any) -> dict[str, Any]:
            """gunicorn's atoms; when the format names no header or environ atom (``{name}i``,
            ``{name}o``, ``{name}e``: the default format names none), computed from the request
            line, the status, the length and the timing alone. gunicorn adds an atom for every
            request header, answer header and WSGI environ variable of every request, and its
            access line then cost more web CPU than a no-op request's view; the atoms the line
            shows are the same (gunicorn's own code computes them, from these fields)."""
            if "{" in self.cfg.access_log_format:
                return super().atoms(resp, req, environ, request_time)
            light = {k: environ[k] for k in _ACCESS_ENVIRON if k in environ}
            answer = _AccessAnswer(resp.status, getattr(resp, "sent", None))
            return super().atoms(answer, _NO_HEADERS, light, request_time)

    class _AccessAnswer:
        """What gunicorn's access atoms read of an answer, without its headers."""

        __slots__ = ("headers", "sent", "status")

        def __init__(self, status: Any, sent: Any) -> None:
            self.status, self.sent, self.headers = status, sent, ()

    class _NoHeaders:
        """A request without headers, for gunicorn's access atoms."""

        headers = ()

    _NO_HEADERS = _NoHeaders()
    # The WSGI environ variables gunicorn's atoms read (glogging.Logger.atoms and _get_user).
    _ACCESS_ENVIRON = (
        "REMOTE_ADDR",
        "REQUEST_METHOD",
        "RAW_URI",
        "SERVER_PROTOCOL",
        "PATH_INFO",
        "QUERY_STRING",
        "HTTP_REFERER",
        "HTTP_USER_AGENT",
        "HTTP_AUTHORIZATION",
    )
