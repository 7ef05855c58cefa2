"""Resident memory of process trees, sampled every 0.2 s in a thread."""

from __future__ import annotations

import os
import threading

import psutil

MIB = 1024 * 1024


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss_by_process(pid: int) -> dict[str, float]:
    """RSS in MiB of every process of the tree, keyed ``"<pid> <program>"`` (``(child)`` below the root)."""
    out = {}
    for proc in tree(pid):
        try:
            argv = proc.cmdline()
            program = os.path.basename(argv[1] if len(argv) > 1 and "python" in argv[0] else argv[0])
            suffix = "" if proc.pid == pid else " (child)"
            out[f"{proc.pid} {program}{suffix}"] = proc.memory_info().rss / MIB
        except (psutil.Error, IndexError):
            continue
    return out


def tree_rss(pid: int) -> float:
    """Summed RSS in MiB of the tree."""
    return sum(rss_by_process(pid).values())


class Sampler:
    """Peak summed RSS of named process trees; ``track`` adds a tree, ``reset`` starts a new phase."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.groups: dict[str, int] = {}
        self.peaks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def track(self, name: str, pid: int) -> None:
        with self._lock:
            self.groups[name] = pid

    def untrack(self, name: str) -> None:
        with self._lock:
            self.groups.pop(name, None)

    def reset(self) -> None:
        with self._lock:
            self.peaks = {}

    def sample(self) -> None:
        with self._lock:
            groups = dict(self.groups)
        for name, pid in groups.items():
            value = tree_rss(pid)
            with self._lock:
                self.peaks[name] = max(self.peaks.get(name, 0.0), value)

    def snapshot(self) -> dict[str, float]:
        """Peaks since the last reset, in MiB."""
        self.sample()
        with self._lock:
            return {name: round(v, 1) for name, v in self.peaks.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sampling hiccup must not end the benchmark
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
