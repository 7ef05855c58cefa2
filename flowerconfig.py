"""Flower's configuration file: the Procfile's flower line passes it (``--conf=flowerconfig.py``)
and Flower runs it as Python before it starts its web server.

Flower has no setting for extra response headers (``--xheaders`` only trusts a proxy's
X-Forwarded-For), so this adds the two that forbid showing its pages in another site's frame
(clickjacking) to every answer of its web server: pages, API, static files and 401s alike.
Tornado sets a handler's default headers in ``clear()``, which every handler runs first and again
before an error page; Flower's own handlers override ``set_default_headers`` without calling the
base one, hence ``clear``.

Settings for Flower itself (FLOWER_BASIC_AUTH, FLOWER_PORT, ...) stay in the environment; a name
defined here that is one of Flower's options would set it, so this file defines none.
"""

import tornado.web

_FRAME_HEADERS = (("X-Frame-Options", "DENY"), ("Content-Security-Policy", "frame-ancestors 'none'"))
_tornado_clear = tornado.web.RequestHandler.clear


def _clear_and_forbid_framing(handler: tornado.web.RequestHandler) -> None:
    _tornado_clear(handler)
    for name, value in _FRAME_HEADERS:
        handler.set_header(name, value)


tornado.web.RequestHandler.clear = _clear_and_forbid_framing
