"""`etl-app run` refuses a Procfile that lacks one of its processes before it starts anything."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from etl_app.cli import main


@pytest.mark.unit
def test_run_names_the_processes_the_procfile_has_no_line_for(tmp_path, monkeypatch):
    monkeypatch.setenv("ETL_VAR_DIR", str(tmp_path / "var"))
    procfile = tmp_path / "Procfile"
    procfile.write_text("release: etl-app migrate\nweb: gunicorn wsgi:app\nbeat: celery -A wsgi:celery beat\n")
    result = CliRunner().invoke(main, ["run", "--procfile", str(procfile)])
    assert result.exit_code == 1
    assert f"{procfile} has no line for worker, lookups, dead_letter, flower" in result.output
    assert not (tmp_path / "var").exists()  # no embedded server, no key generated
