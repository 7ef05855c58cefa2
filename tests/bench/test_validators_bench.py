"""``python -m bench.validators``: every built-in type timed, generated records all on the fast path."""

import pytest

from bench import validators

pytestmark = pytest.mark.unit


def test_every_type_is_timed_and_generated_records_never_fall_back(capsys):
    assert validators.main(["--records", "30", "--repeat", "1"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in ("tutors", "students", "sessions", "feedback"):
        assert rows[name].endswith(" 0 of 30"), rows[name]
