"""How many messages wait in each broker queue (``etl_queue_messages``): what ``/metrics`` exports
and the Overview page shows. Read from the broker itself: the Redis broker's lists, or RabbitMQ's
own count of each queue."""

from __future__ import annotations

import redis
from amqp.exceptions import AMQPError
from kombu import Connection
from kombu.exceptions import KombuError
from prometheus_client.core import GaugeMetricFamily

from etl_app.config import Settings, is_rabbitmq
from etl_app.names import QUEUES

# kombu's Redis transport keeps a queue's messages of priority n (3, 6, 9) in "<queue>\x06\x16<n>",
# priority 0 in "<queue>" itself; global_keyprefix goes in front of both. (kombu's
# queue_declare(passive=True) would ignore the prefix and report NOT_FOUND.)
_PRIORITY_SEP = "\x06\x16"


_PRIORITIES = ("", *(f"{_PRIORITY_SEP}{n}" for n in (3, 6, 9)))


UNACKED_KEY = "unacked"  # kombu's hash of messages delivered to a worker and not yet acknowledged
_AMQP_NOT_FOUND = 404


class BrokerUnavailable(Exception):
    """The broker did not answer (down, unreachable, refusing the credentials or the vhost)."""


def redis_queue_depths(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Messages waiting in each queue (all priorities), plus ``unacked``: delivered to a worker and
    not yet acknowledged (kombu's hash). Two round trips."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        for suffix in _PRIORITIES:
            pipe.llen(f"{prefix}{queue}{suffix}")
    pipe.hlen(f"{prefix}{UNACKED_KEY}")
    counts = pipe.execute()
    step = len(_PRIORITIES)
    depths = {queue: sum(counts[i * step : (i + 1) * step]) for i, queue in enumerate(QUEUES)}
    depths[UNACKED_KEY] = counts[-1]
    return depths


def rabbitmq_queue_depths(url: str, timeout: float) -> dict[str, int]:
    """Messages ready in each queue, as RabbitMQ counts them: a passive ``queue.declare`` per queue
    on a connection of its own, closed again (connect, handshake, reads and writes each give up
    after ``timeout`` seconds). A queue not declared yet (no worker has started on the vhost) holds
    0. Messages delivered and not yet acknowledged are not in these counts, and AMQP does not tell
    them (RabbitMQ's management API would)."""
    with Connection(
        url, connect_timeout=timeout, transport_options={"read_timeout": timeout, "write_timeout": timeout}
    ) as conn:
        conn.ensure_connection(max_retries=0)
        return {queue: rabbitmq_ready(conn, queue) for queue in QUEUES}


def rabbitmq_ready(conn: Connection, queue: str) -> int:
    """Messages ready in one RabbitMQ queue: a passive ``queue.declare`` on a channel of its own
    (RabbitMQ closes a channel that asked for a missing queue); 0 for a queue not declared yet."""
    channel = conn.channel()
    try:
        _, ready, _ = channel.queue_declare(queue=queue, passive=True)
    except conn.channel_errors as exc:
        if getattr(exc, "reply_code", None) != _AMQP_NOT_FOUND:
            raise
        return 0
    finally:
        if channel.is_open:
            channel.close()
    return ready


class QueueDepths:
    """The queue depths of one broker (:attr:`etl_app.config.Settings.broker_url`), for a process
    that reads them again and again: a Redis client kept between reads, or a connection to
    RabbitMQ made for each read. :meth:`read` raises :class:`BrokerUnavailable` when the broker
    does not answer within ``timeout`` seconds."""

    def __init__(self, broker_url: str, prefix: str, timeout: float) -> None:
        self.broker_url = broker_url
        self.prefix = prefix
        self.timeout = timeout
        self.rabbitmq = is_rabbitmq(broker_url)
        self._redis: redis.Redis | None = None

    def read(self) -> dict[str, int]:
        if self.rabbitmq:
            try:
                return rabbitmq_queue_depths(self.broker_url, self.timeout)
            except (OSError, AMQPError, KombuError) as exc:
                raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.broker_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        try:
            return redis_queue_depths(self._redis, self.prefix)
        except redis.RedisError as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc


def depth_family(depths: dict[str, int]) -> GaugeMetricFamily:
    """``etl_queue_messages{queue}`` of a reading."""
    family = GaugeMetricFamily(
        "etl_queue_messages",
        "Messages waiting in a broker queue; queue=unacked (Redis only): delivered, not yet acknowledged",
        labels=["queue"],
    )
    for queue, n in depths.items():
        family.add_metric([queue], n)
    return family


_READERS: dict[tuple[str, str, float], QueueDepths] = {}


def queue_depths(settings: Settings, timeout: float) -> QueueDepths:
    """This process's :class:`QueueDepths` of the deployment's broker, made on first use and kept
    between reads (one per broker URL, key prefix and timeout): what /metrics, the Overview page
    and the parse task read."""
    key = (settings.broker_url, settings.broker_key_prefix, timeout)
    reader = _READERS.get(key)
    if reader is None:
        reader = _READERS[key] = QueueDepths(*key)
    return reader
