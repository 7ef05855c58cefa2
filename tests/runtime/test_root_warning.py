"""Under `etl-app run` as root, the banner says once that the workers run as root and the workers
skip Celery's superuser warning (each of the three printed it); started another way they keep it."""

from __future__ import annotations

import warnings

import pytest
from celery.platforms import check_privileges
from celery.signals import celeryd_init

import etl_app.runtime.celery_app  # noqa: F401  (connects its worker signals)


def superuser_warnings(monkeypatch, **env: str) -> list[str]:
    """What a worker's start warns of, as root, with ``env`` (celeryd_init, then Celery's check)."""
    monkeypatch.delenv("ETL_ROOT_NOTED", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("os.getuid", lambda: 0)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        celeryd_init.send(sender="etl@host", instance=None, conf=None, options={})
        check_privileges({"json"})
    return [str(w.message) for w in caught if "superuser" in str(w.message)]


@pytest.mark.unit
def test_a_worker_under_etl_app_run_as_root_does_not_repeat_the_banners_warning(monkeypatch):
    assert superuser_warnings(monkeypatch, ETL_ROOT_NOTED="1") == []


@pytest.mark.unit
def test_a_worker_started_another_way_as_root_keeps_celerys_warning(monkeypatch):
    [said] = superuser_warnings(monkeypatch)
    assert "You're running the worker with superuser privileges" in said
