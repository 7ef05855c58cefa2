"""Flower's configuration file: the Procfile's flower line passes it (``--conf=flowerconfig.py``)
and Flower runs it as Python before it starts its web server.

Flower has no setting for extra response headers (``--xheaders`` only trusts a proxy's
X-Forwarded-For), so this adds the two that forbid showing its pages in another site's frame
(clickjacking) to every answer of its web server: pages, API, static files and 401s alike.
Tornado sets a handler's default headers in ``clear()``, which every handler runs first and again
before an error page; Flower's own handlers override ``set_default_headers`` without calling the
base one, hence ``clear``.

As it starts, Flower asks the workers for their stats, queues, registered tasks and settings;
the workers, started beside it, have not answered yet, and Flower logged "Inspect method stats
failed" and three more such lines at every start. A filter drops those no-answer lines during
Flower's first minute; one with a cause (the broker unreachable) and any later one still show.

Settings for Flower itself (FLOWER_BASIC_AUTH, FLOWER_PORT, ...) stay in the environment; a name
defined here that is one of Flower's options (``logging`` is one: Tornado's log level) would set
it, so this file defines none: its own names start with ``_``.
"""

import logging as _logging
import time as _time

import tornado.web

_START_UP_SECONDS = 60.0
_started = _time.monotonic()


class _WorkersNotUpYet(_logging.Filter):
    """Drops flower.inspector's "Inspect method %s failed" (no worker answered) in the start-up window."""

    def filter(self, record: _logging.LogRecord) -> bool:
        no_answer = record.msg == "Inspect method %s failed"
        return not (no_answer and _time.monotonic() - _started < _START_UP_SECONDS)


_logging.getLogger("flower.inspector").addFilter(_WorkersNotUpYet())

_FRAME_HEADERS = (("X-Frame-Options", "DENY"), ("Content-Security-Policy", "frame-ancestors 'none'"))
_tornado_clear = tornado.web.RequestHandler.clear


def _clear_and_forbid_framing(handler: tornado.web.RequestHandler) -> None:
    _tornado_clear(handler)
    for name, value in _FRAME_HEADERS:
        handler.set_header(name, value)


tornado.web.RequestHandler.clear = _clear_and_forbid_framing
