"""In a browser, with a real worker: an ingestion whose sessions wait for a tutor that never
comes says how many wait; an operator's "Give up now" makes them missing_parent dead letters at
once (the wait here is ten minutes), and the ingestion settles."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.payloads import session
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.slow

STACK_ENV = {"ETL_PARENT_WAIT_SECONDS": "600"}  # the records wait for as long as the test takes


def test_an_operator_gives_up_on_an_ingestions_waiting_records_from_its_page(page, sign_in, api, screenshot):
    unique = "gu" + uuid.uuid4().hex[:10]
    fired: list[str] = []

    def on_dialog(dialog) -> None:
        if dialog.type == "confirm" and dialog.message.startswith("Give up now"):
            dialog.accept()
        else:
            fired.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    page.on("dialog", on_dialog)
    batch = [session(f"{unique}-s{i}", f"{unique}-t", f"{unique}-st", session_number=i + 1) for i in range(3)]
    ingestion_id = api.submit("sessions/batch", batch)["ingestion_id"]
    wait_until(
        lambda: api.get(f"waiting?ingestion_id={ingestion_id}").json()["total"] == 3,
        60,
        what="the three sessions to wait for their tutor",
    )

    sign_in(page, "operator", next_path=f"/ui/ingestions/{ingestion_id}")
    assert page.locator("#waiting-count").inner_text() == "3"
    assert "records waiting for parents" in page.locator("#waiting").inner_text()
    screenshot(page, "ingestion-waiting")

    page.get_by_role("button", name="Give up now").click()
    page.wait_for_load_state()
    assert "Gave up on 3 waiting records" in page.locator(".flash").inner_text()
    assert page.locator("#waiting").count() == 0

    settled = api.wait_settled(ingestion_id, timeout=60)
    assert settled["counts"]["dead"] == 3 and settled["counts"]["persisted"] == 0
    dead = api.get(f"dead-letters?ingestion_id={ingestion_id}").json()["dead_letters"]
    assert {d["error_type"] for d in dead} == {"missing_parent"} and len(dead) == 3
    assert all("given up by" in d["error"] for d in dead)
    assert fired == []
    assert page.script_errors == []
