"""Workers on several hosts, and a partition (tests/helpers/partition.py): web on one network
namespace, a worker and a beat on two others, PostgreSQL and the broker reached over the links.
One worker host's link is cut mid-batch for longer than the broker needs to notice, then
restored, on Redis and on RabbitMQ: every record ends exactly once, the cut host's work is
delivered again to the other host, PostgreSQL ends the cut host's sessions (and so its locks)
during the cut, the cut host consumes again once it is back, and the two beats never run the job
at once (a run the cut host had started is closed "abandoned" by the other's next run).
Root only (``ip netns``); RabbitMQ: the machine's, on 127.0.0.1:5672."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.faultlib import Outcome, assert_exactly_once, report
from tests.helpers.hosts import RabbitVhost, netns_available
from tests.helpers.partition import BROKERS, Figures, MultiHost

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

COMPARE = ("name", "grade_level")


@pytest.fixture(autouse=True)
def services_restored() -> Iterator[None]:
    """This module's servers are its own (they listen on the hosts' link): the fault tests'
    private PostgreSQL and Redis are not started for it."""
    yield


def check(fig: Figures, o: Outcome) -> None:
    assert (o.persisted, o.dead) == (o.accepted, 0), o
    # h2's work went to h3, and h2 came back
    assert fig.held_at_cut > 0
    assert fig.moved > 0, "no task the cut host held was received by the other host"
    assert fig.redelivered_after_cut_s is not None and fig.redelivered_after_cut_s < fig.cut_s
    assert fig.redelivered > 0, "the broker delivered nothing again"
    # PostgreSQL ended the cut host's sessions (keepalives), and with them the locks they held
    assert fig.cut_host_sessions == 0, "the cut host's sessions outlived the cut"
    assert fig.rejoined_after_restore_s is not None, "the cut host ran nothing it received after the restore"
    assert fig.settled_after_cut_s is not None
    # two beats on two hosts: the job never ran twice at once, and no send ran twice
    assert fig.beat_back_after_restore_s is not None, "the cut host's beat sent nothing after the restore"
    assert all(n > 0 for n in fig.beat_sends.values()), fig.beat_sends
    # a run the cut host had started is closed "abandoned" by the next run once PostgreSQL has
    # ended its session (and so released its lock); no run failed otherwise
    assert set(fig.job_runs) <= {"succeeded", "skipped", "failed"}, fig.job_runs
    assert fig.job_runs.get("failed", 0) == fig.abandoned <= 1, (fig.job_runs, fig.abandoned)
    assert fig.job_runs.get("succeeded", 0) >= 2, fig.job_runs
    assert fig.overlapping_runs == 0
    assert fig.runs_of_one_send == 0
    assert sum(fig.job_runs.values()) >= fig.beat_sends["h3"], "a send of the beat that was never cut off was lost"


@pytest.mark.parametrize("broker", BROKERS)
def test_a_worker_host_cut_off_mid_batch_and_back(broker, tmp_path, registry):
    if reason := netns_available():
        pytest.skip(reason)
    if broker == "rabbitmq" and (reason := RabbitVhost.available()):
        pytest.skip(f"no RabbitMQ on 127.0.0.1:5672: {reason}")
    with MultiHost(broker, tmp_path) as mh:
        try:
            fig = mh.run()
            print(f"\n[{broker}] {fig.line()}")
            o = assert_exactly_once(mh.engine, registry, answers=mh.answers, compare=COMPARE)
            check(fig, o)
        except BaseException:
            print(mh.tails())
            raise
    report(
        "worker host cut off mid-batch",
        o,
        fig.settle_s,
        broker=broker,
        cut_s=fig.cut_s,
        redelivered_after_cut_s=fig.redelivered_after_cut_s,
        settled_after_restore_s=fig.settled_after_restore_s,
        rejoined_after_restore_s=fig.rejoined_after_restore_s,
        redelivered=fig.redelivered,
        duplicates=fig.duplicates,
        moved=fig.moved,
        cut_host_sessions=fig.cut_host_sessions,
        ran_twice=fig.ran_twice,
        swept=fig.swept,
        beat_back_after_restore_s=fig.beat_back_after_restore_s,
        job_runs=fig.job_runs,
    )
