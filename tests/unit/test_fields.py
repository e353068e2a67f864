"""Resolving mapped custom fields to SendGrid ids and types, against an in-memory client."""

from __future__ import annotations

from typing import cast

import pytest

from exporter.adapters.sendgrid import SendGridClient
from exporter.core.errors import InputError, MappingError
from exporter.core.mapping import CustomField, FieldMapping, field_spec
from exporter.flow.fields import mapped_custom_fields, match_custom_fields, resolve_custom_fields
from exporter.model.destinations import Destination
from exporter.ports.sendgrid import FieldDefinition, FieldDefinitions, Rejected
from tests.support.destinations import destination

SUFFIX = {"Text": "T", "Number": "N", "Date": "D"}


class FakeClient:
    """The two field-definition calls of `SendGridClient`, on a dict; counts the calls."""

    def __init__(self, **fields: str) -> None:
        self.custom: dict[str, FieldDefinition] = {}
        self.reserved = {
            n: FieldDefinition(f"_rf{i}_T", n, "Text")
            for i, n in enumerate(("first_name", "last_name", "email", "phone_number"))
        }
        self.calls: list[str] = []
        self.racing: dict[str, str] = {}
        """name -> type another run creates just before our create call."""
        for name, field_type in fields.items():
            self._add(name, field_type)

    def _add(self, name: str, field_type: str) -> FieldDefinition:
        number = len(self.custom) + 1
        definition = FieldDefinition(f"e{number}_{SUFFIX.get(field_type, 'X')}", name, field_type)
        self.custom[name] = definition
        return definition

    def field_definitions(self) -> FieldDefinitions:
        self.calls.append("GET")
        return FieldDefinitions(custom=dict(self.custom), reserved=self.reserved)

    def create_field(self, name: str, field_type: str) -> FieldDefinition:
        self.calls.append(f"POST {name} {field_type}")
        if name in self.racing:
            self._add(name, self.racing.pop(name))
        if any(n.casefold() == name.casefold() for n in [*self.custom, *self.reserved]):
            raise Rejected("SendGrid rejected POST (HTTP 400)", status=400)
        return self._add(name, field_type)


def resolve(client: FakeClient, dest: Destination) -> dict[str, CustomField]:
    return resolve_custom_fields(cast(SendGridClient, client), dest)


# --- the mapping syntax ------------------------------------------------------------------------


def test_a_custom_field_may_declare_its_type_in_any_case() -> None:
    assert field_spec("custom:ltv:Number").field_type == "Number"
    assert field_spec("custom:since:date").field_type == "Date"
    assert field_spec("custom:tier:TEXT").field_type == "Text"
    assert field_spec("custom:tier").field_type is None
    assert field_spec("custom:ltv:Number").name == "custom:ltv"  # no type in the name
    assert field_spec("custom:ltv:Number").custom_name == "ltv"


def test_an_unknown_type_is_a_mapping_error_naming_the_types() -> None:
    with pytest.raises(MappingError, match="custom:NAME:Number"):
        field_spec("custom:ltv:Money")
    with pytest.raises(MappingError, match="unknown SendGrid field"):
        field_spec("custom::Number")


def test_a_field_cannot_be_mapped_twice_with_and_without_a_type() -> None:
    with pytest.raises(MappingError, match="'custom:ltv' is mapped twice"):
        FieldMapping.parse(["custom:ltv=A", "custom:ltv:Number=B"])


def test_a_typed_custom_field_resolves_against_the_header() -> None:
    resolved = FieldMapping.parse(["custom:ltv:Number=LTV"]).resolve(["Email", "LTV"])
    assert [(f.name, f.field_type) for f in resolved.fields] == [
        ("email", None),
        ("custom:ltv", "Number"),
    ]


def test_a_destination_validates_the_type_and_lists_its_custom_fields() -> None:
    dest = destination({"custom:tier": "Tier", "custom:ltv:number": "LTV", "custom:gone": ""})
    assert mapped_custom_fields(dest) == {"tier": None, "ltv": "Number"}  # unmapped: skipped
    assert dest.create_missing_fields is False
    with pytest.raises(InputError, match="unknown custom field type"):
        Destination.from_json(dest.model_dump_json().replace("ltv:number", "ltv:money"))


# --- resolving ----------------------------------------------------------------------------------


def test_no_custom_field_means_no_call() -> None:
    client = FakeClient()
    assert resolve(client, destination({"first_name": "First"})) == {}
    assert client.calls == []


def test_existing_fields_resolve_to_id_and_type_ignoring_case() -> None:
    client = FakeClient(tier="Text", LTV="Number")
    found = resolve(client, destination({"custom:tier": "T", "custom:ltv:Number": "L"}))
    assert found == {
        "tier": CustomField("e1_T", "tier", "Text"),
        "ltv": CustomField("e2_N", "LTV", "Number"),
    }
    assert client.calls == ["GET"]


def test_missing_fields_are_one_clear_error_naming_all_of_them() -> None:
    client = FakeClient(tier="Text")
    dest = destination({"custom:tier": "T", "custom:ltv": "L", "custom:since:Date": "S"})
    with pytest.raises(InputError) as caught:
        resolve(client, dest)
    message = str(caught.value)
    assert "custom field(s) 'ltv', 'since' do not exist in SendGrid" in message
    assert "create them in SendGrid, or set create_missing_fields" in message
    assert "'marketing'" in message
    assert client.calls == ["GET"]  # nothing created


def test_missing_fields_are_created_with_the_declared_type_or_text() -> None:
    client = FakeClient(tier="Text")
    dest = destination(
        {"custom:tier": "T", "custom:ltv:Number": "L", "custom:since:Date": "S", "custom:x": "X"},
        create_missing_fields=True,
    )
    found = resolve(client, dest)
    assert {n: (f.id, f.field_type) for n, f in found.items()} == {
        "tier": ("e1_T", "Text"),
        "ltv": ("e2_N", "Number"),
        "since": ("e3_D", "Date"),
        "x": ("e4_T", "Text"),
    }
    assert client.calls == ["GET", "POST ltv Number", "POST since Date", "POST x Text"]
    assert resolve(client, dest) == found  # the next run finds them
    assert client.calls[-1] == "GET"


def test_a_type_mismatch_is_an_error_that_says_how_to_fix_it() -> None:
    client = FakeClient(ltv="Text")
    with pytest.raises(InputError) as caught:
        resolve(client, destination({"custom:ltv:Number": "L"}, create_missing_fields=True))
    message = str(caught.value)
    assert "'ltv' is Text in SendGrid but the mapping declares custom:ltv:Number" in message
    assert "custom:ltv:Text" in message


def test_nothing_is_created_while_another_problem_stands() -> None:
    client = FakeClient(ltv="Text")
    dest = destination(
        {"custom:ltv:Number": "L", "custom:new": "N", "custom:first_name": "F"},
        create_missing_fields=True,
    )
    with pytest.raises(InputError) as caught:
        resolve(client, dest)
    assert "declares custom:ltv:Number" in str(caught.value)
    assert "reserved field 'first_name'" in str(caught.value)
    assert client.calls == ["GET"]


def test_a_name_sendgrid_cannot_create_is_named_before_anything_is_created() -> None:
    client = FakeClient()
    dest = destination(
        {"custom:Lifetime Value": "L", "custom:9lives": "N", "custom:ok": "O"},
        create_missing_fields=True,
    )
    with pytest.raises(InputError, match=r"'Lifetime Value', '9lives' cannot be created"):
        resolve(client, dest)
    assert client.calls == ["GET"]


def test_a_field_another_run_created_meanwhile_is_used() -> None:
    client = FakeClient()
    client.racing["ltv"] = "Number"
    found = resolve(client, destination({"custom:ltv": "L"}, create_missing_fields=True))
    assert found["ltv"].field_type == "Number"
    assert client.calls == ["GET", "POST ltv Text", "GET"]


def test_a_field_another_run_created_with_another_type_is_a_clear_error() -> None:
    client = FakeClient()
    client.racing["ltv"] = "Date"
    with pytest.raises(InputError, match=r"could not create custom field 'ltv'.*is Date"):
        resolve(client, destination({"custom:ltv:Number": "L"}, create_missing_fields=True))


def test_a_type_sendgrid_has_but_we_do_not_know_is_an_error() -> None:
    client = FakeClient(flag="Boolean")
    with pytest.raises(InputError, match="type 'Boolean'"):
        resolve(client, destination({"custom:flag": "F"}))


def test_match_is_pure_and_reports_what_a_run_would_do() -> None:
    definitions = FieldDefinitions(
        custom={"tier": FieldDefinition("e1_T", "tier", "Text")},
        reserved={"email": FieldDefinition("_rf2_T", "email", "Text")},
    )
    match = match_custom_fields(definitions, {"Tier": "Text", "ltv": None, "x": "Date"})
    assert match.found == {"Tier": CustomField("e1_T", "tier", "Text")}
    assert match.missing == {"ltv": "Text", "x": "Date"}
    assert match.problems == []
