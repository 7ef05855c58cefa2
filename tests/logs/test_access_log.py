"""gunicorn's access log through etl_app.logs.GunicornLogger: the same line as gunicorn's own,
from the atoms the format names, masked by the formatter."""

from __future__ import annotations

import io
import logging
import time
from datetime import timedelta
from types import SimpleNamespace

import orjson
import pytest
from gunicorn import glogging
from gunicorn.config import Config

from etl_app import logs

pytestmark = pytest.mark.unit

EVERY_PLAIN_ATOM = " ".join(f"%({a})s" for a in "h l u t r s m U q H b B f a T D M L p".split())
SECRET = "access-log-secret-key"


@pytest.fixture(autouse=True)
def _logging_flags(monkeypatch):
    """A GunicornLogger turns logging's thread names off for the process: on again after each test."""
    monkeypatch.setattr(logging, "logThreads", logging.logThreads)
    monkeypatch.setattr(logging, "logMultiprocessing", logging.logMultiprocessing)
    monkeypatch.setattr(logs, "tasks_run_here", logs.tasks_run_here)


def _logger(access_log_format: str | None = None) -> logs.GunicornLogger:
    cfg = Config()
    cfg.set("accesslog", "-")
    if access_log_format is not None:
        cfg.set("access_log_format", access_log_format)
    return logs.GunicornLogger(cfg)


def _request(path: str = "/api/v1/_noop", authorization: str = f"Bearer {SECRET}"):
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"{path}?x=1",
        "PATH_INFO": path,
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.1.2.3",
        "HTTP_REFERER": 'https://example.org/"quoted"',
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_AUTHORIZATION": authorization,
        "HTTP_X_REQUEST_ID": "rid-1",
        "wsgi.url_scheme": "http",
    }
    req = SimpleNamespace(headers=[("AUTHORIZATION", authorization), ("X-REQUEST-ID", "rid-1")])
    resp = SimpleNamespace(status="202 ACCEPTED", sent=27, headers=[("Content-Type", "application/json")])
    return resp, req, environ, timedelta(seconds=1, microseconds=2345)


def _line(logger: glogging.Logger, fmt: str, atoms: dict) -> str:
    line = fmt % glogging.SafeAtoms(atoms)
    return line[: line.index("[")] + line[line.index("]") :] if "%(t)s" in fmt else line  # the time moves


@pytest.mark.parametrize("fmt", [None, EVERY_PLAIN_ATOM])
def test_the_line_is_gunicorns_own(fmt):
    logger = _logger(fmt)
    fmt = logger.cfg.access_log_format
    for authorization in (f"Bearer {SECRET}", "Basic dXNlcjpwYXNz"):  # %(u)s: the basic-auth user
        args = _request(authorization=authorization)
        assert _line(logger, fmt, logger.atoms(*args)) == _line(logger, fmt, glogging.Logger.atoms(logger, *args))


def test_a_format_naming_a_header_or_environ_atom_gets_every_atom():
    fmt = '%(h)s "%(r)s" %({x-request-id}i)s %({content-type}o)s %({wsgi.url_scheme}e)s'
    logger = _logger(fmt)
    args = _request()
    atoms = glogging.SafeAtoms(logger.atoms(*args))
    assert fmt % atoms == '10.1.2.3 "POST /api/v1/_noop?x=1 HTTP/1.1" rid-1 application/json http'


@pytest.mark.parametrize("json_format", [False, True])
def test_the_written_line_is_masked(monkeypatch, json_format):
    if json_format:
        monkeypatch.setenv("ETL_LOG_FORMAT", "json")
    logs.add_secrets(SECRET)
    logger = _logger()
    stream = io.StringIO()
    for handler in logger.access_log.handlers:
        handler.setStream(stream)
    logger.access(*_request(path=f"/api/v1/{SECRET}"))
    line = stream.getvalue().splitlines()[-1]
    assert SECRET not in line and "/api/v1/***" in line
    if json_format:
        entry = orjson.loads(line)
        assert entry["logger"] == "gunicorn.access"
        assert entry["http"] == {"method": "POST", "path": "/api/v1/***", "status": "202", "duration_ms": 1002.3}
    else:
        assert '"POST /api/v1/***?x=1 HTTP/1.1" 202 27' in line and "gunicorn.access" in line
    assert all(isinstance(h, logging.StreamHandler) for h in logger.access_log.handlers)


def test_times_formatted_once_a_second_are_those_logging_and_gunicorn_write(monkeypatch):
    plain = logging.Formatter("%(asctime)s")
    ours = logs.TextFormatter()
    logger = _logger()
    for created in (1700000000.0, 1700000000.123, 1700000000.999, 1700000001.5, 1700003600.25):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        assert ours.formatTime(record) == plain.formatTime(record)
        assert ours.formatTime(record, "%H:%M") == plain.formatTime(record, "%H:%M")
        monkeypatch.setattr("time.time", lambda created=created: created)
        assert logger.now() == time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(created))
    monkeypatch.undo()
    # gunicorn's own, read now (twice at most: a second may turn between the two)
    assert any(logger.now() == glogging.Logger.now(logger) for _ in range(2))


def test_the_per_second_text_changes_with_the_second():
    seen: list[int] = []
    text = logs.PerSecond(lambda second: seen.append(second) or str(second))
    assert [text(t) for t in (10.1, 10.9, 11.0, 10.5)] == ["10", "10", "11", "10"]
    assert seen == [10, 11, 10]


def test_the_web_process_records_name_no_thread():
    logging.logThreads = logging.logMultiprocessing = True  # restored by _logging_flags
    _logger()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    assert (record.thread, record.threadName, record.processName) == (None, None, None)
    assert record.process  # the pid stays: every line shows it


def test_a_web_process_does_not_ask_celery_for_a_task(monkeypatch):
    monkeypatch.setattr(logs, "_current_task", lambda: pytest.fail("asked"))
    _logger()
    with logs.bound(request_id="r-1"):
        assert logs.current_fields() == {"request_id": "r-1"}


def test_atoms_escaped_on_read_read_as_gunicorns_safe_atoms():
    logger = _logger("%(h)s %({x-request-id}i)s")
    atoms = glogging.Logger.atoms(logger, *_request())  # every atom, headers and environ included
    ours, theirs = logger.atoms_wrapper_class(atoms), glogging.SafeAtoms(atoms)
    keys = [*atoms, "{X-Request-ID}i", "{missing}i", "zz", "f"]
    assert [ours[k] for k in keys] == [theirs[k] for k in keys]
    assert [ours.get(k) for k in keys] == [theirs.get(k) for k in keys]
    assert ours["f"] == 'https://example.org/\\"quoted\\"'


def test_the_text_line_escapes_quotes_as_gunicorn_does():
    logger = _logger()
    stream = io.StringIO()
    for handler in logger.access_log.handlers:
        handler.setStream(stream)
    logger.access(*_request())
    assert '"https://example.org/\\"quoted\\"" "bench/1.0"' in stream.getvalue().splitlines()[-1]
