"""The API contract under the schemathesis CLI: ``st run --checks all`` with every phase (examples,
coverage, fuzzing, stateful) against the live app (gunicorn web and a celery worker), with an
admin key. Unlike tests/e2e/test_contract.py, whose cases come from hypothesis strategies, the
CLI also sends the coverage phase's boundary values and undeclared methods (405 and OPTIONS
``Allow`` against the document).

No failure is allowed but those tests/e2e/contract_hooks.py lists, each with its reason: a
schema-valid request rejected for a rule between values that no schema keyword states, and a
batch partly rejected record by record. ``ETL_FUZZ_EXAMPLES`` (default 25) examples per
operation, seed ``ETL_FUZZ_SEED`` (default 1). The CLI's output is written to
var/contract-cli.txt, the failures let through to var/contract-cli-allowed.ndjson.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.support import API_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Schemathesis sends many requests without a key or with a wrong one from this one address (its
# ignored_auth check): past ETL_AUTH_FAILURES_PER_MINUTE the address would get 429 for everything,
# its right key included (tests/api/test_auth_failures.py), so the stack runs without that throttle.
STACK_ENV = {"ETL_AUTH_FAILURES_PER_MINUTE": "0"}
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VAR = ROOT / "var"


def test_the_cli_with_every_check_finds_only_the_listed_cross_field_rules(stack):
    VAR.mkdir(exist_ok=True)
    allowed, output = VAR / "contract-cli-allowed.ndjson", VAR / "contract-cli.txt"
    allowed.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{stack.web_url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {API_KEY}",
        "--max-examples",
        os.environ.get("ETL_FUZZ_EXAMPLES", "25"),
        "--seed",
        os.environ.get("ETL_FUZZ_SEED", "1"),
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "contract_hooks",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), str(ROOT)]),
        "ETL_CONTRACT_ALLOWED": str(allowed),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=840, check=False)
    output.write_text(done.stdout + done.stderr)
    let_through = Counter(
        (entry["operation"], entry["reason"])
        for entry in map(json.loads, allowed.read_text().splitlines() if allowed.exists() else [])
    )
    summary = done.stdout[done.stdout.rfind("SUMMARY") :] if "SUMMARY" in done.stdout else done.stdout[-3000:]
    shown = " ".join(command[1:]).replace(API_KEY, "$KEY")
    print(f"\nSCHEMATHESIS_HOOKS=contract_hooks st {shown}\n{summary}")
    print("let through:", json.dumps({f"{op}: {reason}": n for (op, reason), n in let_through.items()}, indent=1))
    assert done.returncode == 0, f"schemathesis found failures; see {output}\n{done.stdout[-8000:]}"
