"""Progress while the benchmark runs: a rich progress bar on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Off a terminal rich would wrap at 80 columns; the table needs about 110.
console = Console() if sys.stdout.isatty() else Console(width=int(os.environ.get("COLUMNS", "120")))


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


class Step:
    """One counted step: ``update(done)``; on a terminal a bar, else a line every 5 s."""

    def __init__(self, description: str, total: int, bar: Progress | None) -> None:
        self.description, self.total, self.bar = description, total, bar
        self.started = self._last_line = time.monotonic()
        self.done = 0
        self.task = bar.add_task(description, total=total) if bar is not None else None

    def update(self, done: int) -> None:
        self.done = done
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
            return
        now = time.monotonic()
        if now - self._last_line >= 5:
            self._last_line = now
            rate = done / (now - self.started) if now > self.started else 0
            say(f"  {self.description}: {done:,}/{self.total:,} ({rate:,.0f}/s)")


@contextmanager
def step(description: str, total: int) -> Iterator[Step]:
    if console.is_terminal:
        columns = (TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            yield Step(description, total, bar)
    else:
        yield Step(description, total, None)
