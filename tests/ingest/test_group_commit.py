"""Group commit (etl_app.ingest.group_commit): requests that arrive while a group is written share
the next write; each gets its own outcome; an interrupted wait neither stores its item nor stalls
the queue. Threads stand in for the web process's greenlets."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from etl_app.ingest.group_commit import GroupCommit, LeaderInterrupted, _Entry

pytestmark = pytest.mark.unit


class Interrupted(BaseException):
    """What a request's deadline raises in it (gevent.Timeout is not an Exception either)."""


class Writer:
    """Records each group; the first write waits for ``release`` (so that others queue)."""

    def __init__(self, outcome=lambda item: item * 10) -> None:
        self.groups: list[list[int]] = []
        self.started, self.release = threading.Event(), threading.Event()
        self.outcome = outcome

    def __call__(self, items: Sequence[int]) -> list[object]:
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.started.set()
            assert self.release.wait(10)
        return [self.outcome(i) for i in items]


def submit_in_thread(group: GroupCommit, item: int, results: dict[int, object]) -> threading.Thread:
    def run() -> None:
        try:
            results[item] = group.submit(item)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            results[item] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def queued(group: GroupCommit, n: int) -> None:
    for _ in range(1000):
        with group._lock:
            if len(group._queue) >= n:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"{n} items never queued")


def test_one_alone_is_written_at_once_by_itself():
    writer = Writer()
    writer.release.set()
    group = GroupCommit(writer)
    assert group.submit(1) == 10
    assert group.submit(2) == 20
    assert writer.groups == [[1], [2]]


def writing_one(writer: Writer) -> tuple[GroupCommit, dict[int, object], threading.Thread]:
    """A group whose first write (of item 1, by the returned thread) has started and waits."""
    group = GroupCommit(writer)
    results: dict[int, object] = {}
    first = submit_in_thread(group, 1, results)
    assert writer.started.wait(10)
    return group, results, first


def one_then_three_during_its_write(writer: Writer) -> tuple[GroupCommit, dict[int, object]]:
    """Item 1 written alone, items 2, 3 and 4 submitted while it is; their results once all are done."""
    group, results, first = writing_one(writer)
    others = [submit_in_thread(group, i, results) for i in (2, 3, 4)]
    queued(group, 3)
    writer.release.set()
    for thread in (first, *others):
        thread.join(10)
    return group, results


def test_those_that_arrive_during_a_write_share_the_next_one_and_each_gets_its_own_result():
    writer = Writer()
    group, results = one_then_three_during_its_write(writer)
    assert writer.groups == [[1], [2, 3, 4]]
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}
    assert not group._leading and not group._queue


def test_an_item_refused_fails_only_its_own_request():
    refused = ValueError("refused")
    _, results = one_then_three_during_its_write(Writer(outcome=lambda item: refused if item == 3 else item * 10))
    assert results == {1: 10, 2: 20, 3: refused, 4: 40}


def test_a_write_that_raises_fails_its_whole_group_and_the_next_group_is_written():
    calls = []

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("database down")
        return [i * 10 for i in items]

    group = GroupCommit(write)
    with pytest.raises(ConnectionError):
        group.submit(1)
    assert group.submit(2) == 20


def test_a_leader_interrupted_gives_its_group_a_database_error_and_the_lead_to_the_next():
    writer = Writer()
    group = GroupCommit(writer)
    interrupted = False

    def write(items: Sequence[int]) -> list[object]:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            writer.started.set()
            queued(group, 1)
            raise Interrupted  # not an Exception: the others must not get it raised in their request
        return [i * 10 for i in items]

    group._write = write
    results: dict[int, object] = {}
    leader = submit_in_thread(group, 1, results)
    assert writer.started.wait(10)
    follower = submit_in_thread(group, 2, results)
    leader.join(10)
    follower.join(10)
    assert isinstance(results[1], Interrupted)
    assert results[2] == 20  # queued after the interrupted group: written next
    assert not group._leading


def test_a_request_interrupted_while_queued_is_not_written_and_the_queue_goes_on(monkeypatch):
    writer = Writer()
    group, results, first = writing_one(writer)

    gave_up = threading.Event()
    real_wait = group._wait

    def wait(entry: _Entry) -> None:
        if entry.item == 2:
            monkeypatch.setattr(entry.done, "wait", lambda *a: (_ for _ in ()).throw(Interrupted()))
            try:
                real_wait(entry)
            finally:
                gave_up.set()
        else:
            real_wait(entry)

    monkeypatch.setattr(group, "_wait", wait)
    second = submit_in_thread(group, 2, results)
    assert gave_up.wait(10)
    third = submit_in_thread(group, 3, results)
    queued(group, 1)
    writer.release.set()
    for thread in (first, second, third):
        thread.join(10)
    assert isinstance(results[2], Interrupted)
    assert writer.groups == [[1], [3]]  # 2 was never written
    assert results[3] == 30


def test_a_request_interrupted_just_as_it_is_given_the_lead_passes_it_on(monkeypatch):
    writer = Writer()
    group, results, first = writing_one(writer)

    real_wait = group._wait

    def wait(entry: _Entry) -> None:
        if entry.item == 2:  # woken with the lead, then interrupted before it writes
            real_done_wait = entry.done.wait

            def done_then_interrupted(*args):
                real_done_wait(*args)
                raise Interrupted

            monkeypatch.setattr(entry.done, "wait", done_then_interrupted)
        real_wait(entry)

    monkeypatch.setattr(group, "_wait", wait)
    second = submit_in_thread(group, 2, results)
    queued(group, 1)
    third = submit_in_thread(group, 3, results)
    queued(group, 2)
    writer.release.set()
    for thread in (first, second, third):
        thread.join(10)
        assert not thread.is_alive()
    assert isinstance(results[2], Interrupted)
    assert writer.groups == [[1], [3]]
    assert results[3] == 30
    assert not group._leading and not group._queue


def test_a_follower_of_an_interrupted_leader_gets_a_database_error():
    assert issubclass(LeaderInterrupted, Exception)
    from etl_app import errors

    assert errors.classify(LeaderInterrupted("x")) is errors.DatabaseUnavailable
