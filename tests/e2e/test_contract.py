"""The API contract under a fuzzer: schemathesis, driven from /openapi.json, against the live app
(gunicorn web and a celery worker), with an admin key and every check schemathesis has.

Every operation of the document is exercised, in both generation modes (positive: data the
document allows; negative: data it forbids), with at most ``ETL_FUZZ_EXAMPLES`` (default 25)
examples per operation and mode. Nothing is excluded. Each response goes through every check
one at a time, so the summary counts failures per check; it is printed and written to
var/contract-report.json. The happy path must be reached: every record type gets 202 answers on
``POST /api/v1/{type}``.

Generation notes (none of them hides an operation):
- Timestamps and dates must have a year in 1900..2100 (in their descriptions: a pattern next to
  ``format: date-time`` makes schemathesis filter its drawn dates, which never succeeds for a
  required timestamp). The two formats are registered here with generators over those years;
  dates stop at yesterday, as a tutor's onboarding_date must not be after the day it is received
  (a rule that needs the moment of receipt, so no schema keyword can state it).
- Sessions drawn in positive mode are made to obey the rules between their fields that no
  schema keyword states (``_keep_session_rules``); in negative mode a batch answered 202 with
  ``rejected`` ≥ 1 is the contract's partial acceptance, not a missed rejection
  (``_partly_rejected_batch``); a batch accepted whole is still a failure.
- Rules between values that the document states only in words are kept by the drawn positive
  cases, each in one named function: a report's ``from``/``to`` in order and at most 366 days
  apart (``_keep_day_range``); a window only for the jobs that take one (``_keep_job_window``,
  from ``GET /api/v1/jobs``); a dead letter replayed as stored (a corrected payload must be a
  valid record of that dead letter's own type); an upload's file holding records of its type
  (``_keep_upload_a_file``: two generated records as CSV); an ``Idempotency-Key`` naming one
  request (``_fresh_idempotency_key``: the drawn keys repeat across requests with other bodies,
  which the document's 422 ``idempotency_key_reused`` refuses).
- A negative case whose every violation is a mutated ``anyOf`` branch (the value still matches
  another branch: nullable fields, the bulk replay's "a filter, or all: true") or a changed
  Authorization header (every call carries the real key) is valid after all: it is counted as
  ``negative_cases_valid_after_all``, not as a failure (``_not_really_negative``); so is one whose
  only undocumented query parameters were never sent (an empty list or object as their value); so is one whose
  every violation is a mutated ``pattern`` that the mutated value still matches (``_pattern_kept``).
- An operation without parameters or body (``GET /health``, ``GET /ready``) has no negative
  data; its negative run is reported as ``no_negative_data`` and its positive run still counts.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import Failure, FailureGroup

from etl_app.jobs.registry import FIRST_DAY, LAST_DAY

from tests.helpers.support import API_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Schemathesis sends many requests without a key or with a wrong one from this one address (its
# ignored_auth check): past ETL_AUTH_FAILURES_PER_MINUTE the address would get 429 for everything,
# its right key included (tests/api/test_auth_failures.py), so the stack runs without that throttle.
STACK_ENV = {"ETL_AUTH_FAILURES_PER_MINUTE": "0"}
MAX_EXAMPLES = int(os.environ.get("ETL_FUZZ_EXAMPLES", "25"))
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
REPORT = Path(__file__).resolve().parents[2] / "var" / "contract-report.json"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DAY = timedelta(hours=24)


def _documented_formats() -> None:
    days = st.dates(min_value=date(1900, 1, 1), max_value=date.today() - timedelta(days=1))
    moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31, 23, 59, 59))
    offsets = st.sampled_from(["Z", "+00:00", "+05:30", "-08:00", ""])
    schemathesis.openapi.format("date", days.map(date.isoformat))
    schemathesis.openapi.format(
        "date-time", st.builds(lambda m, o: m.isoformat(timespec="seconds") + o, moments, offsets)
    )


def _when(value) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _keep_session_rules(body) -> None:
    """Make generated sessions obey the rules between their fields that JSON Schema cannot state
    (the sessions schema documents them): no ``actual_start`` for a no-show or more than 24 hours
    from ``scheduled_start``, no ``is_first_session`` after the first session."""
    for record in body if isinstance(body, list) else [body]:
        if not isinstance(record, dict):
            continue
        number = record.get("session_number")
        if record.get("is_first_session") is True and isinstance(number, int) and number > 1:
            record["is_first_session"] = False
        actual, scheduled = _when(record.get("actual_start")), _when(record.get("scheduled_start"))
        if record.get("actual_start") is not None and (
            record.get("no_show") is True or actual is None or scheduled is None or abs(actual - scheduled) > DAY
        ):
            record["actual_start"] = None


def _keep_day_range(query) -> None:
    """A report's ``from`` and ``to`` must be in order and at most 366 days apart, ``to``
    defaulting to today: a rule between parameters, which the operation's description states."""
    if not isinstance(query, dict):
        return
    start, end = _day(query.get("from")), _day(query.get("to"))
    if start and end and end < start:
        start, end = end, start
    if start and (end is None or (end - start).days > 365):
        end = start + timedelta(days=29)
    for name, day in (("from", start), ("to", end)):
        if day is not None:
            query[name] = day.isoformat()


def _day(value) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _keep_job_window(case, windowed: set[str]) -> None:
    """Only some jobs take a window (``GET /api/v1/jobs`` says which: ``takes_window``), and a
    window needs ``from`` no later than ``to``, days from 1970 to 2100 and at most 366 of them
    (``to`` defaulting to today): rules the document states in words."""
    body = case.body
    if not isinstance(body, dict):
        return
    if case.path_parameters.get("name") not in windowed:
        body.pop("from", None)
        body.pop("to", None)
        return
    start, end = _day(body.get("from")), _day(body.get("to"))
    if end and not start:
        start = end
    if start and end and end < start:
        start, end = end, start
    if start and not FIRST_DAY <= start <= LAST_DAY:
        start = date(2026, 1, 1)
    if start and (end is None or not start <= end <= LAST_DAY or (end - start).days > 365):
        end = start + timedelta(days=29)
    for name, day in (("from", start), ("to", end)):
        if day is not None:
            body[name] = day.isoformat()


def _keep_upload_a_file(case, record_type: str) -> None:
    """An upload's file must hold records of the type in one of the formats the description names
    (a rule on the bytes, which the document states in words): positive cases send two generated
    records of the type as CSV, in place of the drawn bytes (in schemathesis's own wrapper for a
    ``format: binary`` value, so the case stays one the document allows)."""
    from schemathesis.transport.serialization import Binary

    from etl_app.local.generate import generate, write_records

    if not isinstance(case.body, dict):
        return
    out = io.BytesIO()
    write_records(generate(record_type, 2, seed=len(case.body)), out, "csv", record_type)
    case.body["file"] = Binary(out.getvalue())


def _fresh_idempotency_key(case) -> None:
    """An Idempotency-Key names one request (a rule between requests, stated in the header's
    description): a drawn key, which hypothesis repeats across cases with other bodies, becomes a
    new UUID of the same documented form."""
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = str(uuid.uuid4())


def _partly_rejected_batch(operation, response) -> bool:
    """A batch is answered 202 when some of its records are valid: the invalid ones are rejected
    one by one in the body (``rejected``, ``errors``), as the contract says, not by a 4xx."""
    if not operation.path.endswith("/batch") or response.status_code != 202:
        return False
    try:
        return response.json().get("rejected", 0) >= 1
    except ValueError:
        return False


_VIOLATION = re.compile(r"violates [^\n]*")


def _not_really_negative(failure: str, undocumented_query_sent: bool = True) -> bool:
    """A "schema-violating request accepted" whose every violation is one the request did not
    really carry: a mutated branch of an ``anyOf`` (the document's nullable fields and the bulk
    replay's "a filter, or all: true"; the value still matches another branch, so it is valid),
    a changed Authorization header (every call here carries the test's real key), or drawn
    query parameters the document does not name that were never sent (``requests`` leaves out a
    parameter whose value is an empty list or object: ``undocumented_query_sent`` is False)."""
    violations = _VIOLATION.findall(failure)
    return bool(violations) and all(
        "/anyOf/" in v
        or "Authorization" in v
        or (v.startswith("violates `additionalProperties`") and not undocumented_query_sent and _in_query(failure, v))
        for v in violations
    )


def _in_query(failure: str, violation: str) -> bool:
    """The violation is listed under ``query:`` in the failure's "Invalid component" list."""
    return f"query: {violation}" in failure


def _undocumented_query_sent(operation, response) -> bool:
    """Whether the request as sent carried a query parameter the operation does not document."""
    documented = {p.name for p in operation.iter_parameters() if getattr(p, "location", None) == "query"}
    sent = {name for name, _ in parse_qsl(urlsplit(response.request.url).query, keep_blank_values=True)}
    return bool(sent - documented)


_PATTERN_MUTATION = re.compile(r"violates `pattern` at (\S*) \(was \"(?:.*)\", became \"(.*)\"\)$", re.MULTILINE)


def _deref(spec: dict, node):
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _schema_at(spec: dict, schema: dict, pointer: str) -> dict:
    """The subschema at ``pointer`` (``/properties/subjects/items``), following ``$ref``s."""
    node = _deref(spec, schema)
    for part in filter(None, pointer.split("/")):
        node = _deref(spec, node[int(part)] if isinstance(node, list) else node[part])
    return node


def _pattern_kept(failure: str, spec: dict, path: str, method: str) -> bool:
    """A "schema-violating request accepted" whose only violation is a mutated ``pattern`` that the
    mutated value still matches (schemathesis appends a character to a string that may end in any
    character, e.g. a name: ``[^\\x00]*`` at the end of the pattern): a valid request after all.
    The value is checked against the document's own pattern, with Python's ``re``."""
    violations = _VIOLATION.findall(failure)
    found = _PATTERN_MUTATION.findall(failure)
    if not violations or len(found) != len(violations):
        return False
    body = spec["paths"][path][method]["requestBody"]["content"]
    schema = next(iter(body.values()))["schema"]
    try:
        return all(re.search(_schema_at(spec, schema, at)["pattern"], became) for at, became in found)
    except (KeyError, IndexError, TypeError, ValueError, re.error):
        return False


def _all_checks():
    load_all_checks()
    return list(CHECKS.get_all())


def _fuzz(operation, mode, base_url: str, checks, stats: dict, windowed: set[str], spec: dict) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        if mode is schemathesis.GenerationMode.POSITIVE:
            _fresh_idempotency_key(case)
            if operation.path.endswith("/upload"):
                _keep_upload_a_file(case, operation.path.split("/")[3])
            elif operation.path.startswith("/api/v1/sessions"):
                _keep_session_rules(case.body)
            elif operation.path.startswith(("/api/v1/quality/", "/api/v1/tutors/")):
                _keep_day_range(case.query)
            elif operation.path == "/api/v1/jobs/{name}/run":
                _keep_job_window(case, windowed)
            elif operation.path == "/api/v1/dead-letters/{id}/replay" and isinstance(case.body, dict):
                # a corrected payload must be a valid record of that dead letter's own type,
                # which the document cannot say per id: replay as stored
                case.body.pop("payload", None)
        response = case.call(base_url=base_url, headers=AUTH, timeout=60)
        partly_rejected = mode is schemathesis.GenerationMode.NEGATIVE and _partly_rejected_batch(operation, response)
        stats["cases"] += 1
        stats["statuses"][label][str(response.status_code)] += 1
        for check in checks:
            if partly_rejected and check.__name__ == "negative_data_rejection":
                continue
            try:
                case.validate_response(
                    response,
                    checks=[check],
                    headers=AUTH,
                    transport_kwargs={"base_url": base_url, "headers": AUTH},
                )
            except (Failure, FailureGroup) as exc:
                if check.__name__ == "negative_data_rejection" and (
                    _not_really_negative(str(exc), _undocumented_query_sent(operation, response))
                    or _pattern_kept(str(exc), spec, operation.path, operation.method)
                ):
                    stats["not_really_negative"] += 1
                    continue
                stats["failures"][check.__name__] += 1
                stats["by_operation"][f"{check.__name__} {label} ({mode.value})"] += 1
                key = f"{check.__name__} {label} ({mode.value})"
                if len(stats["examples"][key]) < 2:
                    stats["examples"][key].append(str(exc)[:1200])

    try:
        run()
    except Unsatisfiable:
        if (
            mode is schemathesis.GenerationMode.NEGATIVE
            and not list(operation.iter_parameters())
            and not len(operation.body)
        ):
            stats["no_negative_data"].append(label)
            return
        raise


def test_the_contract_holds_under_schemathesis(stack):
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{stack.web_url}/openapi.json", headers=AUTH)
    _documented_formats()
    checks = _all_checks()
    stats = {
        "no_negative_data": [],
        "cases": 0,
        "statuses": defaultdict(Counter),
        "failures": Counter(),
        "examples": defaultdict(list),
        "by_operation": Counter(),
        "not_really_negative": 0,
    }
    operations = [result.ok() for result in schema.get_all_operations()]
    jobs = requests.get(f"{stack.web_url}/api/v1/jobs", headers=AUTH, timeout=30).json()["jobs"]
    windowed = {job["name"] for job in jobs if job["takes_window"]}
    spec = requests.get(f"{stack.web_url}/openapi.json", headers=AUTH, timeout=30).json()
    for operation in operations:
        for mode in MODES:
            _fuzz(operation, mode, stack.web_url, checks, stats, windowed, spec)
    record_types = [
        op.path.removeprefix("/api/v1/")
        for op in operations
        if op.method == "post"
        and op.path.count("/") == 3
        and op.path.startswith("/api/v1/")
        and "{" not in op.path
        and f"{op.path}/batch" in {o.path for o in operations}
    ]
    accepted = {name: stats["statuses"][f"POST /api/v1/{name}"].get("202", 0) for name in record_types}
    uploaded = {name: stats["statuses"][f"POST /api/v1/{name}/upload"].get("202", 0) for name in record_types}
    summary = {
        "operations": len(operations),
        "examples_per_operation_and_mode": MAX_EXAMPLES,
        "cases": stats["cases"],
        "checks": [c.__name__ for c in checks],
        "failures_by_check": dict(stats["failures"]),
        "negative_cases_valid_after_all": stats["not_really_negative"],
        "no_negative_data": stats["no_negative_data"],
        "accepted_202_per_record_type": accepted,
        "batch_202_per_record_type": {
            name: stats["statuses"][f"POST /api/v1/{name}/batch"].get("202", 0) for name in record_types
        },
        "upload_202_per_record_type": uploaded,
        "statuses": {k: dict(v) for k, v in sorted(stats["statuses"].items())},
        "failures_by_operation": dict(stats["by_operation"]),
        "failure_examples": dict(stats["examples"]),
        "seconds": round(time.monotonic() - started, 1),
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=2))
    print("\ncontract summary:", json.dumps({k: v for k, v in summary.items() if k != "failure_examples"}, indent=1))
    for key, examples in stats["examples"].items():
        print(f"\n--- {key}: {stats['by_operation'][key]} failure(s); first: {examples[0]}")
    assert record_types, "no record type found in the document"
    assert not stats["failures"], f"failures by check: {dict(stats['failures'])}; see {REPORT}"
    assert all(accepted.values()), f"a record type never got a 202: {accepted}"
    assert all(uploaded.values()), f"a record type's upload never got a 202: {uploaded}"
