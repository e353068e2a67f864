"""End to end: typed custom fields from a snapshot to SendGrid (real Azurite, sandbox, host).

A destination maps `custom:tier` (Text) and `custom:lifetime_value` (Number), which exist in
SendGrid, and `custom:first_order:Date`, which does not and is created because the destination
says `create_missing_fields`. A row with a bad number is rejected with its reason; the list holds
the others' values, typed and keyed by field id. A destination mapping a missing field without
that flag fails its run with a message that says how to fix it.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.operations import follow, upload_snapshot
from exporter.local.stack import Stack
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from exporter.wiring import services_from_env

pytestmark = pytest.mark.e2e
KEY = "SG.e2e-custom-fields-key"
SNAPSHOT = """Email,FirstName,Tier,LTV,FirstOrder
ann@example.com,Ann,Gold,1234.50,2024-05-01
bob@example.com,Bob,Silver,"1,234",2024-06-01
cy@example.com,Cy,,7,12/31/2023
dee@example.com,Dee,Bronze,,
"""


class World:
    def __init__(self, stack: Stack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.storage = Storage.from_env(stack.settings)
        self.svc = services_from_env(stack.settings)
        self.client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))

    def destination(self, segment: str, mapping: dict[str, str], **values: Any) -> str:
        list_id = self.client.create_list(f"list {segment}").id
        self.svc.destinations.put(
            Destination.model_validate(
                {
                    "name": segment,
                    "display_name": segment,
                    "list_id": list_id,
                    "api_key_secret": "SENDGRID_KEY_FIELDS",
                    "segments": [segment],
                    "mapping": mapping,
                    "consent": Consent(accepted_by="dpo", accepted_at=datetime.now(UTC)),
                    **values,
                }
            )
        )
        return list_id

    def export(self, segment: str, text: str) -> RunRecord:
        path = self.tmp / f"{segment}.csv"
        path.write_text(text, encoding="utf-8")
        version = upload_snapshot(self.storage, path, segment)
        (run,) = follow(self.svc, version, 1, timeout=120, on_progress=lambda _: None)
        return run

    def sandbox(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.stack.sandbox_url}{path}", timeout=30) as answer:
            return json.load(answer)

    def fields(self) -> dict[str, tuple[str, str]]:
        """Field name -> (id, type), as the sandbox holds them."""
        state = self.sandbox("/__sandbox/state")
        return {f["name"]: (f["id"], f["field_type"]) for f in state["custom_fields"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("custom-fields")
    settings = {"SENDGRID_KEY_FIELDS": KEY}
    with Stack(tmp / "stack", settings=settings, sandbox_args=["--job-delay", "0.1"]) as stack:
        yield World(stack, tmp)


def test_typed_values_land_keyed_by_field_id_and_a_bad_number_is_rejected(world: World) -> None:
    tier = world.client.create_field("tier", "Text").id
    ltv = world.client.create_field("lifetime_value", "Number").id
    list_id = world.destination(
        "typed",
        {
            "email": "Email",
            "custom:tier": "Tier",
            "custom:lifetime_value": "LTV",
            "custom:first_order:Date": "FirstOrder",
        },
        create_missing_fields=True,
    )

    run = world.export("typed", SNAPSHOT)

    assert run.state == "succeeded", run.error  # the bad number's row is rejected, reported
    assert (run.rows, run.valid, run.rejected) == (4, 3, 1)
    assert run.reasons == {"custom_field_not_a_number": 1}
    report = world.storage.app.download_blob(run.reject_report).readall().decode()
    (rejected,) = csv.DictReader(io.StringIO(report))
    assert (rejected["row"], rejected["reason"]) == ("2", "custom_field_not_a_number")
    assert "custom:lifetime_value" in rejected["message"] and "1,234" not in report

    first_order, first_order_type = world.fields()["first_order"]  # created by the run
    assert first_order_type == "Date" and first_order.endswith("_D")
    members = world.sandbox(f"/__sandbox/lists/{list_id}/contacts?custom_fields=id")
    assert {m["email"]: m.get("custom_fields") for m in members} == {
        "ann@example.com": {tier: "Gold", ltv: 1234.5, first_order: "05/01/2024"},
        "cy@example.com": {ltv: 7, first_order: "12/31/2023"},
        "dee@example.com": {tier: "Bronze"},
    }
    assert all(m["first_name"] for m in members)  # reserved fields still go with them


def test_a_missing_field_without_create_missing_fields_fails_the_run_clearly(
    world: World,
) -> None:
    list_id = world.destination(
        "untyped", {"email": "Email", "custom:loyalty_points:Number": "LTV"}
    )

    run = world.export("untyped", SNAPSHOT)

    assert run.state == "failed"
    assert "custom field(s) 'loyalty_points' do not exist in SendGrid" in run.error
    assert "create them in SendGrid, or set create_missing_fields" in run.error
    assert "loyalty_points" not in world.fields()
    assert world.sandbox(f"/__sandbox/lists/{list_id}/contacts") == []
