"""Durations as people read them (``42.7s``, ``3m 20s``, ``2h 5m``, ``120d 7h``), and as exact
seconds (``10,394,437.25 s``) for where precision is wanted (the pages' hover text).

One formatter for every place that shows a duration: the command line's quality report, the
pages' scorecard, Quality table and Overview. The choices:

- two units at most, the largest first: under a minute, seconds with tenths; under an hour,
  minutes and seconds; under a day, hours and minutes; then days and hours;
- every unit counts whole units elapsed, like a clock: 59.99 s is ``59.9s``, 7,199 s is
  ``1h 59m``, never rounded up into a unit that has not been reached;
- the sign is kept (a negative lag is an event after its receipt) unless what is shown is zero;
- the arithmetic is on the number's shortest decimal form (``repr``), so 2.3 s is ``2.3s`` and
  not the ``2.2s`` that binary floating point would truncate to.
"""

from __future__ import annotations

import math
from decimal import Decimal

MINUTE, HOUR, DAY = 60, 3600, 86400


def human(seconds: float) -> str:
    """``seconds`` in at most two units (see the module's rules); a value that is not a finite
    number as it comes."""
    value = float(seconds)
    if not math.isfinite(value):
        return str(value)
    size = Decimal(repr(abs(value)))
    if size < MINUTE:
        tenths = int(size * 10)
        text, zero = f"{tenths // 10}.{tenths % 10}s", tenths == 0
    else:
        whole = int(size)
        if whole < HOUR:
            text = f"{whole // MINUTE}m {whole % MINUTE}s"
        elif whole < DAY:
            text = f"{whole // HOUR}h {whole % HOUR // MINUTE}m"
        else:
            text = f"{whole // DAY}d {whole % DAY // HOUR}h"
        zero = False
    return ("-" if value < 0 and not zero else "") + text


def exact(seconds: float) -> str:
    """``seconds`` to the millisecond with thousands separators, no trailing zeros: ``60 s``,
    ``10,394,437.25 s``."""
    value = float(seconds)
    if not math.isfinite(value):
        return f"{value} s"
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{'0' if text in ('-0', '') else text} s"
