"""etl_app.jsonsafe.refuse_duplicate_keys: an object naming a key twice is refused, at any depth,
in bytes (as ``json.loads`` decodes them) or in text."""

from __future__ import annotations

import pytest

from etl_app.jsonsafe import DuplicateKey, NestedTooDeep, refuse_duplicate_keys

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
