"""A broker connection lost while the worker reads a large result must not stop the worker.

What happens without this (celery 5.7.0): a prefork worker's main process reads what its pool
processes send back (each task's result or error) from one pipe per process, in its event loop
and without blocking: a message the pipe does not yet hold in full is read part-way, and the rest
is read by a generator the loop keeps as that pipe's reader. A pipe holds 64 KiB; a larger message
(a task's error with a long message or traceback, say) is always read in parts, the process
writing the rest as the main process makes room. When the broker connection is lost, Celery's
event loop resets its hub (``hub.reset()`` in ``celery.worker.loops.asynloop``), which forgets every
reader, the part-way generator too, and the consumer then registers a fresh reader on each pipe.
That fresh reader takes the middle of the half-read message for the start of a new one: it reads
four bytes of the message as a length, waits for that many bytes, and never finishes. The process
that sent the message is from then on busy for good in the main process's eyes: it is given no
more tasks, and the task's message is never acknowledged. A worker whose processes all end so
stops running anything while it still receives (and holds) messages from the broker.

Seen in the hosts fault test on RabbitMQ (a worker host cut off while its tasks failed with long
errors; after the link came back the worker received four messages and ran none, and at its stop
Celery logged "did not finish writing a result within 10.0s" for the stuck process).
``tests/runtime/test_pool_partial_reads.py`` makes it happen every time: a task fails with a 1 MB
error, its process is held part-way through writing it, and the broker closes the worker's
connection.

The fix, applied once when the Celery app is made (:func:`install`): the generator reading a pipe
part-way is remembered by the pipe (and the pool process it belongs to) until its message is
complete, and the reader the consumer registers again after the reset carries on with it instead
of starting a new message. A remembered generator whose pipe now belongs to another process (the
first one died and its file descriptor was given to its replacement) is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from celery.concurrency import asynpool

log = logging.getLogger(__name__)

_PARTIAL = "_etl_partial_reads"
RESUMED = "a pool process's message read part-way before the event loop was reset: reading on"


def install() -> None:
    """Patch Celery's prefork result reader once (idempotent)."""
    handler = asynpool.ResultHandler
    if getattr(handler, "_etl_partial_reads_installed", False):
        return
    original_recv, original_make = handler._recv_message, handler._make_process_result

    def _recv_message(self, add_reader, fd, callback, *args: Any, **kwargs: Any) -> Generator[None]:
        reading = original_recv(self, add_reader, fd, callback, *args, **kwargs)
        partial = _partial_reads(self)
        tracked = _tracked(reading, fd, partial)
        partial[fd] = (tracked, reading, self.fileno_to_outq.get(fd))
        return tracked

    def _make_process_result(self, hub):
        fresh = original_make(self, hub)
        partial = _partial_reads(self)

        def on_result_readable(fileno: int) -> None:
            entry = partial.get(fileno)
            if entry is None:
                return fresh(fileno)
            tracked, _reading, owner = entry
            if self.fileno_to_outq.get(fileno) is not owner:  # another process's pipe now
                partial.pop(fileno, None)
                tracked.close()
                return fresh(fileno)
            # only a reset mid-message gets here: until then the hub drives the generator itself
            log.info("%s (fd %d)", RESUMED, fileno)
            try:
                next(tracked)
            except StopIteration:
                pass
            except (OSError, EOFError):
                hub.remove_reader(fileno)
            else:
                hub.add_reader(fileno, tracked)
            return None

        return on_result_readable

    handler._recv_message = _recv_message
    handler._make_process_result = _make_process_result
    handler._etl_partial_reads_installed = True


def _partial_reads(result_handler) -> dict[int, tuple[Generator[None], Generator[None], Any]]:
    """fd → (the tracked generator, the reader it drives, the pool process the pipe belonged to)."""
    return result_handler.__dict__.setdefault(_PARTIAL, {})


def _tracked(reading: Generator[None], fd: int, partial: dict) -> Generator[None]:
    """``reading``, forgotten once it ends (its message complete, or its pipe failed)."""
    try:
        yield from reading
    finally:
        entry = partial.get(fd)
        if entry is not None and entry[1] is reading:
            del partial[fd]
