"""json: one array of objects, streamed with ijson and resumed by skipping the items already read."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Any, BinaryIO

from etl_app.uploads.formats.common import FileRefused, Limits, Row, _detail, _progress, object_row
from etl_app.uploads.formats.json_pieces import CUT, TokenPieces

_JSON_MAX_DEPTH = 64
_CONTAINERS = {"start_map": "end_map", "start_array": "end_array"}


class _Unusable:
    """An array item that is not built: too deep, too large, or skipped on resume."""

    def __init__(self, reason: str | None):
        self.reason = reason


def _json_item(first: tuple[str, Any], events: Iterator[tuple[str, Any]], budget: int, build: bool) -> Any:
    """One item of the array from its first event, built from ijson's basic events.

    Built by hand (not ``ijson.items``, whose path prefixes make memory grow with the square
    of the nesting depth): at most ``_JSON_MAX_DEPTH`` levels and about ``budget`` bytes of
    keys and strings; past either, the rest of the item is read and dropped.
    """
    event, value = first
    if event not in _CONTAINERS:
        return value if build else _Unusable(None)
    stack: list[Any] = [{} if event == "start_map" else []] if build else []
    keys: list[Any] = [None]
    depth = 1
    reason: str | None = None if build else ""
    root = stack[0] if build else None
    for event, value in events:
        if event in ("end_map", "end_array"):
            depth -= 1
            if reason is None:
                stack.pop()
                keys.pop()
            if depth == 0:
                return root if reason is None else _Unusable(reason)
            continue
        if event == "start_map" or event == "start_array":
            depth += 1
            if reason is None and depth > _JSON_MAX_DEPTH:
                reason, stack, keys, root = f"nested more than {_JSON_MAX_DEPTH} levels deep", [], [], None
        if reason is not None:
            continue
        if event == "map_key":
            budget -= _cost(value, budget)
            keys[-1] = value
        else:
            if event == "start_map" or event == "start_array":
                item: Any = {} if event == "start_map" else []
            else:
                item = value
                budget -= _cost(value, budget)
            parent = stack[-1]
            if isinstance(parent, dict):
                parent[keys[-1]] = item
            else:
                parent.append(item)
            if event == "start_map" or event == "start_array":
                stack.append(item)
                keys.append(None)
        if budget < 0:
            reason, stack, keys, root = "larger than the limit for one item", [], [], None
    raise ValueError("the file ends inside an item")


def _cost(value: Any, budget: int) -> int:
    """What a key or scalar takes of an item's budget (a string cut short takes all of it)."""
    if isinstance(value, str):
        return budget + 1 if value == CUT else len(value) + 8
    return 8


def _json_rows(f: BinaryIO, cp: dict, limits: Limits, size: int) -> Iterator[tuple[Row, dict]]:
    import ijson

    skip = int(cp.get("items", 0))
    f.seek(0)
    head = f.read(3)
    f.seek(3 if head == codecs.BOM_UTF8 else 0)
    number = 0
    budget = 8 * limits.max_field_bytes
    # in pieces that end between tokens: yajl lexes a token cut by a read again on each read
    events = ijson.basic_parse(TokenPieces(f, budget), use_float=True)
    try:
        first = next(events, None)
        if first is None or first[0] != "start_array":
            raise FileRefused(
                422, "unreadable_file", "The file is not one JSON array of objects: upload [{...}, {...}] or NDJSON."
            )
    except FileRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - ijson's JSONError, IncompleteJSONError, ...
        raise _bad_json(number, exc) from None
    while True:
        try:
            event = next(events)
            if event[0] == "end_array":
                for _ in events:  # only whitespace may follow; ijson raises on anything else
                    raise ValueError("more data after the array")
                return
            item = _json_item(event, events, budget, build=number >= skip)
        except Exception as exc:  # noqa: BLE001 - ijson's JSONError, IncompleteJSONError, ...
            raise _bad_json(number, exc) from None
        number += 1
        if number <= skip:
            continue
        try:
            pos = f.tell()
        except (OSError, ValueError):
            pos = 0
        new_cp = {"items": number, "progress": _progress(pos, size)}
        if isinstance(item, _Unusable):
            yield Row(number, None, {"_row": [f"not usable: {item.reason}"]}, None), new_cp
        elif not isinstance(item, dict):
            yield Row(number, None, {"_row": ["not a JSON object"]}, item), new_cp
        else:
            yield object_row(number, item, limits), new_cp


def _bad_json(number: int, exc: BaseException) -> FileRefused:
    return FileRefused(
        422,
        "unreadable_file",
        f"The file is not valid JSON after item {number} ({_detail(exc)}): "
        "fix it from there and upload the rest again.",
    )
