"""The web process's gunicorn worker class: gevent's, with a deadline on each request's headers.

gunicorn's threaded worker gives a thread to a connection as soon as its first bytes arrive and
keeps it there while the headers and the body trickle in, with no time limit: a few dozen slow
clients held every thread and ``/health`` stopped answering. Under gevent a waiting connection
holds a greenlet, not a thread, so slow clients do not starve the others (up to
``--worker-connections`` per worker); psycopg 3, redis-py and kombu cooperate with it once the
standard library is patched, and the web process's own threads (the outbox relay) become
greenlets.

Deadlines: a connection must deliver the whole header block of its next request within
``ETL_REQUEST_HEADER_SECONDS`` of connecting (or of its previous answer), or it is closed; the
body's deadline is :mod:`etl_app.api.bodydeadline`'s.

The Date header of an answer, gunicorn's own, is formatted once a second (:func:`_http_date`).

One send per answer: gunicorn writes an answer's head, then each piece of its body, each with a
send of its own, so an API answer (one small piece) took two sends of the server and two reads
of the client. :class:`OneWriteResponse` sends the head with the first piece when that piece is
small; the worker has gunicorn build its HTTP/1 answers with it.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

from etl_app.config import Settings
from etl_app.logs import PerSecond

ONE_WRITE_BYTES = 64 * 1024  # a first piece up to this size goes out with the head


class _Gathered:
    """Stands for the socket while gunicorn writes the head and the first piece: keeps the bytes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)


_gunicorn_http_date = util.http_date
_date_now = PerSecond(_gunicorn_http_date)


def _http_date(timestamp: float | None = None) -> str:
    """gunicorn's ``util.http_date``, the current one worked out once a second (gunicorn formats
    it for every answer, through ``email.utils``)."""
    return _date_now(time.time()) if timestamp is None else _gunicorn_http_date(timestamp)


class OneWriteResponse(wsgi.Response):
    """gunicorn's HTTP/1 answer, whose head goes out in one send with the first piece of the body
    when that piece is at most :data:`ONE_WRITE_BYTES`: gunicorn's own code composes and frames
    both (status, headers, chunked framing, a HEAD's missing body), into :class:`_Gathered`."""

    def write(self, arg: Any) -> None:
        if self.headers_sent or not isinstance(arg, bytes) or len(arg) > ONE_WRITE_BYTES:
            super().write(arg)
            return
        sock, gathered = self.sock, _Gathered()
        self.sock = gathered
        try:
            super().write(arg)
        finally:  # what was gathered goes out whatever happened, as it would have
            self.sock = sock
            if gathered.parts:
                sock.sendall(b"".join(gathered.parts))


class WebWorker(GeventWorker):
    """``gunicorn --worker-class etl_app.web.worker.WebWorker``."""

    def init_process(self) -> None:
        self.header_seconds = Settings.from_env().request_header_seconds
        wsgi.Response = OneWriteResponse  # in this worker process: what gunicorn's wsgi.create builds
        util.http_date = _http_date  # every answer's Date header
        super().init_process()

    def timeout_ctx(self) -> gevent.Timeout:
        """Around the reading of each request's headers (gunicorn's keep-alive loop): silent, so
        a connection that runs out of time is closed."""
        return gevent.Timeout(self.header_seconds, False)
