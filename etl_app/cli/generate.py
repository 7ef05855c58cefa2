"""``etl-app generate``: deterministic synthetic records."""

from __future__ import annotations

import click


@click.command()
@click.argument("record_type", type=click.Choice(["tutors", "students", "sessions", "feedback"]))
@click.option("--count", type=click.IntRange(min=0), help="How many records (default: 1000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same output.")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "json"]), default="ndjson", show_default=True)
@click.option("--id-prefix", default="", help="Prefix for every id (keeps runs apart).")
@click.option(
    "--for-sessions",
    type=click.IntRange(min=0),
    help="Instead of --count: exactly the records that go with the first N sessions of this seed "
    "(their tutors, students or feedback).",
)
@click.option("-o", "--output", type=click.File("wb"), default="-", help="Output file (default: stdout).")
def generate(record_type: str, count: int | None, seed: int, fmt: str, id_prefix: str, for_sessions, output) -> None:
    """Write deterministic synthetic records of RECORD_TYPE (NDJSON by default)."""
    from etl_app.local import generate as gen

    if count is not None and for_sessions is not None:
        raise click.UsageError("give --count or --for-sessions, not both")
    try:
        if for_sessions is not None:
            records = gen.dataset(for_sessions, seed, id_prefix=id_prefix).stream(record_type)
        else:
            records = gen.generate(record_type, 1000 if count is None else count, seed, id_prefix=id_prefix)
        gen.write_records(records, output, fmt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
