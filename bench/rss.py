"""Resident memory (sampled every 0.2 s in a thread) and CPU time of process trees."""

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
        self.current: dict[str, float] = {}  # group -> summed RSS at the last sample
        self.largest_process: dict[str, float] = {}  # group -> largest RSS of one process since the last reset
        self.cpu: dict[str, dict[int, float]] = {}  # group -> pid -> CPU seconds seen last
        self.cpu_base: dict[str, dict[int, float]] = {}  # the same at the last reset
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
        self.sample()
        with self._lock:
            self.peaks = {}
            self.largest_process = {}
            self.cpu_base = {name: dict(v) for name, v in self.cpu.items()}

    def sample(self) -> None:
        with self._lock:
            groups = dict(self.groups)
        for name, pid in groups.items():
            rss, largest, cpu = 0.0, 0.0, {}
            for proc in tree(pid):
                try:
                    with proc.oneshot():
                        one = proc.memory_info().rss / MIB
                        rss += one
                        largest = max(largest, one)
                        times = proc.cpu_times()
                        cpu[proc.pid] = times.user + times.system
                except psutil.Error:
                    continue
            with self._lock:
                self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
                self.current[name] = rss
                self.largest_process[name] = max(self.largest_process.get(name, 0.0), largest)
                self.cpu.setdefault(name, {}).update(cpu)

    def snapshot(self) -> dict[str, float]:
        """Peaks since the last reset, in MiB."""
        self.sample()
        with self._lock:
            return {name: round(v, 1) for name, v in self.peaks.items()}

    def largest(self) -> dict[str, float]:
        """The largest RSS of any one process of each tree since the last reset, in MiB."""
        self.sample()
        with self._lock:
            return {name: round(v, 1) for name, v in self.largest_process.items()}

    def current_total(self) -> float:
        """The summed RSS of every tracked tree at the last sample, in MiB."""
        with self._lock:
            return sum(self.current.values())

    def cpu_seconds(self) -> dict[str, dict[str, float]]:
        """CPU seconds each tree used since the last reset: its main process and its children
        (a process that ended between samples counts up to its last sample)."""
        self.sample()
        out = {}
        with self._lock:
            for name, pid in self.groups.items():
                base = self.cpu_base.get(name, {})
                used = {p: t - base.get(p, 0.0) for p, t in self.cpu.get(name, {}).items()}
                main = used.pop(pid, 0.0)
                out[name] = {"main": round(main, 3), "children": round(sum(used.values()), 3)}
        return out

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
