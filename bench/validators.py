"""``python -m bench.validators``: µs per record of the record schemas, marshmallow vs the fast path.

For each built-in type it validates the same records from ``etl-app generate`` (``--records``,
default 2,000, seed 1) with the marshmallow schema alone (``schema.load``), with the fast path
alone (``schemas.fast``) and through ``RecordType.validate`` without the fast path (before) and
with it (after: the fast path, marshmallow for what it refuses, then the type's as-of rules), and
prints the best of ``--repeat`` runs in µs per record
(one process, one thread: CPU time of the validation only, no I/O). It also counts the records
the fast path left to marshmallow (0 for generated records), and, when pydantic is installed,
times the shape check alone (known fields, required ones, JSON types; no field rules) with
msgspec and with a strict pydantic v2 model, the choice docs/benchmark.md records.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from etl_app.local.generate import generate
from etl_app.record_types import get_registry

AS_OF = datetime(2026, 11, 2, tzinfo=UTC)  # after etl_app.local.generate's REFERENCE: every record is valid


def per_record(fn: Callable[[Any], Any], records: Sequence[Any], repeat: int) -> float:
    """The best of ``repeat`` passes over ``records``, in µs of this process's CPU per record (CPU
    time, not wall time: other processes on the machine do not count)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for record in records:
            fn(record)
        best = min(best, time.process_time() - start)
    return best / len(records) * 1e6


def shape_check(records: Sequence[dict[str, Any]], repeat: int) -> tuple[float, float] | None:
    """msgspec vs strict pydantic v2, shape only, on sessions; None without pydantic."""
    try:
        import pydantic
    except ImportError:
        return None
    import msgspec

    loader = get_registry()["sessions"].loader
    specs = {}
    for name, field in loader.load_fields.items():
        kind = type(field).__name__
        value_type = {"StrictInt": int, "Number": float, "StrictBool": bool, "StrList": list[str]}.get(kind, str)
        specs[name] = (value_type, ...) if field.required else (value_type | None, None)
    model = pydantic.create_model("Sessions", __config__=pydantic.ConfigDict(strict=True, extra="forbid"), **specs)
    struct = msgspec.defstruct(
        "Sessions",
        [(n, t) if d is ... else (n, t, d) for n, (t, d) in specs.items()],
        kw_only=True,
        forbid_unknown_fields=True,
    )
    return (
        per_record(lambda r: msgspec.convert(r, struct), records, repeat),
        per_record(model.model_validate, records, repeat),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.validators", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per type (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="passes; the best is reported (default 5)")
    args = parser.parse_args(argv)
    registry = get_registry()
    print(
        f"{'µs/record':<10} {'schema.load':>12} {'fast_load':>10} {'validate(): before':>12} {'after':>11} "
        f"{'speed-up':>9} {'left to marshmallow':>20}"
    )
    sessions: list[dict[str, Any]] = []
    for name in ("tutors", "students", "sessions", "feedback"):
        record_type = registry[name]
        records = list(generate(name, args.records, 1))
        if name == "sessions":
            sessions = records
        fast = record_type.fast_load
        assert fast is not None
        schema_only = dataclasses.replace(record_type, fast_load=None)
        slow_us = per_record(record_type.loader.load, records, args.repeat)
        fast_us = per_record(fast, records, args.repeat)
        before_us = per_record(lambda r, t=schema_only: t.validate(r, AS_OF), records, args.repeat)
        after_us = per_record(lambda r, t=record_type: t.validate(r, AS_OF), records, args.repeat)
        refused = sum(fast(r) is None for r in records)
        print(
            f"{name:<10} {slow_us:>9.1f} µs {fast_us:>7.1f} µs {before_us:>9.1f} µs {after_us:>8.1f} µs "
            f"{before_us / after_us:>8.1f}x {refused:>12} of {len(records)}"
        )
    shapes = shape_check(sessions, args.repeat)
    if shapes is not None:
        print(f"shape check only (sessions): msgspec {shapes[0]:.2f} µs, pydantic v2 strict {shapes[1]:.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
