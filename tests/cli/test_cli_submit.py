"""``etl-app submit``: against a small local server that implements the upload and ingestion contract."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from etl_app.cli import main
from etl_app.config import var_dir

ROOT = Path(__file__).resolve().parents[2]
ETL_APP = Path(sys.executable).parent / "etl-app"

KEY = "submit-test-key"
QUALITY = {
    "received": 5,
    "accepted": 4,
    "rejected": 1,
    "validity": 0.8,
    "completeness": {"engagement_score": 0.75, "overall": 0.6321, "session_id": 1.0},  # jsonb's order
    "uniqueness": 1.0,
    "integrity": 0.75,
    "timeliness": {"p50": 3600.0, "p95": 90000.0, "max": 172800.0},
    "score": 0.8123,
    "level": "fair",
    "top_errors": [{"field": "duration_minutes", "message": "Must be between 5 and 480.", "count": 1}],
}

BUSY = {
    "error": "backlog_full",
    "message": "the service is busy: 1200 records are waiting to be processed, over the bound of 1000",
}


class FakeService:
    """``POST /api/v1/<type>/upload`` answers ``upload_status`` (202 with an id, or an error body);
    ``GET /api/v1/ingestions/<id>`` walks through ``states`` (the last one repeats)."""

    def __init__(self) -> None:
        self.ingestion_id = str(uuid.uuid4())
        self.upload_status = 202
        self.upload_error = {"error": "too_large", "message": "the file is over the 200 MB upload limit"}
        self.states: list[dict[str, Any]] = []
        self.keep_body = True
        self.uploads: list[dict[str, Any]] = []
        self.gets = 0
        self.auth: list[str | None] = []
        self.busy = 0  # uploads answered 429 backlog_full (Retry-After: retry_after) before the others
        self.retry_after = "1"
        # what the first uploads get before the others are answered: a status, or "drop" (the
        # connection closed with no answer, as when the service died after storing the file)
        self.failures: list[int | str] = []

    def body(self, status: str, progress: float, rows: int, counts: dict[str, int], **kw: Any) -> dict[str, Any]:
        full = {"received": 0, "persisted": 0, "dead": 0, "rejected": 0, "in_flight": 0, **counts}
        return {
            "id": self.ingestion_id,
            "record_type": "sessions",
            "source": "upload",
            "status": status,
            "counts": full,
            "quality": kw.pop("quality", None),
            "created_at": "2026-11-30T10:00:00Z",
            "finished_at": None if status == "running" else "2026-11-30T10:00:05Z",
            "upload": {
                "filename": "sessions.csv",
                "format": "csv",
                "note": None,
                "size": 1234,
                "status": kw.pop("upload_status", "parsed" if progress >= 1 else "parsing"),
                "rows_read": rows,
                "progress": progress,
                "error": kw.pop("error", None),
            },
        }

    def handler(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                service.auth.append(self.headers.get("Authorization"))
                length = int(self.headers["Content-Length"])  # a known length: streamed, not chunked
                digest, kept, left = hashlib.sha256(), [], length
                while left:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    left -= len(chunk)
                    digest.update(chunk)
                    if service.keep_body:
                        kept.append(chunk)
                service.uploads.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "length": length,
                        "body": b"".join(kept),
                        "idempotency_key": self.headers.get("Idempotency-Key"),
                    }
                )
                if len(service.uploads) <= service.busy:
                    self._answer(429, BUSY, {"Retry-After": service.retry_after})
                    return
                if service.failures:
                    failure = service.failures.pop(0)
                    if failure == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self._answer(int(failure), {"error": "internal_error", "message": "failed"})
                    return
                if service.upload_status != 202:
                    self._answer(service.upload_status, service.upload_error)
                    return
                upload = {"filename": "sessions.csv", "format": "csv", "size": length, "note": None}
                self._answer(202, {"ingestion_id": service.ingestion_id, "upload": upload})

            def do_GET(self) -> None:
                service.auth.append(self.headers.get("Authorization"))
                if self.path != f"/api/v1/ingestions/{service.ingestion_id}":
                    self._answer(404, {"error": "not_found", "message": "no such ingestion"})
                    return
                state = service.states[min(service.gets, len(service.states) - 1)]
                service.gets += 1
                self._answer(200, state)

        return Handler


@pytest.fixture
def service() -> Iterator[tuple[FakeService, str]]:
    fake = FakeService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def cli(url: str, tmp_path: Path, *args: str, key: str | None = KEY):
    env = {"ETL_API_URL": url, "ETL_VAR_DIR": str(tmp_path / "var"), "COLUMNS": "200", "ETL_API_KEY": key}
    return CliRunner().invoke(main, ["submit", *args], env=env)


def file_part(upload: dict[str, Any]) -> tuple[str, bytes]:
    """The multipart part named ``file``: its Content-Disposition header and its bytes."""
    boundary = upload["content_type"].split("boundary=")[1].encode()
    for part in upload["body"].split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return head.decode(), data[: -len(b"\r\n")]
    raise AssertionError("no file part")


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    target = tmp_path / "sessions.csv"
    result = CliRunner().invoke(main, ["generate", "sessions", "--count", "5", "--seed", "4", "-o", str(target)])
    assert result.exit_code == 0, result.output
    return target


def finishing(fake: FakeService) -> None:
    fake.states = [
        fake.body("running", 0.0, 0, {}),
        fake.body("running", 0.5, 3, {"received": 3, "persisted": 1, "in_flight": 2}),
        fake.body("finished", 1.0, 5, {"received": 4, "persisted": 4, "rejected": 1}, quality=QUALITY),
    ]


def test_submit_follow_uploads_the_file_and_prints_counts_and_quality(service, csv_file, tmp_path):
    fake, url = service
    finishing(fake)
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--follow", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    upload = fake.uploads[0]
    assert upload["path"] == "/api/v1/sessions/upload"
    head, data = file_part(upload)
    assert data == csv_file.read_bytes()
    assert 'filename="sessions.csv"' in head and "text/csv" in head
    assert set(fake.auth) == {f"Bearer {KEY}"}
    assert fake.gets == 3
    out = result.stdout
    assert fake.ingestion_id in out
    assert "finished" in out and "file parsed" in out and "records settled" in out
    assert "5 of 5" in out  # every row read has settled: 4 persisted + 1 rejected
    counts_line = next(line for line in out.splitlines() if line.count("│") >= 5 and "4" in line)
    assert [cell.strip() for cell in counts_line.split("│")[1:6]] == ["4", "4", "0", "1", "0"]
    assert "0.8123" in out and "fair" in out
    assert "80.00%" in out and "63.21%" in out and "75.00%" in out  # validity, completeness, a field
    assert out.index("│ session_id") < out.index("│ engagement_score")  # fields in the schema's order
    assert "1h 0m" in out and "1d 1h" in out and "2d 0h" in out  # timeliness p50, p95, max
    errors_line = next(line for line in out.splitlines() if "Must be between 5 and 480." in line)
    assert "duration_minutes" in errors_line and errors_line.rstrip(" │").endswith("1")


def test_without_follow_it_prints_the_id_and_reads_the_key_run_wrote(service, csv_file, tmp_path):
    fake, url = service
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "api_key").write_text("generated-by-run\n")
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", key=None)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == fake.ingestion_id
    assert fake.auth == ["Bearer generated-by-run"] and fake.gets == 0


def test_a_refused_upload_exits_1_with_the_servers_message(service, csv_file, tmp_path):
    fake, url = service
    fake.upload_status = 413
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--follow")
    assert result.exit_code == 1
    assert "HTTP 413 (too_large): the file is over the 200 MB upload limit" in result.stderr
    assert fake.gets == 0


def test_a_busy_service_is_waited_for_as_it_asks_then_the_file_is_sent_again(service, csv_file, tmp_path):
    fake, url = service
    fake.busy = 2
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == fake.ingestion_id
    assert len(fake.uploads) == 3
    assert file_part(fake.uploads[2])[1] == csv_file.read_bytes()  # sent whole again, from its start
    assert result.stderr.count("HTTP 429 (backlog_full): the service is busy: 1200 records are waiting") == 2
    assert "waiting 1 s before sending the file again (0 s waited so far, at most 600 s: --max-wait)" in result.stderr
    assert "(1 s waited so far" in result.stderr


def test_a_service_busy_past_max_wait_exits_1_with_its_message(service, csv_file, tmp_path):
    fake, url = service
    fake.busy = 100
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--max-wait", "2")
    assert result.exit_code == 1
    assert len(fake.uploads) == 3  # at once, after 1 s, after 2 s
    assert "upload refused: HTTP 429 (backlog_full): the service is busy" in result.stderr
    assert "gave up after waiting 2 s: --max-wait" in result.stderr
    never = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--max-wait", "0")
    assert never.exit_code == 1 and "gave up after waiting 0 s" in never.stderr


def test_a_failed_upload_exits_1_and_shows_why(service, csv_file, tmp_path):
    fake, url = service
    fake.states = [
        fake.body("running", 0.2, 0, {}),
        fake.body("failed", 0.2, 0, {}, upload_status="failed", error="row 3: not valid UTF-8"),
    ]
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--follow", "--interval", "0.05")
    assert result.exit_code == 1
    assert "failed" in result.stdout and "row 3: not valid UTF-8" in result.stdout
    assert f"ingestion {fake.ingestion_id} failed: row 3: not valid UTF-8" in result.stderr


def test_json_prints_the_final_ingestion(service, csv_file, tmp_path):
    fake, url = service
    finishing(fake)
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--follow", "--json", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == fake.states[-1] and result.stdout.count("\n") == 1

    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--json")
    assert json.loads(result.stdout)["ingestion_id"] == fake.ingestion_id
    assert result.stdout.count("\n") == 1  # one line, as docs/uploads.md shows: a script reads it line by line


def test_usage_errors_exit_2(service, csv_file, tmp_path):
    fake, url = service
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", key=None)
    assert result.exit_code == 2 and "no API key" in result.stderr
    result = cli(url, tmp_path, str(tmp_path / "missing.csv"), "--type", "sessions")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = cli(url, tmp_path, str(csv_file), "--type", "lessons")
    assert result.exit_code == 2
    assert fake.uploads == []


def test_an_unreachable_service_exits_1_after_its_retries_naming_the_key_to_send_again(csv_file, tmp_path):
    result = cli("http://127.0.0.1:9", tmp_path, str(csv_file), "--type", "sessions", "--retries", "1")
    assert result.exit_code == 1 and "could not reach http://127.0.0.1:9" in result.stderr
    assert result.stderr.count("sending it again") == 1 and "try 2 of 2" in result.stderr
    assert "run it again with --idempotency-key " in result.stderr


def test_a_lost_answer_or_a_5xx_is_sent_again_with_the_same_key(service, csv_file, tmp_path):
    fake, url = service
    fake.failures = ["drop", 503, 500]
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == fake.ingestion_id
    keys = [u["idempotency_key"] for u in fake.uploads]
    assert len(keys) == 4 and len(set(keys)) == 1 and uuid.UUID(keys[0])  # one key, a UUID, on every try
    assert all(file_part(u)[1] == csv_file.read_bytes() for u in fake.uploads)  # the whole file each time
    assert result.stderr.count("sending it again") == 3 and f"with the same Idempotency-Key {keys[0]}" in result.stderr
    # another run is another submission: a new key
    assert cli(url, tmp_path, str(csv_file), "--type", "sessions").exit_code == 0
    assert fake.uploads[-1]["idempotency_key"] not in keys


def test_the_key_can_be_given_or_left_out(service, csv_file, tmp_path):
    fake, url = service
    assert (
        cli(url, tmp_path, str(csv_file), "--type", "sessions", "--idempotency-key", "nightly-2026-12-07").exit_code
        == 0
    )
    assert fake.uploads[-1]["idempotency_key"] == "nightly-2026-12-07"
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--idempotency-key", "k", "--no-idempotency-key")
    assert result.exit_code == 2 and "exclude each other" in result.stderr


def test_without_a_key_only_what_stored_nothing_is_sent_again(service, csv_file, tmp_path):
    fake, url = service
    fake.failures = [503, 500]  # a 503 stored nothing; a 500 may have stored the file
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--no-idempotency-key")
    assert result.exit_code == 1 and "HTTP 500" in result.stderr
    assert [u["idempotency_key"] for u in fake.uploads] == [None, None]
    fake.failures = ["drop"]  # the answer lost: the file may be stored, so it is not sent again
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--no-idempotency-key")
    assert result.exit_code == 1 and len(fake.uploads) == 3


def test_ctrl_c_stops_following_and_says_how_to_look_again(service, csv_file, tmp_path, monkeypatch):
    fake, url = service
    fake.states = [fake.body("running", 0.5, 3, {"received": 3})]

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    # submit's own time module only: the process's time.sleep is every thread's (the metrics
    # flusher that an earlier test's app started would die of the interrupt)
    monkeypatch.setattr("etl_app.cli.submit.time", SimpleNamespace(sleep=interrupted))
    result = cli(url, tmp_path, str(csv_file), "--type", "sessions", "--follow")
    assert result.exit_code == 130
    assert f"etl-app status {fake.ingestion_id}" in result.stderr
    assert f"{url}/api/v1/ingestions/{fake.ingestion_id}" in result.stderr


def test_a_big_file_is_streamed_not_read_into_memory(service, tmp_path):
    fake, url = service
    fake.keep_body = False
    big = tmp_path / "big.ndjson"
    line = b'{"session_id": "x"}\n'
    with open(big, "wb") as fh:
        for _ in range(40):
            fh.write(line * 50_000)  # 40 MB in all
    tracemalloc.start()
    try:
        result = cli(url, tmp_path, str(big), "--type", "sessions")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    assert fake.uploads[0]["length"] > big.stat().st_size
    assert peak < 8 * 1024 * 1024, peak


def etl_app_elsewhere(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``etl-app`` run in ``folder`` (outside the checkout), as a user runs it from a
    shell: no ETL_VAR_DIR nor ETL_API_KEY unless ``env`` gives them."""
    base = {k: v for k, v in os.environ.items() if k not in ("ETL_VAR_DIR", "ETL_API_KEY", "ETL_API_URL")}
    return subprocess.run(
        [str(ETL_APP), *args],
        cwd=folder,
        env={**base, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert ROOT not in folder.resolve().parents
    return folder


@pytest.fixture
def checkout_key() -> Iterator[str]:
    """The key in the checkout's ``var/api_key``, as ``etl-app run`` leaves it there: the one it
    holds already, else one written for the test and removed after it."""
    path = ROOT / "var" / "api_key"
    if path.exists():
        yield path.read_text().strip().split(",")[0].split(":")[0]
        return
    made_var = not path.parent.exists()
    path.parent.mkdir(exist_ok=True)
    path.write_text("written-for-a-test\n")
    try:
        yield "written-for-a-test"
    finally:
        path.unlink(missing_ok=True)
        if made_var:
            path.parent.rmdir()


@pytest.mark.unit
def test_the_var_folder_is_the_checkouts_whatever_the_current_folder(elsewhere, monkeypatch):
    monkeypatch.delenv("ETL_VAR_DIR", raising=False)
    monkeypatch.chdir(elsewhere)
    assert var_dir() == str(ROOT / "var")
    assert var_dir({"ETL_VAR_DIR": "state"}) == str(elsewhere / "state")  # a relative one: from here


def test_submit_run_from_another_folder_finds_the_key_run_wrote_in_the_checkout(
    service, csv_file, elsewhere, checkout_key
):
    fake, url = service
    result = etl_app_elsewhere(elsewhere, "submit", str(csv_file), "--type", "sessions", "--url", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == fake.ingestion_id
    assert fake.auth == [f"Bearer {checkout_key}"]


def test_submit_from_another_folder_takes_etl_api_key_or_the_key_under_etl_var_dir(
    service, csv_file, elsewhere, tmp_path
):
    fake, url = service
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "api_key").write_text("key-under-var-dir\n")
    args = ("submit", str(csv_file), "--type", "sessions", "--url", url)
    assert etl_app_elsewhere(elsewhere, *args, ETL_VAR_DIR=str(tmp_path / "state")).returncode == 0
    assert etl_app_elsewhere(elsewhere, *args, ETL_API_KEY="key-from-env").returncode == 0
    assert fake.auth == ["Bearer key-under-var-dir", "Bearer key-from-env"]


def test_without_a_key_the_error_names_what_to_set_and_where_it_looked(service, csv_file, elsewhere, tmp_path):
    fake, url = service
    empty = tmp_path / "empty-var"
    result = etl_app_elsewhere(
        elsewhere, "submit", str(csv_file), "--type", "sessions", "--url", url, ETL_VAR_DIR=str(empty)
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "give --key or set ETL_API_KEY, or set ETL_VAR_DIR" in message
    assert f"looked for {empty / 'api_key'}, in the var folder of ETL_VAR_DIR: not found" in message
    assert fake.uploads == []
