"""Saving a destination checks its mapping's custom fields against SendGrid at once (the sandbox
over HTTP): a missing field is refused, naming it and `--create-missing-fields`, unless the
destination creates missing fields, then they are created now; a type SendGrid does not have
for the field is refused. Nothing is saved, and nothing created in SendGrid, for a refusal."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.admin.destinations import Saved, add_destination, save_destination
from exporter.admin.requests import DestinationRequest, parse
from exporter.core.errors import InputError
from exporter.flow.fields import resolve_custom_fields
from tests.support.flow import FlowWorld
from tests.support.sandbox import SandboxProcess

pytestmark = pytest.mark.functional

KEY = "SG.destination-fields-key"


@pytest.fixture
def world(sandbox: SandboxProcess) -> FlowWorld:
    return FlowWorld.connect(sandbox, KEY)


def add(world: FlowWorld, mapping: dict[str, str], **fields: Any) -> Saved:
    return add_destination(
        world.svc,
        "marketing",
        api_key_secret="SENDGRID_KEY_FLOW",
        segments=["loyal"],
        consent_by="dpo@company.example",
        list_name="Newsletter",
        mapping=mapping,
        **fields,
    )


def field_types(world: FlowWorld) -> dict[str, str]:
    return {d.name: d.field_type for d in world.client.field_definitions().custom.values()}


def test_a_missing_field_is_refused_at_once_naming_it_and_the_flag(world: FlowWorld) -> None:
    world.client.create_field("tier", "Text")
    with pytest.raises(InputError) as refused:
        add(world, {"custom:tier": "Tier", "custom:LoyaltyTier": "LoyaltyTier"})
    message = str(refused.value)
    assert message.startswith("invalid destination: mapping: custom field(s) 'LoyaltyTier'")
    assert "do not exist in SendGrid" in message
    assert "--create-missing-fields" in message and '"create_missing_fields": true' in message
    assert "'tier'" not in message  # the one that exists is not named
    assert world.destinations.get("marketing") is None
    assert [lst.name for lst in world.client.lists()] == []  # no list made for a refusal
    assert field_types(world) == {"tier": "Text"}


def test_with_create_missing_fields_they_are_created_at_once(world: FlowWorld) -> None:
    saved = add(
        world,
        {"custom:tier": "LoyaltyTier", "custom:ltv:Number": "LTV", "custom:since:Date": "S"},
        create_missing_fields=True,
    )
    assert saved.fields_created == {"tier": "Text", "ltv": "Number", "since": "Date"}
    assert field_types(world) == {"tier": "Text", "ltv": "Number", "since": "Date"}
    stored = world.destinations.get("marketing")
    assert stored is not None and stored.create_missing_fields is True
    # The first run finds them: nothing is created again.
    found = resolve_custom_fields(world.svc.sendgrid(stored), stored)
    assert {n: f.field_type for n, f in found.items()} == {
        "tier": "Text",
        "ltv": "Number",
        "since": "Date",
    }
    assert len(world.client.field_definitions().custom) == 3


def test_a_type_mismatch_is_refused_even_when_fields_may_be_created(world: FlowWorld) -> None:
    world.client.create_field("ltv", "Text")
    with pytest.raises(InputError) as refused:
        add(world, {"custom:ltv:Number": "LTV", "custom:new": "N"}, create_missing_fields=True)
    message = str(refused.value)
    assert "'ltv' is Text in SendGrid but the mapping declares custom:ltv:Number" in message
    assert world.destinations.get("marketing") is None
    assert field_types(world) == {"ltv": "Text"}  # 'new' was not created either


def test_a_reserved_name_is_refused(world: FlowWorld) -> None:
    with pytest.raises(InputError, match="reserved field 'first_name'"):
        add(world, {"custom:first_name": "F"}, create_missing_fields=True)


def test_an_update_adding_a_missing_field_is_refused_and_keeps_the_saved_document(
    world: FlowWorld,
) -> None:
    saved = add(world, {"custom:tier": "Tier"}, create_missing_fields=True).destination
    document = saved.model_dump(mode="json") | {"create_missing_fields": False}
    document["mapping"] = {**document["mapping"], "custom:points:Number": "Points"}
    del document["consent"]
    with pytest.raises(InputError, match=r"'points' do not exist in SendGrid"):
        save_destination(world.svc, parse(DestinationRequest, document), mode="update")
    assert world.destinations.get("marketing") == saved

    document["create_missing_fields"] = True
    updated = save_destination(world.svc, parse(DestinationRequest, document), mode="update")
    assert updated.fields_created == {"points": "Number"}
    assert updated.destination.mapping["custom:points:Number"] == "Points"


def test_a_mapping_without_custom_fields_asks_sendgrid_nothing_about_fields(
    world: FlowWorld, sandbox: SandboxProcess
) -> None:
    add(world, {"first_name": "GivenName"})
    assert not any("field_definitions" in k for k in sandbox.requests())
