"""etl_app.logs: JSON lines, context fields, levels, and secrets masked in every line."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from etl_app import logs

pytestmark = pytest.mark.unit


def record(message: str, *args, level=logging.INFO, name="etl_app.test", exc_info=None, **extra):
    rec = logging.LogRecord(name, level, __file__, 1, message, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_json_line_has_time_level_logger_message_and_the_bound_context():
    with logs.bound(ingestion_id="ing-1", record_type="tutors", request_id="req-1"):
        line = logs.JsonFormatter().format(record("stored %d records", 3))
    data = orjson.loads(line)
    assert "\n" not in line
    assert data["level"] == "INFO" and data["logger"] == "etl_app.test" and data["message"] == "stored 3 records"
    assert data["time"].endswith("+00:00")
    assert (data["ingestion_id"], data["record_type"], data["request_id"]) == ("ing-1", "tutors", "req-1")
    outside = orjson.loads(logs.JsonFormatter().format(record("later")))
    assert "ingestion_id" not in outside


def test_a_traceback_stays_inside_the_one_json_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        line = logs.JsonFormatter().format(record("failed", level=logging.ERROR, exc_info=sys.exc_info()))
    assert "\n" not in line
    assert "RuntimeError: boom" in orjson.loads(line)["exc_info"]


def test_the_celery_task_being_run_is_on_the_line(monkeypatch):
    class Request:
        id = "task-123"

    class Task:
        name = "etl.validate"
        request = Request()

    monkeypatch.setattr(logs, "_current_task", lambda: Task())
    data = orjson.loads(logs.JsonFormatter().format(record("validated")))
    assert (data["task_id"], data["task_name"]) == ("task-123", "etl.validate")
    assert "task_id=task-123" in logs.TextFormatter().format(record("validated"))


@pytest.mark.parametrize(
    "text",
    [
        "connection to postgresql://etl:s3cr3t-pw@db.internal:5432/etl failed",
        "broker redis://:s3cr3t-pw@127.0.0.1:6379/0 unreachable",
        "broker redis://default:s3cr3t-pw@127.0.0.1:6379/0 unreachable",
        "DSN postgresql+psycopg://etl:s3cr3t-pw@host/db",
    ],
)
def test_the_password_of_any_url_is_masked(text):
    masked = logs.masker.mask(text)
    assert "s3cr3t-pw" not in masked and ":***@" in masked


def test_known_secret_values_are_masked_everywhere_in_a_line():
    env = {
        "ETL_API_KEYS": "key-one-abcdef,key-two-ghijkl:read",
        "ETL_METRICS_KEY": "metrics-key-xyz",
        "FLOWER_BASIC_AUTH": "admin:flower-pass-123",
        "DATABASE_URL": "postgresql://etl:db%40pass@host/db",
    }
    logs.masker.add(logs.secrets_from_env(env))
    message = "keys key-one-abcdef key-two-ghijkl metrics-key-xyz admin:flower-pass-123 pass db@pass"
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        line = formatter.format(record("%s", message, request_id="key-one-abcdef"))
        for secret in ("key-one-abcdef", "key-two-ghijkl", "metrics-key-xyz", "flower-pass-123", "db@pass"):
            assert secret not in line
    # a role or a user name is no secret
    assert "read" in logs.masker.mask("read") and "admin" in logs.masker.mask("admin")


def test_the_filter_masks_records_for_handlers_with_other_formatters():
    logs.add_secrets("filter-secret-value")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.SecretFilter())
    logger = logging.getLogger("etl_app.test.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("key %s at %s", "filter-secret-value", "redis://u:pw12@h/0")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().strip() == "key *** at redis://u:***@h/0"


def test_configure_sets_the_root_level_and_format_from_the_environment(monkeypatch):
    root = logging.getLogger()
    before = root.level
    monkeypatch.setenv("ETL_LOG_FORMAT", "json")
    monkeypatch.setenv("ETL_LOG_LEVEL", "warning")
    try:
        handler = logs.configure()
        assert root.level == logging.WARNING
        assert isinstance(handler.formatter, logs.JsonFormatter)
        assert logs.configure() is handler  # idempotent: one handler
        monkeypatch.delenv("ETL_LOG_FORMAT")
        monkeypatch.delenv("ETL_LOG_LEVEL")
        logs.configure("DEBUG")  # celery's --loglevel applies when ETL_LOG_LEVEL is not set
        assert root.level == logging.DEBUG and isinstance(handler.formatter, logs.TextFormatter)
    finally:
        root.removeHandler(handler)
        root.setLevel(before)


def test_a_bad_log_level_is_refused():
    with pytest.raises(ValueError, match="ETL_LOG_LEVEL"):
        logs.level(env={"ETL_LOG_LEVEL": "chatty"})
