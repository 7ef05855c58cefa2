"""``etl-app generate``: deterministic synthetic records, as JSON, NDJSON, CSV, TSV, XLSX or Parquet."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

FORMATS = ("ndjson", "json", "csv", "tsv", "xlsx", "parquet")
EXTENSIONS = {
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".xlsx": "xlsx",
    ".parquet": "parquet",
}


def output_format(fmt: str | None, output: str) -> str:
    """The format asked for, else the one of the output file's extension, else NDJSON."""
    if fmt is not None:
        return fmt
    return EXTENSIONS.get(Path(output).suffix.lower(), "ndjson") if output != "-" else "ndjson"


@click.command()
@click.argument("record_type", type=click.Choice(["tutors", "students", "sessions", "feedback"]))
@click.option("--count", type=click.IntRange(min=0), help="How many records (default: 1000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same output.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Output format (default: from the output file's extension, else ndjson). Flat formats "
    "have one column per field of the type; lists are ;-joined.",
)
@click.option("--id-prefix", default="", help="Prefix for every id (keeps runs apart).")
@click.option(
    "--for-sessions",
    type=click.IntRange(min=0),
    help="Instead of --count: exactly the records that go with the first N sessions of this seed "
    "(their tutors, students or feedback).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Output file (default: stdout; xlsx and parquet need a file).",
)
def generate(record_type: str, count: int | None, seed: int, fmt: str | None, id_prefix: str, for_sessions, output):
    """Write deterministic synthetic records of RECORD_TYPE (NDJSON by default)."""
    from etl_app.local import generate as gen
    from etl_app.local.generate_formats import BINARY_FORMATS, XLSX_MAX_ROWS, TooManyRows

    if count is not None and for_sessions is not None:
        raise click.UsageError("give --count or --for-sessions, not both")
    fmt = output_format(fmt, output)
    if fmt in BINARY_FORMATS and output == "-":
        raise click.UsageError(f"{fmt} is a binary file format: give an output file, e.g. -o {record_type}.{fmt}")
    try:
        if for_sessions is not None:
            data = gen.dataset(for_sessions, seed, id_prefix=id_prefix)
            expected = for_sessions if record_type == "feedback" else data.counts[record_type]  # at most
            records = data.stream(record_type)
        else:
            expected = 1000 if count is None else count
            records = gen.generate(record_type, expected, seed, id_prefix=id_prefix)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if fmt == "xlsx" and expected > XLSX_MAX_ROWS and (record_type != "feedback" or for_sessions is None):
        raise click.UsageError(
            f"xlsx holds at most {XLSX_MAX_ROWS:,} rows of data (Excel's limit), not {expected:,}: "
            "use csv or parquet, or a smaller --count"
        )
    if output == "-":
        gen.write_records(records, sys.stdout.buffer, fmt, record_type)
        return
    try:
        with open(output, "wb") as fh:
            gen.write_records(records, fh, fmt, record_type)
    except TooManyRows as exc:
        with contextlib.suppress(OSError):
            os.unlink(output)
        raise click.UsageError(f"{exc}: use csv or parquet, or fewer sessions") from None
