"""Flask JSON through orjson: ISO 8601 datetimes and dates, UUIDs as strings."""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import JSONProvider

from etl_app.jsonsafe import json_safe, refuse_duplicate_keys

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class OrjsonProvider(JSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(obj, default=_default, option=_OPTIONS).decode()
        except TypeError:  # strings orjson refuses (lone surrogates): clean them and try again
            return orjson.dumps(json_safe(obj), default=_default, option=_OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """orjson's value; ValueError (a 400 from ``request.get_json``) for an object with a key twice."""
        value = orjson.loads(s)
        refuse_duplicate_keys(s, value)
        return value

    def response(self, *args: Any, **kwargs: Any):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self.dumps(obj), mimetype="application/json")
