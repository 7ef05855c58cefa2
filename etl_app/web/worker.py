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
"""

from __future__ import annotations

import gevent
from gunicorn.workers.ggevent import GeventWorker

from etl_app.config import Settings


class WebWorker(GeventWorker):
    """``gunicorn --worker-class etl_app.web.worker.WebWorker``."""

    def init_process(self) -> None:
        self.header_seconds = Settings.from_env().request_header_seconds
        super().init_process()

    def timeout_ctx(self) -> gevent.Timeout:
        """Around the reading of each request's headers (gunicorn's keep-alive loop): silent, so
        a connection that runs out of time is closed."""
        return gevent.Timeout(self.header_seconds, False)
