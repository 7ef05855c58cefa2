"""etl_app.jsonsafe.refuse_duplicate_keys: an object naming a key twice is refused, at any depth,
in bytes (as ``json.loads`` decodes them) or in text."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl_app.jsonsafe import DuplicateKey, NestedTooDeep, _surely_unique, refuse_duplicate_keys

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_key_twice_is_refused_at_any_depth_and_named(as_bytes):
    def text(s: str):
        return s.encode() if as_bytes else s

    refuse_duplicate_keys(text('{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}'))  # once per object
    refuse_duplicate_keys(text("[1, 2, 3]"))
    for body, key in (('{"a": 1, "a": 2}', "a"), ('[{"x": {"é": 1, "é": 2}}]', "é"), ('{"a": {"b": 1, "b": 1}}', "b")):
        with pytest.raises(DuplicateKey) as raised:
            refuse_duplicate_keys(text(body))
        assert raised.value.key == key


def test_bytes_in_utf_16_are_read_as_json_loads_reads_them():
    with pytest.raises(DuplicateKey):
        refuse_duplicate_keys('{"k": 1, "k": 2}'.encode("utf-16"))
    refuse_duplicate_keys('{"k": 1, "j": 2}'.encode("utf-16-le"))


def test_the_decoder_is_reused_and_stays_correct_after_a_refusal():
    with pytest.raises(DuplicateKey):
        refuse_duplicate_keys(b'{"a": 1, "a": 2}')
    refuse_duplicate_keys(b'{"a": 1}')


@pytest.mark.parametrize("as_bytes", [False, True])
def test_nesting_orjson_reads_but_the_check_cannot_walk_is_refused_as_too_deep(as_bytes):
    body = "[" * 1000 + '{"a": 1}' + "]" * 1000  # orjson reads up to 1,024 levels
    with pytest.raises(NestedTooDeep):
        refuse_duplicate_keys(body.encode() if as_bytes else body)
    refuse_duplicate_keys("[" * 200 + '{"a": 1}' + "]" * 200)


# The fast check (etl_app.jsonsafe._surely_unique) against the full one, on texts written by hand
# from trees whose objects may name a key twice, with colons in keys and values, some written as
# the escape \u003a, and varied spacing.
_KEYS = st.sampled_from(["a", "b", "a:b", ":", "é", "k"])
_TEXTS = st.text(alphabet='ab:é"\\ ', max_size=6)
_SCALARS = st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.none(), st.floats(allow_nan=False), _TEXTS)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(_KEYS, inner), max_size=4).map(lambda pairs: ("object", pairs)),
    ),
    max_leaves=12,
)


def _string(value: str, escape_colons: bool) -> str:
    written = json.dumps(value, ensure_ascii=False)
    return written.replace(":", "\\u003a") if escape_colons else written


def _write(tree, draw_escape, space: str) -> str:
    if isinstance(tree, tuple) and tree and tree[0] == "object":
        pairs = [f"{_string(k, draw_escape())}{space}:{space}{_write(v, draw_escape, space)}" for k, v in tree[1]]
        return "{" + f",{space}".join(pairs) + "}"
    if isinstance(tree, list):
        return "[" + f",{space}".join(_write(v, draw_escape, space) for v in tree) + "]"
    if isinstance(tree, str):
        return _string(tree, draw_escape())
    return json.dumps(tree)


def _verdict(check) -> str | None:
    try:
        check()
    except DuplicateKey as exc:
        return exc.key
    return None


@settings(max_examples=400, deadline=None, derandomize=True)
@given(tree=_TREES, escapes=st.lists(st.booleans(), min_size=1, max_size=20), space=st.sampled_from(["", " ", "\n"]))
def test_the_fast_check_with_the_parsed_value_refuses_exactly_what_the_full_check_refuses(tree, escapes, space):
    flags = iter(escapes * 100)
    text = _write(tree, lambda: next(flags, False), space)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return  # an integer beyond what orjson reads: the API refuses the body before this check
    for body in (text, text.encode()):
        assert _verdict(lambda b=body: refuse_duplicate_keys(b, parsed)) == _verdict(
            lambda b=body: refuse_duplicate_keys(b)
        )
    if _verdict(lambda: refuse_duplicate_keys(text)) is None and "\\u003a" not in text:
        assert _surely_unique(text.encode(), parsed)  # the usual body passes without the full check


def test_the_fast_check_leaves_escaped_colons_and_what_orjson_cannot_write_to_the_full_check():
    # a dropped pair's colon made up by an escaped one: the counts agree, the escape sends it on
    text = b'{"a": 1, "a": 2, "x": "\\u003a"}'
    assert not _surely_unique(text, orjson.loads(text))
    with pytest.raises(DuplicateKey):
        refuse_duplicate_keys(text, orjson.loads(text))
    deep = "[" * 300 + "{}" + "]" * 300  # orjson reads 1,024 levels, writes 254
    assert not _surely_unique(deep, orjson.loads(deep))
    refuse_duplicate_keys(deep, orjson.loads(deep))
