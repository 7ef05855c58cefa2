"""Students: no derived fields."""

from datetime import UTC, datetime

import pytest

from etl_app.record_types.students import RECORD_TYPE, derive

pytestmark = pytest.mark.unit


def test_students_have_no_derived_fields():
    data, _ = RECORD_TYPE.validate({"student_id": "s1"}, datetime(2026, 1, 1, tzinfo=UTC))
    assert derive(data, datetime(2026, 1, 1, tzinfo=UTC), {}) == {}
    assert RECORD_TYPE.parents == () and RECORD_TYPE.check_as_of is None
