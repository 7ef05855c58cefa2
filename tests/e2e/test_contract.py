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
- An operation without parameters or body (``GET /health``, ``GET /ready``) has no negative
  data; its negative run is reported as ``no_negative_data`` and its positive run still counts.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import Failure, FailureGroup

from support import API_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MAX_EXAMPLES = int(os.environ.get("ETL_FUZZ_EXAMPLES", "25"))
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
REPORT = Path(__file__).resolve().parents[2] / "var" / "contract-report.json"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _documented_formats() -> None:
    days = st.dates(min_value=date(1900, 1, 1), max_value=date.today() - timedelta(days=1))
    moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31, 23, 59, 59))
    offsets = st.sampled_from(["Z", "+00:00", "+05:30", "-08:00", ""])
    schemathesis.openapi.format("date", days.map(date.isoformat))
    schemathesis.openapi.format(
        "date-time", st.builds(lambda m, o: m.isoformat(timespec="seconds") + o, moments, offsets)
    )


def _all_checks():
    load_all_checks()
    return list(CHECKS.get_all())


def _fuzz(operation, mode, base_url: str, checks, stats: dict) -> None:
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
        response = case.call(base_url=base_url, headers=AUTH, timeout=60)
        stats["cases"] += 1
        stats["statuses"][label][str(response.status_code)] += 1
        for check in checks:
            try:
                case.validate_response(
                    response,
                    checks=[check],
                    headers=AUTH,
                    transport_kwargs={"base_url": base_url, "headers": AUTH},
                )
            except (Failure, FailureGroup) as exc:
                stats["failures"][check.__name__] += 1
                if len(stats["examples"][check.__name__]) < 3:
                    stats["examples"][check.__name__].append(f"{label} ({mode.value}): {str(exc)[:1500]}")

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
    }
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in MODES:
            _fuzz(operation, mode, stack.web_url, checks, stats)
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
    summary = {
        "operations": len(operations),
        "examples_per_operation_and_mode": MAX_EXAMPLES,
        "cases": stats["cases"],
        "checks": [c.__name__ for c in checks],
        "failures_by_check": dict(stats["failures"]),
        "no_negative_data": stats["no_negative_data"],
        "accepted_202_per_record_type": accepted,
        "batch_202_per_record_type": {
            name: stats["statuses"][f"POST /api/v1/{name}/batch"].get("202", 0) for name in record_types
        },
        "statuses": {k: dict(v) for k, v in sorted(stats["statuses"].items())},
        "failure_examples": dict(stats["examples"]),
        "seconds": round(time.monotonic() - started, 1),
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=2))
    print("\ncontract summary:", json.dumps({k: v for k, v in summary.items() if k != "failure_examples"}, indent=1))
    for check, examples in stats["examples"].items():
        print(f"\n--- {check}: {stats['failures'][check]} failure(s); first: {examples[0]}")
    assert record_types, "no record type found in the document"
    assert not stats["failures"], f"failures by check: {dict(stats['failures'])}; see {REPORT}"
    assert all(accepted.values()), f"a record type never got a 202: {accepted}"
