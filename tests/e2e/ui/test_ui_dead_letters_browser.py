"""In a browser, with a real worker: dead letters made through the API appear grouped by cause;
a group's replay shows its count first, and once the cause is fixed its records land; one dead
letter edited and replayed lands and shows its edit as a diff; a payload holding a script is text."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.payloads import feedback, session, student, tutor
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow

SCRIPT = "<script>alert(1)</script>"


def no_alerts(page) -> list[str]:
    """Accept our forms' confirmations; any other dialog (an alert from record data) is recorded."""
    fired: list[str] = []

    def on_dialog(dialog) -> None:
        if dialog.type == "confirm" and dialog.message.startswith(("Replay", "Discard")):
            dialog.accept()
        else:
            fired.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    page.on("dialog", on_dialog)
    return fired


def dead_letters_of(api, ingestion_id: str) -> list[dict]:
    r = api.get(f"dead-letters?ingestion_id={ingestion_id}&status=all")
    assert r.status_code == 200, r.text
    return r.json()["dead_letters"]


def test_a_groups_replay_shows_its_count_then_its_records_land(page, sign_in, api, screenshot):
    unique = "dl" + uuid.uuid4().hex[:10]
    fired = no_alerts(page)
    t, st = f"{unique}-t", f"{unique}-st"
    # sessions whose tutor and student never come: dead-lettered as missing_parent after 8 s
    batch = [session(f"{unique}-s{i}", t, st, session_number=i + 1) for i in range(3)]
    ingestion_id = api.submit("sessions/batch", batch)["ingestion_id"]
    assert api.wait_settled(ingestion_id, timeout=90)["counts"]["dead"] == 3
    dead = dead_letters_of(api, ingestion_id)
    assert {d["error_type"] for d in dead} == {"missing_parent"}

    sign_in(page, "operator", next_path=f"/ui/dead-letters?ingestion_id={ingestion_id}")
    group = page.locator("section.dl-group")
    assert group.count() == 1
    assert group.locator('[data-field="count"]').inner_text() == "3"
    assert "parent" in group.locator("h2").inner_text() and "<key>" in group.locator("h2").inner_text()
    page.wait_for_selector("section.dl-group .chart[data-drawn=true]")
    screenshot(page, "dead-letters")

    group.get_by_role("link", name="Open group").click()
    page.wait_for_load_state()
    group_id = page.locator("#group").get_attribute("data-group")
    open_now = int(page.locator("#open-count").inner_text().replace(",", ""))
    assert open_now >= 3  # this test's three, and any other test's of the same cause
    assert page.locator("#dead-letters tbody tr").count() >= 3
    screenshot(page, "dead-letter-group")

    page.get_by_role("link", name="Replay group…").click()
    page.wait_for_load_state()
    question = page.locator("#replay-question").inner_text()
    would = api.post(f"dead-letters/groups/{group_id}/replay", {"dry_run": True}).json()["count"]
    assert question == f"Replay {would:,} dead letter{'s' if would != 1 else ''}?" and would >= 3
    # the cause fixed: the parents arrive while the replayed sessions wait for them
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_load_state()
    assert "Replayed" in page.locator(".flash").inner_text()
    api.submit("tutors", tutor(t))
    api.submit("students", student(st))
    finished = api.wait_finished(ingestion_id, timeout=60)
    assert finished["counts"]["persisted"] == 3 and finished["counts"]["dead"] == 0
    for i in range(3):
        assert api.get(f"records/sessions/{unique}-s{i}").status_code == 200
    assert {d["status"] for d in dead_letters_of(api, ingestion_id)} == {"replayed"}
    assert fired == []
    assert page.script_errors == []


def test_one_dead_letter_is_edited_and_replayed_and_its_script_is_text(page, sign_in, api, screenshot):
    unique = "dl" + uuid.uuid4().hex[:10]
    fired = no_alerts(page)
    t, st, s = f"{unique}-T", f"{unique}-ST", f"{unique}-S"
    api.submit("tutors", tutor(t))
    api.submit("students", student(st))
    api.wait_finished(api.submit("sessions", session(s, t, st))["ingestion_id"], timeout=30)
    # feedback naming another tutor than its session's: dead-lettered as parent_mismatch
    wrong = feedback(f"{unique}-F", s, f"{unique}-OTHER", st, free_text_feedback=f"great {SCRIPT}")
    ingestion_id = api.submit("feedback", wrong)["ingestion_id"]
    assert api.wait_settled(ingestion_id, timeout=60)["counts"]["dead"] == 1
    [dead] = dead_letters_of(api, ingestion_id)
    assert dead["error_type"] == "parent_mismatch"

    sign_in(page, "operator", next_path=f"/ui/dead-letters/{dead['id']}")
    assert SCRIPT in page.locator("#payload").inner_text()  # the script is text
    assert page.locator("#payload script").count() == 0
    assert page.locator("#lineage").get_attribute("href") == f"/ui/records/feedback/{unique}-F"
    screenshot(page, "dead-letter")

    # the fix: the right tutor
    text = page.locator("#edit-payload").input_value()
    assert f'"tutor_id": "{unique}-OTHER"' in text
    page.locator("#edit-payload").fill(text.replace(f'"{unique}-OTHER"', f'"{t}"'))
    page.get_by_role("button", name="Edit and replay").click()
    page.wait_for_load_state()
    assert "Edited and replayed" in page.locator(".flash").inner_text()
    diff = page.locator("pre.diff")
    assert diff.locator("del").inner_text().strip().rstrip(",") == f'-   "tutor_id": "{unique}-OTHER"'
    assert diff.locator("ins").inner_text().strip().rstrip(",") == f'+   "tutor_id": "{t}"'

    def stored():
        r = api.get(f"records/feedback/{unique}-F")
        return r.json() if r.status_code == 200 else None

    record = wait_until(stored, 30, what="the edited feedback to be stored")
    assert record["fields"]["tutor_id"] == t
    [edit] = api.get(f"dead-letters/{dead['id']}").json()["edits"]
    assert edit["original"]["tutor_id"] == f"{unique}-OTHER" and edit["edited"]["tutor_id"] == t
    # the group of a script-holding payload: its sample is text too
    page.goto(f"/ui/dead-letters?ingestion_id={ingestion_id}&status=all")
    assert SCRIPT in page.locator("section.dl-group pre.payload").inner_text()
    assert fired == []
    assert page.script_errors == []
