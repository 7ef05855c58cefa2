"""A range of UTC days as an operator asks for it (``from``/``to``, both inclusive): the rule of
the quality and tutor-rollup reports, in the API and on the Quality page alike."""

from __future__ import annotations

import re
from datetime import date, timedelta

MAX_DAYS = 366


DEFAULT_DAYS = 30


_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class BadRange(ValueError):
    """A ``from``/``to`` that names no range; ``parameter`` is the one to blame."""

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_day(name: str, raw: str) -> date:
    """``raw`` as a day (YYYY-MM-DD), or :class:`BadRange` naming ``name``."""
    try:
        if not _DAY_RE.fullmatch(raw.strip()):
            raise ValueError
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise BadRange(f"{name}: {raw[:40]!r} is not a day; write it as YYYY-MM-DD.", name) from None


def parse_day_range(raw_from: str | None, raw_to: str | None, today: date) -> tuple[date, date]:
    """The days asked, both ends inclusive (None: ``to`` today, ``from`` :data:`DEFAULT_DAYS` days
    up to ``to``), at most :data:`MAX_DAYS`; :class:`BadRange` otherwise. The API's and the Quality
    page's rule."""
    end = parse_day("to", raw_to) if raw_to is not None else today
    start = parse_day("from", raw_from) if raw_from is not None else end - timedelta(days=DEFAULT_DAYS - 1)
    if end < start:
        raise BadRange(f"The range ends ({end}) before it starts ({start}).", "to")
    if (end - start).days + 1 > MAX_DAYS:
        raise BadRange(f"A range covers at most {MAX_DAYS} days; this one has {(end - start).days + 1}.", "from")
    return start, end
