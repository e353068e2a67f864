"""Custom fields through a run (exporter/flow/fields.py): mapped names resolved to SendGrid's ids
before a row is read, created only when the destination allows and nothing else is wrong,
values sent keyed by id and compared by name when the list is read back. (The matching rules
themselves: tests/unit/test_fields.py.)"""

from __future__ import annotations

from exporter.flow import fields
from tests.support.memory_flow import MemoryWorld

DATA = "Email,Tier,Score\na@example.com,Gold,7\nb@example.com,,\n"


def test_a_missing_custom_field_fails_the_run_naming_it_and_nothing_is_created(
    world: MemoryWorld,
) -> None:
    world.destination(mapping={"email": "Email", "custom:tier": "Tier", "custom:score": "Score"})
    world.arrive("loyal/a.csv", DATA)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "custom field(s) 'tier', 'score' do not exist in SendGrid" in run.error
    assert "create_missing_fields" in run.error
    assert world.sendgrid.store.custom_fields() == []
    assert world.sendgrid.count("upsert") == 0


def test_missing_fields_are_created_when_allowed_and_values_land_keyed_by_id(
    world: MemoryWorld,
) -> None:
    world.destination(
        mapping={"email": "Email", "custom:tier": "Tier", "custom:score:Number": "Score"},
        create_missing_fields=True,
    )
    world.arrive("loyal/a.csv", DATA)
    world.pump()
    run = world.only_run()
    assert (run.state, run.verified) == ("succeeded", True), run.error
    defined = {f.name: (f.id, f.field_type) for f in world.sendgrid.store.custom_fields()}
    assert defined == {"tier": ("e1_T", "Text"), "score": ("e2_N", "Number")}
    sent = {c["email"]: c.get("custom_fields") for c in world.sendgrid.upserted()}
    assert sent == {"a@example.com": {"e1_T": "Gold", "e2_N": 7}, "b@example.com": None}
    members = world.members()
    assert members["a@example.com"]["custom_fields"] == {"tier": "Gold", "score": 7}
    assert "custom_fields" not in members["b@example.com"]

    world.arrive("loyal/b.csv", DATA)  # the next run finds them: none created again
    world.pump()
    assert world.sendgrid.count("create_field") == 2


def test_a_type_mismatch_fails_the_run_and_says_how_to_fix_it(world: MemoryWorld) -> None:
    world.sendgrid.store.create_custom_field("tier", "Number")
    world.destination(mapping={"email": "Email", "custom:tier:Text": "Tier"})
    world.arrive("loyal/a.csv", DATA)
    world.pump()
    run = world.only_run()
    assert run.state == "failed"
    assert "custom field 'tier' is Number in SendGrid but the mapping declares" in run.error


def test_a_value_that_does_not_fit_its_field_is_rejected_not_sent(world: MemoryWorld) -> None:
    world.sendgrid.store.create_custom_field("score", "Number")
    world.destination(mapping={"email": "Email", "custom:score": "Score"})
    world.arrive("loyal/a.csv", "Email,Score\na@example.com,7\nb@example.com,lots\n")
    world.pump()
    run = world.only_run()
    assert (run.state, run.valid, run.rejected) == ("succeeded", 1, 1)
    assert run.reasons == {"custom_field_not_a_number": 1}
    assert set(world.members()) == {"a@example.com"}


def test_a_custom_value_edited_by_hand_is_seen_and_healed(world: MemoryWorld) -> None:
    field = world.sendgrid.store.create_custom_field("tier", "Text")
    world.destination(mapping={"email": "Email", "custom:tier": "Tier"})
    world.arrive("loyal/a.csv", DATA)
    world.pump()
    world.sendgrid.hand_upsert([], {"email": "a@example.com", "custom_fields": {field.id: "Tin"}})
    world.arrive("loyal/b.csv", DATA)
    world.pump()
    run = world.latest()
    assert (run.state, run.heals, run.resent) == ("succeeded", 1, 1)
    assert world.members()["a@example.com"]["custom_fields"] == {"tier": "Gold"}


def test_a_field_another_run_created_meanwhile_is_used(world: MemoryWorld) -> None:
    world.destination(mapping={"email": "Email", "custom:tier": "Tier"}, create_missing_fields=True)
    client = world.sendgrid
    real = client.field_definitions
    calls: list[int] = []

    def racing() -> object:
        calls.append(1)
        if len(calls) == 1:  # between our look and our create, another run creates it
            answer = real()
            client.store.create_custom_field("tier", "Text")
            return answer
        return real()

    client.field_definitions = racing  # type: ignore[method-assign]
    destination = world.destinations.get("marketing")
    assert destination is not None
    found = fields.resolve_custom_fields(client, destination)
    assert found["tier"].id == "e1_T"
    assert len(client.store.custom_fields()) == 1
