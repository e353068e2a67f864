"""Custom fields against the sandbox over HTTP: resolve, create, and what SendGrid does with values.

The sandbox's custom field rules are SendGrid's: ids that carry the type (`e1_T`), names unique
regardless of case and made of letters, digits and _, values checked against the field's type
(a contact that does not fit is errored in its import job), values stored under the field id.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.core.errors import InputError
from exporter.flow.fields import resolve_custom_fields
from exporter.ports.sendgrid import ImportJob, Rejected
from tests.support.destinations import destination
from tests.support.sandbox import SandboxProcess

pytestmark = pytest.mark.functional

KEY = "SG.fields-test-key"


@pytest.fixture
def sg(sandbox: SandboxProcess) -> SendGridClient:
    return SendGridClient(KEY, SendGridSettings(base_url=sandbox.url, timeout_seconds=10))


def settled(sg: SendGridClient, job_id: str) -> ImportJob:
    deadline = time.monotonic() + 10
    while not (job := sg.import_status(job_id)).settled and time.monotonic() < deadline:
        time.sleep(0.05)
    return job


def members_by_id(sandbox: SandboxProcess, list_id: str) -> dict[str, Any]:
    url = f"{sandbox.url}/__sandbox/lists/{list_id}/contacts?custom_fields=id"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return {m["email"]: m.get("custom_fields") for m in json.load(answer)}


def test_existing_fields_resolve_and_missing_ones_fail_clearly(sg: SendGridClient) -> None:
    tier = sg.create_field("Tier", "Text")
    dest = destination({"custom:tier": "T", "custom:ltv:Number": "L", "custom:since": "S"})

    with pytest.raises(InputError) as caught:
        resolve_custom_fields(sg, dest)

    assert "custom field(s) 'ltv', 'since' do not exist in SendGrid" in str(caught.value)
    assert "create_missing_fields" in str(caught.value)
    assert [f.name for f in sg.field_definitions().custom.values()] == ["Tier"]
    found = resolve_custom_fields(sg, destination({"custom:tier": "T"}))
    assert (found["tier"].id, found["tier"].field_type) == (tier.id, "Text")


def test_missing_fields_are_created_with_ids_that_carry_their_type(
    sg: SendGridClient, sandbox: SandboxProcess
) -> None:
    dest = destination(
        {"custom:tier": "T", "custom:lifetime_value:Number": "L", "custom:first_order:Date": "F"},
        create_missing_fields=True,
    )

    found = resolve_custom_fields(sg, dest)

    assert {n: f.id for n, f in found.items()} == {
        "tier": "e1_T",
        "lifetime_value": "e2_N",
        "first_order": "e3_D",
    }
    assert {f["name"]: f["field_type"] for f in sandbox.state()["custom_fields"]} == {
        "tier": "Text",
        "lifetime_value": "Number",
        "first_order": "Date",
    }
    assert resolve_custom_fields(sg, dest) == found  # a second run creates nothing
    assert len(sg.field_definitions().custom) == 3


def test_a_type_mismatch_with_sendgrid_fails_without_creating_anything(sg: SendGridClient) -> None:
    sg.create_field("ltv", "Text")
    dest = destination({"custom:ltv:Number": "L", "custom:new": "N"}, create_missing_fields=True)

    with pytest.raises(InputError, match="'ltv' is Text in SendGrid but the mapping declares"):
        resolve_custom_fields(sg, dest)

    assert list(sg.field_definitions().custom) == ["ltv"]


def test_names_are_unique_regardless_of_case_and_must_be_plain(sg: SendGridClient) -> None:
    sg.create_field("tier", "Text")
    for name in ("TIER", "First_Name", "lifetime value", "9lives"):
        with pytest.raises(Rejected) as caught:
            sg.create_field(name, "Text")
        assert caught.value.status == 400 and caught.value.errors[0].field == "name"
    assert sg.create_field("_private2", "Number").id == "e2_N"


def test_values_are_stored_under_the_field_id_and_checked_against_its_type(
    sg: SendGridClient, sandbox: SandboxProcess
) -> None:
    text = sg.create_field("tier", "Text").id
    number = sg.create_field("ltv", "Number").id
    day = sg.create_field("since", "Date").id
    list_id = sg.create_list("typed").id
    contacts = [
        {
            "email": "ann@example.com",
            "custom_fields": {text: "Gold", number: 12.5, day: "05/01/2024"},
        },
        {"email": "bob@example.com", "custom_fields": {number: "lots"}},
        {"email": "cy@example.com", "custom_fields": {day: "31/12/2024"}},
        {"email": "dee@example.com", "custom_fields": {text: "x" * 1001}},
        {"email": "eve@example.com", "custom_fields": {text: "x" * 1000}},
    ]

    job = settled(sg, sg.upsert([list_id], json.dumps(contacts)))

    assert (job.status, job.created, job.errored) == ("errored", 2, 3)
    assert members_by_id(sandbox, list_id) == {
        "ann@example.com": {text: "Gold", number: 12.5, day: "05/01/2024"},
        "eve@example.com": {text: "x" * 1000},
    }
    by_name = {m["email"]: m["custom_fields"] for m in sandbox.list_members(list_id)}
    assert by_name["ann@example.com"] == {"tier": "Gold", "ltv": 12.5, "since": "05/01/2024"}


def test_a_value_keyed_by_name_is_a_400_for_the_whole_request(sg: SendGridClient) -> None:
    sg.create_field("tier", "Text")
    list_id = sg.create_list("by name").id
    with pytest.raises(Rejected, match=r"custom_fields\.tier"):
        sg.upsert(
            [list_id], json.dumps([{"email": "a@example.com", "custom_fields": {"tier": "x"}}])
        )
