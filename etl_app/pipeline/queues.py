"""How many messages wait in each broker queue (``etl_queue_messages``), read from the Redis
broker's lists: what ``/metrics`` exports and the Overview page shows."""

from __future__ import annotations

import redis
from prometheus_client.core import GaugeMetricFamily

from etl_app.names import DEAD_LETTER_QUEUE, JOBS_QUEUE, LOOKUPS_QUEUE, PIPELINE_QUEUE

QUEUES = (PIPELINE_QUEUE, LOOKUPS_QUEUE, JOBS_QUEUE, DEAD_LETTER_QUEUE)


# kombu's Redis transport keeps a queue's messages of priority n (3, 6, 9) in "<queue>\x06\x16<n>",
# priority 0 in "<queue>" itself; global_keyprefix goes in front of both. (kombu's
# queue_declare(passive=True) would ignore the prefix and report NOT_FOUND.)
_PRIORITY_SEP = "\x06\x16"


_PRIORITIES = ("", *(f"{_PRIORITY_SEP}{n}" for n in (3, 6, 9)))


UNACKED_KEY = "unacked"  # kombu's hash of messages delivered to a worker and not yet acknowledged


def queue_depths(client: redis.Redis, prefix: str) -> GaugeMetricFamily:
    """``etl_queue_messages{queue}``: messages waiting in each queue (all priorities), plus
    ``queue="unacked"``: delivered to a worker and not yet acknowledged."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        for suffix in _PRIORITIES:
            pipe.llen(f"{prefix}{queue}{suffix}")
    pipe.hlen(f"{prefix}{UNACKED_KEY}")
    counts = pipe.execute()
    family = GaugeMetricFamily(
        "etl_queue_messages",
        "Messages waiting in a broker queue; queue=unacked: delivered, not yet acknowledged",
        labels=["queue"],
    )
    step = len(_PRIORITIES)
    for i, queue in enumerate(QUEUES):
        family.add_metric([queue], sum(counts[i * step : (i + 1) * step]))
    family.add_metric([UNACKED_KEY], counts[-1])
    return family
