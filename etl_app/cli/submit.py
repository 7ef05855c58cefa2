"""``etl-app submit FILE --type T [--follow] [--json]``: upload a file to the running service.

``POST {url}/api/v1/{type}/upload`` (multipart field ``file``, streamed from disk in 64 KiB
chunks: a 200 MB file is never read into memory), then with ``--follow`` polls
``GET {url}/api/v1/ingestions/{id}`` until its status is no longer ``running`` and prints the
ingestion's counts and quality report.

A busy service answers the upload 429 with ``Retry-After``: the backlog of records waiting to be
processed is over its bound (``backlog_full``), or the key is over its rate limit. The command
then says so on stderr, waits what the service asked (at least 1 s, at most what is left of
``--max-wait``, 600 s by default) and sends the file again from its start; once ``--max-wait``
seconds have passed it gives up with the service's message (exit 1).

URL: ``--url`` / ``ETL_API_URL``, else ``http://127.0.0.1:{WEB_PORT or PORT or 8000}`` (where
``etl-app run`` serves). Key: ``--key`` / ``ETL_API_KEY``, else the key ``etl-app run``
generated into ``<var>/api_key``: ``ETL_VAR_DIR``, else ``var`` in the project's checkout whatever
the current folder (``etl_app.config.var_dir``).

The upload carries an ``Idempotency-Key`` (a new UUID for each run, or ``--idempotency-key``;
none with ``--no-idempotency-key``) and is sent again, with the same key, when the service could
not be reached, did not answer or answered 5xx, 409 or 429 (``--retries`` more tries, with
backoff): the service stores the file once whatever the number of tries
(:mod:`etl_app.cli.resend` says what is tried again without a key).

Exit codes: 0 accepted (and, following, finished); 1 the server refused the file (its message
is shown) or stayed busy past ``--max-wait``, the service could not be reached, or the ingestion
or its upload failed; 2 usage errors; 130 Ctrl-C while following (the ingestion goes on).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from etl_app import durations
from etl_app.cli import resend
from etl_app.config import var_dir, var_dir_source

TYPES = ("tutors", "students", "sessions", "feedback")
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".parquet": "application/vnd.apache.parquet",
}
POLL_RETRIES = 10  # consecutive failed polls (unreachable, 5xx, 429) before giving up
BUSY = 429
MAX_WAIT_SECONDS = 600.0  # --max-wait's default: how long a busy service is waited for, in all
NO_RETRY_AFTER_SECONDS = 5.0  # a 429 without a usable Retry-After
EXIT_INTERRUPTED = 130


class Failed(click.ClickException):
    """Exit 1 with a message (ClickException's code)."""


def default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('WEB_PORT') or os.environ.get('PORT') or 8000}"


def find_key(given: str | None) -> str:
    """``--key`` / ``ETL_API_KEY``, else the key ``etl-app run`` generated into the var folder."""
    if given:
        return given
    path = Path(var_dir()) / "api_key"
    try:
        text = path.read_text().strip()
        problem = "empty"
    except FileNotFoundError:
        text, problem = "", "not found"
    except OSError as exc:
        text, problem = "", f"not readable: {exc.strerror}"
    secret = text.split(",")[0].split(":")[0].strip()  # a key holds neither , nor :
    if not secret:
        raise click.UsageError(
            "no API key: give --key or set ETL_API_KEY, or set ETL_VAR_DIR to the folder where `etl-app run` "
            f"keeps its files (looked for {path}, in the var folder of {var_dir_source()}: {problem})"
        )
    return secret


class _Reading:
    """A file object that reports how far it has been read (for the upload bar)."""

    def __init__(self, fh, on_read) -> None:
        self._fh, self._on_read = fh, on_read

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._on_read(len(chunk))
        return chunk

    def fileno(self) -> int:
        return self._fh.fileno()

    def seek(self, *args: Any) -> int:
        return self._fh.seek(*args)

    def tell(self) -> int:
        return self._fh.tell()


def _error_message(response) -> str:
    """``HTTP 413 (too_large): message`` from a ``{error, message}`` body, or the body's text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        kind = f" ({body['error']})" if body.get("error") else ""
        return f"HTTP {response.status_code}{kind}: {body['message']}"
    text = response.text.strip()[:500]
    return f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")


def retry_after(response) -> float:
    """The seconds a 429 asks to wait (``Retry-After`` in seconds), at least 1; 5 without one
    (or with an HTTP date, which this command does not read)."""
    try:
        return max(1.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return NO_RETRY_AFTER_SECONDS


def _upload_when_taken(
    client,
    path: Path,
    record_type: str,
    console: Console,
    err: Console,
    max_wait: float,
    *,
    key: str | None,
    retries: int,
) -> dict[str, Any]:
    """:func:`_upload`, sent again after each 429 once its Retry-After has passed, for at most
    ``max_wait`` seconds in all (said on stderr each time)."""
    waited = 0.0
    while True:
        response = _upload(client, path, record_type, console, key=key, retries=retries, err=err)
        if response.status_code != BUSY:
            return _accepted(response)
        wait = min(retry_after(response), max_wait - waited)
        if wait <= 0:
            raise Failed(
                f"upload refused: {_error_message(response)} (gave up after waiting {waited:.0f} s: --max-wait)"
            )
        err.print(
            f"{_error_message(response)}\n"
            f"waiting {wait:.0f} s before sending the file again "
            f"({waited:.0f} s waited so far, at most {max_wait:.0f} s: --max-wait)",
            highlight=False,
            markup=False,
        )
        time.sleep(wait)
        waited += wait


def _accepted(response) -> dict[str, Any]:
    if response.status_code != 202:
        raise Failed(f"upload refused: {_error_message(response)}")
    try:
        body = response.json()
        body["ingestion_id"]
    except (ValueError, KeyError, TypeError):
        raise Failed(f"unexpected answer to the upload (HTTP {response.status_code}): {response.text[:300]}") from None
    return body


def _post_once(client, path: Path, record_type: str, console: Console, headers: dict[str, str]):
    """One try of the upload: the file streamed from its start."""
    size = path.stat().st_size
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    with (
        open(path, "rb") as fh,
        Progress(
            TextColumn("uploading {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress,
    ):
        task = progress.add_task(path.name, total=size or None)
        reading = _Reading(fh, lambda n: progress.advance(task, n))
        return client.post(
            f"/api/v1/{record_type}/upload", files={"file": (path.name, reading, content_type)}, headers=headers
        )


def _upload(client, path: Path, record_type: str, console: Console, *, key: str | None, retries: int, err: Console):
    """The upload, tried again as :mod:`etl_app.cli.resend` says (a 429 is the caller's: it waits
    as the service asks, up to ``--max-wait``); the last answer, whatever its status."""
    import httpx

    headers = {"Idempotency-Key": key} if key else {}
    again = f"with the same Idempotency-Key {key}" if key else "(nothing was stored)"

    def on_retry(why: str, wait: float, number: int) -> None:
        err.print(
            f"upload not answered ({why}); sending it again in {wait:.1f}s {again}, try {number} of {retries + 1}",
            highlight=False,
            markup=False,
        )

    try:
        response = resend.send(
            lambda: _post_once(client, path, record_type, console, headers),
            keyed=key is not None,
            retries=retries,
            on_retry=on_retry,
        )
    except httpx.TransportError as exc:
        hint = f"; run it again with --idempotency-key {key} so that it is stored once" if key else ""
        raise Failed(f"could not reach {client.base_url} ({type(exc).__name__}: {exc}){hint}") from None
    return response


def _get(client, ingestion_id: str) -> dict[str, Any]:
    """The ingestion; retries unreachable / 5xx / 429 a few times, fails on another 4xx."""
    import httpx

    failures = 0
    while True:
        try:
            response = client.get(f"/api/v1/ingestions/{ingestion_id}")
        except httpx.TransportError as exc:
            problem = f"could not reach {client.base_url} ({type(exc).__name__}: {exc})"
        else:
            if response.status_code == 200:
                return response.json()
            problem = _error_message(response)
            if response.status_code < 500 and response.status_code != 429:
                raise Failed(f"reading ingestion {ingestion_id}: {problem}")
        failures += 1
        if failures >= POLL_RETRIES:
            raise Failed(f"reading ingestion {ingestion_id}: {problem}")
        time.sleep(min(5.0, 0.5 * failures))


def _rows_read(body: dict[str, Any]) -> int:
    upload = body.get("upload") or {}
    if upload.get("rows_read") is not None:
        return int(upload["rows_read"])
    return int((body.get("counts") or {}).get("received") or 0)


def _settled(body: dict[str, Any]) -> int:
    counts = body.get("counts") or {}
    return sum(int(counts.get(k) or 0) for k in ("persisted", "dead", "rejected"))


def _follow(client, ingestion_id: str, interval: float, console: Console) -> dict[str, Any]:
    with Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        parsed = progress.add_task("file parsed", total=100, detail="")
        settled = progress.add_task("records settled", total=None, detail="")
        while True:
            body = _get(client, ingestion_id)
            upload = body.get("upload") or {}
            share = upload.get("progress")
            if share is None:  # not an upload (or no upload part): parsed once it has a status past parsing
                share = 1.0 if body.get("status") != "running" else 0.0
            rows = _rows_read(body)
            done = _settled(body)
            state = upload.get("status") or ""
            progress.update(parsed, completed=100 * float(share), detail=f"{rows:,} rows read {state}".rstrip())
            progress.update(settled, completed=done, total=max(rows, done) or None, detail=f"{done:,} of {rows:,}")
            if body.get("status") != "running":
                return body
            time.sleep(interval)


def _share(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


def _seconds(value: Any) -> str:
    """A duration as the pages show it too (``120d 7h``: :func:`etl_app.durations.human`)."""
    return "-" if value is None else durations.human(value)


def _schema_order(record_type: str) -> dict[str, int]:
    """Field -> position in the type's schema (empty for a type this side does not know)."""
    from etl_app.record_types import get_registry

    known = get_registry().get(record_type)
    return {name: i for i, name in enumerate(known.loader.fields)} if known is not None else {}


def print_report(body: dict[str, Any], console: Console) -> None:
    """The ingestion's counts, then its quality report (metrics, completeness per field, top errors)."""
    upload = body.get("upload") or {}
    console.print(
        f"ingestion {body.get('id')} ({body.get('record_type')}): {body.get('status')}", highlight=False, markup=False
    )
    counts = Table()
    names = ("received", "persisted", "dead", "rejected", "in_flight")
    for name in names:
        counts.add_column(name, justify="right")
    c = body.get("counts") or {}
    counts.add_row(*(f"{int(c.get(n) or 0):,}" for n in names))
    console.print(counts)
    if upload:
        line = f"file {upload.get('filename')} ({upload.get('format')}, {int(upload.get('size') or 0):,} bytes)"
        line += f": {upload.get('status')}, {int(upload.get('rows_read') or 0):,} rows read"
        console.print(line, highlight=False, markup=False)
        if upload.get("error"):
            console.print(f"upload error: {upload['error']}", style="red", highlight=False, markup=False)
        if upload.get("note"):
            console.print(f"note: {upload['note']}", highlight=False, markup=False)
    quality = body.get("quality")
    if not quality:
        console.print("no quality report (the ingestion has not settled)" if body.get("status") == "running" else "")
        return
    metrics = Table(title="quality", title_justify="left")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for name in ("received", "accepted", "rejected"):
        if quality.get(name) is not None:
            metrics.add_row(name, f"{int(quality[name]):,}")
    completeness = quality.get("completeness") or {}
    metrics.add_row("validity", _share(quality.get("validity")))
    metrics.add_row("completeness (overall)", _share(completeness.get("overall")))
    metrics.add_row("uniqueness", _share(quality.get("uniqueness")))
    metrics.add_row("integrity", _share(quality.get("integrity")))
    timeliness = quality.get("timeliness") or {}
    for p in ("p50", "p95", "max"):
        metrics.add_row(f"timeliness {p}", _seconds(timeliness.get(p)))
    score = quality.get("score")
    metrics.add_row("score", "-" if score is None else f"{float(score):.4f}")
    metrics.add_row("level", str(quality.get("level")))
    console.print(metrics)
    fields = {k: v for k, v in completeness.items() if k != "overall"}
    order = _schema_order(str(body.get("record_type")))
    fields = dict(sorted(fields.items(), key=lambda item: order.get(item[0], len(order))))
    if fields:
        per_field = Table(title="completeness per field", title_justify="left")
        per_field.add_column("field")
        per_field.add_column("filled", justify="right")
        for name, value in fields.items():
            per_field.add_row(Text(name), _share(value))
        console.print(per_field)
    errors = quality.get("top_errors") or []
    if errors:
        top = Table(title="top errors", title_justify="left")
        top.add_column("field")
        top.add_column("message")
        top.add_column("count", justify="right")
        for e in errors:
            top.add_row(Text(str(e.get("field"))), Text(str(e.get("message"))), f"{int(e.get('count') or 0):,}")
        console.print(top)
    else:
        console.print("top errors: none")


def _failed(body: dict[str, Any]) -> bool:
    return body.get("status") == "failed" or (body.get("upload") or {}).get("status") == "failed"


@click.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--type", "record_type", required=True, type=click.Choice(TYPES), help="The records' type.")
@click.option("--follow", is_flag=True, help="Show progress until the ingestion settles, then its quality report.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the upload answer (with --follow: the final ingestion) as JSON."
)
@click.option("--url", envvar="ETL_API_URL", help="The service (env ETL_API_URL; default http://127.0.0.1:$PORT|8000).")
@click.option("--key", envvar="ETL_API_KEY", help="API key (env ETL_API_KEY; default: the one `etl-app run` made).")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True, help="Seconds between polls."
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=MAX_WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait in all for a busy service (429: backlog full or rate limit) before giving up; 0: never wait.",
)
@click.option(
    "--idempotency-key",
    "idempotency_key",
    metavar="KEY",
    help="The upload's Idempotency-Key (default: a new UUID each run); give the key of an earlier run whose "
    "answer was lost to get that answer, without storing the file twice.",
)
@click.option(
    "--no-idempotency-key", "no_idempotency_key", is_flag=True, help="Send no Idempotency-Key (fewer retries)."
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=resend.RETRIES,
    show_default=True,
    help="Tries after the first when the upload is not answered (unreachable, timeout, 5xx, 409, 429).",
)
def submit_command(
    file: Path,
    record_type: str,
    follow: bool,
    as_json: bool,
    url,
    key,
    interval: float,
    idempotency_key: str | None,
    no_idempotency_key: bool,
    retries: int,
    max_wait: float,
) -> None:
    """Upload FILE (csv, tsv, ndjson, json, xlsx or parquet) as records of --type; print the
    ingestion id, and with --follow its progress, counts and quality report."""
    import httpx

    from etl_app.cli.common import console as make_console

    if idempotency_key is not None and no_idempotency_key:
        raise click.UsageError("--idempotency-key and --no-idempotency-key exclude each other")
    request_key = None if no_idempotency_key else (idempotency_key or str(uuid.uuid4()))
    base = (url or default_url()).rstrip("/")
    secret = find_key(key)
    out = make_console()
    err = Console(stderr=True)
    status_console = err if as_json else out
    timeout = httpx.Timeout(30.0, read=600.0)  # the server may take a while to store a big file
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=timeout) as client:
        answer = _upload_when_taken(
            client, file, record_type, status_console, err, max_wait, key=request_key, retries=retries
        )
        ingestion_id = str(answer["ingestion_id"])
        upload = answer.get("upload") or {}
        if not follow:
            if as_json:
                click.echo(json.dumps(answer))  # one line, as a script reads it
            else:
                click.echo(ingestion_id)
                if upload.get("note"):
                    err.print(f"note: {upload['note']}", highlight=False, markup=False)
            return
        status_console.print(
            f"ingestion {ingestion_id}: {upload.get('filename', file.name)} ({upload.get('format', '?')}, "
            f"{int(upload.get('size') or file.stat().st_size):,} bytes)",
            highlight=False,
            markup=False,
        )
        try:
            body = _follow(client, ingestion_id, interval, status_console)
        except KeyboardInterrupt:
            err.print(
                f"stopped following; ingestion {ingestion_id} goes on. Look again with\n"
                f"  etl-app status {ingestion_id}\n"
                f"  curl -H 'Authorization: Bearer $ETL_API_KEY' {base}/api/v1/ingestions/{ingestion_id}",
                highlight=False,
                markup=False,
            )
            raise SystemExit(EXIT_INTERRUPTED) from None
    if as_json:
        click.echo(json.dumps(body))
    else:
        print_report(body, out)
    if _failed(body):
        error = (body.get("upload") or {}).get("error")
        raise Failed(f"ingestion {ingestion_id} failed" + (f": {error}" if error else ""))
