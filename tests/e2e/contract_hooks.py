"""Schemathesis hooks for the CLI run of tests/e2e/test_contract_cli.py (``SCHEMATHESIS_HOOKS``).

- The date and date-time formats are drawn with years in 1900..2100 and days up to yesterday,
  as their descriptions say (tests/e2e/test_contract.py ``_documented_formats``).
- :data:`CROSS_FIELD` lists the only failures let through: a schema-valid request rejected
  (ST202) for a rule between values that no schema keyword can state, each with its reason and
  a test of the answer, so that no other rejection hides behind it. :data:`PARTIAL_BATCH`: a
  batch answered 202 with its invalid records rejected one by one is the contract's partial
  acceptance (the 202 of .../batch), not a missed rejection. :data:`SOFT_DELETE`: DELETE of a
  dead letter discards it, and it stays readable with status discarded (ST301). :data:`NOT_VALID`:
  a request of the stateful phase that breaks the document, taken by schemathesis as valid.
Each failure let through is appended to ``ETL_CONTRACT_ALLOWED`` (a file), with its reason.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import schemathesis
from test_contract import _documented_formats

_documented_formats()

SESSION_RULES = {
    "is_first_session": ("Must not be true when session_number is greater than 1.",),
    "actual_start": ("Must be null when no_show is true.", "Must be within 24 hours of scheduled_start."),
}


def _session_rules_only(body: dict) -> bool:
    """Every field error is one of the rules between a session's fields (schemas/sessions.py)."""
    errors = body.get("errors")
    records = [e.get("errors", {}) for e in errors] if isinstance(errors, list) else [errors]
    return bool(records) and all(
        isinstance(record, dict)
        and record
        and all(
            field in SESSION_RULES and set(messages) <= set(SESSION_RULES[field]) for field, messages in record.items()
        )
        for record in records
    )


def _day_range(body: dict) -> bool:
    return body.get("error") == "invalid_parameter" and "range" in body.get("message", "")


# etl_app/uploads/formats/ and etl_app/api/uploads.py: a file that is not a file of records
FILE_REFUSALS = {
    "binary_content",
    "compressed_file",
    "duplicate_column",
    "empty_file",
    "legacy_excel",
    "no_known_column",
    "no_worksheet",
    "not_utf8",
    "unreadable_file",
    "unsupported_format",
}

# (operation, status, test of the answer's body, reason)
CROSS_FIELD: list[tuple[str, int, Callable[[dict], bool], str]] = [
    (
        r"POST /api/v1/sessions(/batch)?",
        422,
        _session_rules_only,
        "a session's is_first_session needs session_number 1, its actual_start no no_show and at most 24 hours "
        "from scheduled_start: rules between fields",
    ),
    (
        r"GET /api/v1/(quality/\{record_type\}|tutors/\{tutor_id\}/metrics)",
        400,
        _day_range,
        "from no later than to, at most 366 days apart (to defaulting to today): a rule between parameters",
    ),
    (
        r"POST /api/v1/jobs/\{name\}/run",
        400,
        lambda body: body.get("error") == "invalid_window",
        "a window only for the jobs that take one (the path's job), from no later than to, at most "
        "ETL_JOB_MAX_WINDOW_DAYS days (to defaulting to today) between 1970 and 2100: rules between the path and "
        "the body, and between from and to",
    ),
    (
        r"POST /api/v1/[a-z_-]+/upload",
        415,
        lambda body: body.get("error") in FILE_REFUSALS,
        "the file must hold records of the path's record type in one of the formats the description names, "
        "which the drawn bytes never are: a rule between the path and the body's bytes",
    ),
    (
        r"POST /api/v1/[a-z_-]+/upload",
        422,
        lambda body: body.get("error") in FILE_REFUSALS,
        "the same rule: a file that parses but whose columns name no field of the path's record type",
    ),
    (
        r"POST /api/v1/[a-z_-]+(/batch|/upload)?",
        422,
        lambda body: body.get("error") == "idempotency_key_reused",
        "an Idempotency-Key names one request, and the drawn keys repeat across requests with other bodies: "
        "a rule between requests",
    ),
    (
        r"POST /api/v1/dead-letters/\{id\}/replay",
        422,
        lambda body: body.get("error") == "validation_failed",
        "a corrected payload must be a valid record of the dead letter's own type: a rule between the path's id "
        "and the body",
    ),
]
PARTIAL_BATCH = "a batch answered 202 with rejected >= 1: its invalid records are rejected one by one"
NOT_VALID = (
    "the stateful phase sent fields the body does not have (additionalProperties: false) as a valid request; "
    "the 400 is the document's"
)
SOFT_DELETE = (
    "DELETE /api/v1/dead-letters/{id} discards: the dead letter stays readable, status discarded, as its "
    "operation says (GET after DELETE is 200)"
)


def _json(response: Any) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _note(label: str, reason: str) -> None:
    path = os.environ.get("ETL_CONTRACT_ALLOWED")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"operation": label, "reason": reason}) + "\n")


@schemathesis.hook
def filter_failure(ctx, failure, case, response) -> bool:
    label = f"{case.operation.method.upper()} {case.operation.path}"
    body = _json(response)
    if failure.code == "ST202":
        for operation, status, test, reason in CROSS_FIELD:
            if re.fullmatch(operation, label) and response.status_code == status and test(body):
                _note(label, reason)
                return False
    if failure.code == "ST202" and label == "POST /api/v1/dead-letters/{id}/replay" and response.status_code == 400:
        if isinstance(case.body, dict) and set(case.body) - {"payload"}:  # additionalProperties: false
            _note(label, NOT_VALID)
            return False
    if failure.code == "ST301" and label == "GET /api/v1/dead-letters/{id}" and body.get("status") == "discarded":
        _note(label, SOFT_DELETE)
        return False
    if failure.code == "ST201" and label.endswith("/batch") and response.status_code == 202:
        if body.get("rejected", 0) >= 1:
            _note(label, PARTIAL_BATCH)
            return False
    return True
