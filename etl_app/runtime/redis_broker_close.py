"""A Redis broker that restarts must not stop a worker: closing a kombu Redis channel always ends.

What happens without this (kombu 5.7.0, celery 5.7.0, redis-py 8.2.0): when the broker goes
away, Celery's consumer (``on_connection_error_after_connected``) first ``collect()``s the
connection it lost, then closes it once more. kombu's Redis ``Channel.close`` starts by deleting
the bindings of the channel's auto-delete fanout queues (Celery's remote control and gossip have
such queues) and only then disconnects, restores the channel's unacknowledged messages and marks
itself closed. With the broker down, that first delete raises a connection error: the rest of
``close`` never runs, and ``Transport.close_connection``, which closes the connection's channels
one after the other, stops there. ``collect()`` swallows the error and detaches its transport
(``transport.client = None``) while channels it did not reach are still open, holding the
messages the worker had received and not acknowledged yet (prefetched, running, or waiting for
a countdown). The second close reaches such a channel, which restores its messages through the
detached transport: ``AttributeError: 'NoneType' object has no attribute 'hostname'`` in
``Channel._connparams``. That is not a connection error, so the worker logs "Unrecoverable
error" and exits (seen in one broker restart out of eight under load with the Procfile's
worker; ``tests/runtime/test_redis_broker_close.py`` makes it happen every time). Upstream
reports of the same shape: celery/kombu#582 and celery/kombu#970 (restoring unacknowledged
messages on a connection that is already gone), celery/kombu#2582 (a broker restart still
killing the consumer in 5.6).

The fix, applied once when the Celery app is made (:func:`install`):

- inside ``Channel.close``, a connection error while deleting a fanout binding is logged and
  skipped, so the channel always closes and the connection's other channels are closed too (a
  broker that restarted without persistence has lost those bindings anyway; one that kept them
  keeps a stale member of a fanout set, which only costs a message nobody reads);
- restoring the unacknowledged messages of a channel whose transport is already detached, or
  whose broker cannot be reached, is skipped with a warning instead of raising. Those messages
  are not lost: Redis keeps them in its ``unacked`` hash, and kombu's ``restore_visible`` (run
  by every worker) puts them back in their queue once the visibility timeout has passed; if the
  broker lost them (no persistence), the outbox sweeper sends their records again.

An acknowledgement the broker never gets must not stop a worker either. kombu's Redis
``QoS.ack`` (and ``reject``) first removes the message from the broker's unacknowledged set, and
only then releases the message's place in the channel's prefetch window. When the broker cannot
be reached (its host cut off, a restart), the first step raises; Celery logs "Couldn't ack" and
goes on, but the place stays taken. A worker whose every place was taken by messages it could not
acknowledge consumes nothing ever again: its prefetch window is full, so it asks the broker for
nothing (no BRPOP), so it never sees that the connection is gone or back, and nothing restarts
its consumer (seen in the hosts fault test: the cut worker ran both its tasks to the end during
the cut, failed both acknowledgements, and sat idle for minutes after the link came back). So:

- when acknowledging or rejecting raises a connection error, the message's place is released
  all the same, and the error goes on to Celery, which logs it. The message stays in the broker's
  unacknowledged set, and the broker gives it to a worker again after its visibility timeout
  (the stages skip records settled already), as it would for a worker that died.

``tests/runtime/test_redis_broker_close.py`` shows all three on a real Redis server, and the
fault tests ``tests/faults/test_faults_broker_restart.py`` (the broker restarted under load) and
``tests/faults/test_faults_hosts.py`` (a worker host cut off) run them in real workers.
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger(__name__)

_INSTALLED = "_etl_app_close_fix"


def _queue_delete_while_closing(original):
    def queue_delete(self, queue, *args, **kwargs):
        if not getattr(self, "_closing", False):
            return original(self, queue, *args, **kwargs)
        try:
            return original(self, queue, *args, **kwargs)
        except self.connection_errors as exc:
            log.info("broker unreachable while closing a channel: binding of %s left behind (%s)", queue, exc)
            return 0

    return queue_delete


def _restore_unacked_unless_gone(original):
    def restore_unacked(self, client=None):
        channel = self.channel
        transport = getattr(channel, "connection", None)
        if client is None and (transport is None or getattr(transport, "client", None) is None):
            log.warning(
                "not restoring %d unacknowledged message(s) of a closed broker connection: the broker "
                "puts them back after its visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return []
        try:
            return original(self, client)
        except channel.connection_errors as exc:
            log.warning(
                "broker unreachable: %d unacknowledged message(s) left to its visibility timeout (%s)",
                len(self._delivered),
                exc,
            )
            self._delivered.clear()
            return []

    return restore_unacked


def _release_even_if_unreachable(original):
    def settle(self, delivery_tag, *args, **kwargs):
        try:
            return original(self, delivery_tag, *args, **kwargs)
        except self.channel.connection_errors:
            virtual.QoS.ack(self, delivery_tag)  # this worker is done with it: free its place
            raise

    return settle


def install() -> None:
    """Patch kombu's Redis ``Channel.queue_delete`` and ``QoS.restore_unacked``, ``ack`` and
    ``reject`` (once)."""
    channel, qos = kombu_redis.Channel, kombu_redis.QoS
    if getattr(channel, _INSTALLED, False):
        return
    channel.queue_delete = _queue_delete_while_closing(channel.queue_delete)
    qos.restore_unacked = _restore_unacked_unless_gone(qos.restore_unacked)
    qos.ack = _release_even_if_unreachable(qos.ack)
    qos.reject = _release_even_if_unreachable(qos.reject)
    setattr(channel, _INSTALLED, True)
