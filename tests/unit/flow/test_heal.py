"""What a look decides, and healing (exporter/flow/heal.py): a difference seen twice is healed
once (the members missing or changed sent again from the snapshot, in mirror mode outsiders
taken off); after the heal the run ends with what differs, never a success for a list that does
not match the segment."""

from __future__ import annotations

from exporter.flow import sending
from exporter.model.messages import LIST_CHECKS
from tests.support.memory_flow import MemoryWorld, emails, people


def export(world: MemoryWorld, *numbers: int) -> str:
    (run_id,) = world.arrive(f"loyal/{len(world.ledger.runs()):03d}.csv", people(*numbers))
    world.pump()
    return run_id


def hand_edit(world: MemoryWorld) -> None:
    """What a person does in SendGrid's UI: removes user3, renames user4, adds an outsider."""
    sg = world.sendgrid
    sg.hand_remove(world.list_id, "user3@example.com")
    sg.hand_upsert([], {"email": "user4@example.com", "first_name": "Edited"})
    sg.hand_upsert([world.list_id], {"email": "outsider@example.com", "first_name": "Hand"})


def test_hand_edits_are_healed_by_the_next_verified_run_in_mirror_mode(
    world: MemoryWorld,
) -> None:
    world.destination(sync_mode="mirror")
    first = world.run(export(world, *range(30)))
    assert (first.state, first.verified, first.looks, first.heals) == ("succeeded", True, 1, 0)
    hand_edit(world)
    upserts = world.sendgrid.count("upsert")
    run = world.run(export(world, *range(30)))  # the same segment: nothing to send by the state
    assert run.sent == 0
    # Look 1 saw it, look 2 (after the lag) confirmed it, the heal sent the missing and the
    # changed member again and took the outsider off; look 3 found the list equal.
    assert (run.state, run.verified, run.looks, run.heals) == ("succeeded", True, 3, 1)
    assert (run.resent, run.extra_removed) == (2, 1)
    assert (run.missing, run.changed, run.extra) == (0, 0, 0)
    assert world.sendgrid.count("upsert") == upserts + 1
    healed = {c["email"] for c in world.sendgrid.calls["upsert"][-1][1]}
    assert healed == {"user3@example.com", "user4@example.com"}
    assert [b.round for b in world.batches(run.run_id)] == [1, 1]
    assert world.emails() == emails(range(30))
    assert world.members()["user4@example.com"]["first_name"] == "Name4"


def test_upsert_mode_heals_members_and_leaves_outsiders_but_reports_them(
    world: MemoryWorld,
) -> None:
    world.destination()
    export(world, *range(30))
    hand_edit(world)
    run = world.run(export(world, *range(30)))
    assert (run.state, run.verified, run.resent, run.extra_removed) == ("succeeded", True, 2, 0)
    assert run.extra == 1  # reported, and kept: upsert mode never removes
    assert world.sendgrid.count("remove_from_list") == 0
    assert world.emails() == emails(range(30)) | {"outsider@example.com"}


def test_contacts_sendgrid_errored_are_healed_within_the_run(world: MemoryWorld) -> None:
    world.destination()
    world.sendgrid.refuse_all = True
    world.arrive("loyal/a.csv", people(*range(30)))
    world.pump(until=lambda: world.only_run().state == "verifying")
    world.sendgrid.refuse_all = False  # SendGrid takes them the second time
    world.pump()
    run = world.only_run()
    assert (run.state, run.verified, run.heals, run.resent) == ("succeeded", True, 1, 30)
    assert world.emails() == emails(range(30))


def test_contacts_sendgrid_keeps_refusing_end_the_run_with_errors_not_success(
    world: MemoryWorld,
) -> None:
    world.destination()
    world.sendgrid.refused = {f"user{i}@example.com" for i in range(0, 40, 4)}  # 10 of 40
    run = world.run(export(world, *range(40)))
    assert run.state == "succeeded_with_errors"
    assert (run.heals, run.verified, run.missing, run.resent) == (1, False, 10, 10)
    assert "SendGrid refused 10 contacts of the segment one by one" in run.error
    assert len(world.members()) == 30


def test_a_list_nobody_can_be_put_on_fails_the_run(world: MemoryWorld) -> None:
    world.destination()
    world.sendgrid.refuse_all = True
    run = world.run(export(world, *range(10)))
    assert run.state == "failed"
    assert "the list still differs from the segment after healing: 10 missing" in run.error


def test_a_list_emptied_by_hand_after_the_heal_fails_the_run(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    export(world, *range(10))
    hand_edit(world)
    (run_id,) = world.arrive("loyal/b.csv", people(*range(10)))
    world.pump(
        until=lambda: world.run(run_id).heals == 1 and world.run(run_id).state == "verifying"
    )
    world.sendgrid.hand_remove(world.list_id, *emails(range(5)))  # drift after the heal
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.missing, run.heals) == ("failed", 5, 1)
    assert run.error.startswith("the list still differs from the segment after healing")


def test_a_snapshot_replaced_before_the_heal_ends_the_run_saying_so(world: MemoryWorld) -> None:
    world.destination()
    export(world, *range(10))
    world.sendgrid.hand_remove(world.list_id, "user3@example.com")
    (run_id,) = world.arrive("loyal/b.csv", people(*range(10)))
    world.pump(until=lambda: world.run(run_id).looks == 1)
    world.drop("loyal/b.csv", people(*range(12)))  # replaced: the heal cannot read it
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.heals, run.missing) == ("failed", 0, 1)
    assert run.verify_note == (
        "the list could not be healed: the snapshot was replaced or deleted since the run read it"
    )


def test_a_repeated_look_heals_once(world: MemoryWorld) -> None:
    world.destination(sync_mode="mirror")
    export(world, *range(10))
    hand_edit(world)
    (run_id,) = world.arrive("loyal/b.csv", people(*range(10)))
    world.pump(until=lambda: world.sendgrid.count("start_export") == 3)  # look 1's export
    world.advance(5)
    (look,) = [m for m in world.take(LIST_CHECKS) if m.export_id]
    world.deliver(look)
    world.deliver(look)  # delivered twice: one heal
    run = world.run(run_id)
    assert (run.heals, run.state) == (1, "sending")
    assert [b.round for b in world.batches(run_id)].count(1) == 2  # one upsert, one removal
    world.pump()
    assert (world.run(run_id).state, world.run(run_id).verified) == ("succeeded", True)
    assert world.sendgrid.count("upsert") == 2


def test_a_heal_whose_batches_fail_ends_the_run_failed(world: MemoryWorld) -> None:
    world.destination()
    export(world, *range(10))
    world.sendgrid.hand_remove(world.list_id, "user3@example.com")
    (run_id,) = world.arrive("loyal/b.csv", people(*range(10)))
    world.pump(until=lambda: world.run(run_id).looks == 2)
    world.sendgrid.break_next("upsert", times=None)
    world.pump()
    run = world.run(run_id)
    assert run.state == "failed"
    assert run.error.startswith("the list still differs from the segment after healing: 1 missing")
    (heal,) = [b for b in world.batches(run_id) if b.round == 1]
    assert heal.state == "failed" and f"{sending.MAX_RETRIES} times" in heal.error
