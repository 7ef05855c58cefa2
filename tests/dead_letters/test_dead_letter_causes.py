"""The cause of an error message (etl_app.dead_letters.causes.normalise): what groups dead letters."""

from __future__ import annotations

import pytest

from etl_app.dead_letters.causes import MAX_CAUSE_CHARS, normalise

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("grade_level: Must be between 1 and 12.", "grade_level: Must be between <n> and <n>."),
        ("parent tutors:T-17 not found after waiting 3600s", "parent tutors:<key> not found after waiting <n>s"),
        ("score 4.75 over 1e3 limit", "score <n> over <n> limit"),
        ("row 5d9f3c2e-1b2a-4c3d-9e8f-0a1b2c3d4e5f failed", "row <id> failed"),
        ("row 5D9F3C2E1B2A4C3D9E8F0A1B2C3D4E5F failed", "row <id> failed"),
        ("object a3f9c2e1deadbeef is gone, commit 9f8e7d6c too", "object <id> is gone, commit <id> too"),
        ("address 0x7ffd1234 refused", "address <id> refused"),
        ("at 2026-11-30T19:25:01.123+00:00 and 2026-11-30", "at <ts> and <ts>"),
        ("at 2026-11-30 19:25:01Z", "at <ts>"),
        (
            "tutor_id 'T-17': status='active' but tutors.status='churned'",
            "tutor_id '<v>': status='<v>' but tutors.status='<v>'",
        ),
        ('key "S 12" is "taken"', 'key "<v>" is "<v>"'),
        ("quote 'it\\'s' stays one value", "quote '<v>' stays one value"),
        ("ids [1, 2, 3] and ['a', 'b']", "ids [<n>, ...] and ['<v>', ...]"),
        ("  many   spaces\n\tand lines  ", "many spaces and lines"),
    ],
)
def test_values_become_placeholders(message, cause):
    assert normalise(message) == cause


def test_messages_that_differ_only_in_values_share_a_cause():
    same = [
        "student 'S-1' grade 13 refused at 2026-01-02T03:04:05Z (row 7)",
        "student 'S-99' grade 0 refused at 2027-12-31T23:59:59Z (row 12345)",
        'student "S-2" grade 4 refused at 2026-06-06 (row 1)',
    ]
    assert len({normalise(m).replace('"<v>"', "'<v>'") for m in same}) == 1
    assert normalise(same[0]) != normalise("student 'S-1' grade 13 accepted at 2026-01-02T03:04:05Z (row 7)")


def test_words_apostrophes_and_hex_letters_alone_are_kept():
    assert normalise("don't replay what isn't dead") == "don't replay what isn't dead"
    assert normalise("deadbeef facade added") == "deadbeef facade added"
    assert normalise("Not a valid email address.") == "Not a valid email address."


def test_nothing_or_a_long_message():
    assert normalise(None) == "" and normalise("") == ""
    long = normalise("word " * 1000)
    assert len(long) == MAX_CAUSE_CHARS and long.startswith("word word")


# -- keys of "<record type>:<key>" references --------------------------------------------------


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("parent tutors:alice not found after waiting 8s", "parent tutors:<key> not found after waiting <n>s"),
        ("parent students:bob-smith.jr not found.", "parent students:<key> not found."),
        ("parent tutors:a:b:c missing", "parent tutors:<key> missing"),
        ("see students:S-1, students:zed and sessions:x9.", "see students:<key>, students:<key> and sessions:<key>."),
        ("parent widgets:gadget not found", "parent widgets:<key> not found"),  # any word after "parent "
        ("parent tutors:'a b' missing", "parent tutors:'<v>' missing"),
    ],
)
def test_the_key_of_a_record_reference_becomes_a_placeholder(message, cause):
    assert normalise(message) == cause


def test_missing_parents_of_keys_without_digits_share_one_cause():
    causes = {normalise(f"parent tutors:{name} not found after waiting 8s") for name in ("alice", "bob", "carol")}
    assert causes == {"parent tutors:<key> not found after waiting <n>s"}


@pytest.mark.parametrize(
    "message",
    [
        "grade_level: Must be between <n> and <n>.",  # a field name and a colon, then a space
        "db.tutors:x and node-tutors:y are not references",  # part of a longer name
        "widgets:gadget is not a record type",  # not a registered type, not after "parent "
        "feedback:",  # nothing after the colon
    ],
)
def test_other_colons_are_left_alone(message):
    assert normalise(message) == message


def test_the_record_types_may_be_given():
    assert normalise("lessons:abc failed", ("lessons",)) == "lessons:<key> failed"
    assert normalise("tutors:abc failed", ("lessons",)) == "tutors:abc failed"
    assert normalise("tutors:abc failed", ()) == "tutors:abc failed"
