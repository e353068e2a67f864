"""Committing the synced state (exporter/flow/commit.py): whatever a run's outcome, the state the
next run compares against never forgets a contact that may be on the list: what did not land is
sent again, what was not removed is removed by the next mirror run."""

from __future__ import annotations

import pytest

from exporter.flow import commit, poison
from exporter.ports.sendgrid import Rejected
from tests.support.memory_flow import UNVERIFIED, MemoryWorld, emails, people, segment_csv


def test_a_verified_run_commits_its_pending_state_as_it_is(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.destination()
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(30))
    world.plan_queued()
    pending = world.storage.blobs[f"runs/{run_id}/state/index"]
    monkeypatch.setattr(world.storage, "write_state", lambda *a: pytest.fail("merged"))
    world.pump()
    assert world.run(run_id).verified and world.run(run_id).state_committed
    assert world.storage.read_state("marketing", "loyal", world.list_id) == pending


def test_a_failed_run_commits_what_landed_so_the_next_run_sends_only_the_rest(
    world: MemoryWorld,
) -> None:
    world.destination(**UNVERIFIED)
    world.arrive("loyal/a.csv", segment_csv(60))
    world.pump()
    changed = segment_csv(60).replace(",Name", ",Changed")  # all 60 changed
    world.arrive("loyal/a.csv", changed)
    world.plan_queued()
    first, second = world.take_batches()
    world.deliver(first)  # one batch (40) lands
    poison.batch_poisoned(world.svc, second)  # the other (20) never does
    world.pump()
    failed = world.latest()
    assert (failed.state, failed.state_committed) == ("failed", True)

    world.arrive("loyal/a.csv", changed + "\n")  # the same rows again
    world.pump()
    again = world.latest()
    assert (again.state, again.sent, again.state_committed) == ("succeeded", 20, True)
    resent = {c["email"] for c in world.sendgrid.calls["upsert"][-1][1]}
    assert resent == emails(range(40, 60))  # exactly the batch that never landed
    assert all(m["first_name"].startswith("Changed") for m in world.members().values())


def test_contacts_sendgrid_errored_are_sent_again_and_nothing_else(world: MemoryWorld) -> None:
    world.destination(**UNVERIFIED)
    world.arrive("loyal/a.csv", segment_csv(100))
    world.pump()
    changed = segment_csv(100).replace(",Name1", ",Changed1").replace(",Name5", ",Changed5")
    changed += "".join(f"new{i}@example.com,New,X\n" for i in range(30))  # 22 + 30 to send
    world.arrive("loyal/a.csv", changed)
    world.plan_queued()
    first, second = world.take_batches()
    world.sendgrid.refuse_all = True
    world.deliver(first)  # SendGrid errors all 40
    world.pump(until=lambda: world.batches(first.run_id)[0].settled)
    world.sendgrid.refuse_all = False
    world.deliver(second)  # these 12 land
    world.pump()
    partial = world.latest()
    assert (partial.state, partial.sent, partial.errored) == ("succeeded_with_errors", 52, 40)
    assert partial.state_committed

    world.arrive("loyal/a.csv", changed + "\n")  # the same rows
    world.pump()
    again = world.latest()
    assert (again.state, again.sent, again.errored, again.unchanged) == ("succeeded", 40, 0, 90)
    members = world.members()
    assert len(members) == 130
    assert members["user15@example.com"]["first_name"] == "Changed15"


def test_a_failed_run_forgets_nothing_it_added(world: MemoryWorld) -> None:
    """Members that joined in a failed run and left in the next are removed (mirror mode)."""
    world.destination(sync_mode="mirror", max_removal_share=1.0, **UNVERIFIED)
    world.arrive("loyal/a.csv", people(*range(10)))
    world.pump()
    world.arrive("loyal/b.csv", people(*range(60)))  # 50 join: 40 land, 10 never do
    world.plan_queued()
    first, second = world.take_batches()
    world.deliver(first)
    poison.batch_poisoned(world.svc, second)
    world.pump()
    assert (world.latest().state, world.latest().state_committed) == ("failed", True)
    assert len(world.members()) == 50

    world.arrive("loyal/c.csv", people(*range(10)))  # everyone who joined leaves again
    world.pump()
    run = world.latest()
    assert (run.state, run.leavers, run.removed) == ("succeeded", 50, 40)  # 10 were never on
    assert world.emails() == emails(range(10))


def test_removals_that_did_not_happen_are_done_by_the_next_mirror_run(
    world: MemoryWorld,
) -> None:
    world.destination(sync_mode="mirror", **UNVERIFIED)
    world.arrive("loyal/a.csv", people(*range(20)))
    world.pump()
    world.arrive("loyal/b.csv", people(*range(15)))  # 5 leave, but their removal fails
    world.plan_queued()
    (removal,) = world.take_batches()
    poison.batch_poisoned(world.svc, removal)
    world.pump()
    assert (world.latest().state, world.latest().removed) == ("failed", 0)
    assert world.emails() == emails(range(20))

    world.arrive("loyal/c.csv", people(*range(15)))  # the same segment again
    world.pump()
    run = world.latest()
    assert (run.state, run.sent, run.leavers, run.removed) == ("succeeded", 0, 5, 5)
    assert world.emails() == emails(range(15))


def test_outsiders_a_look_found_and_could_not_remove_are_removed_by_the_next_run(
    world: MemoryWorld,
) -> None:
    world.destination(sync_mode="mirror")
    world.arrive("loyal/a.csv", people(*range(10)))
    world.pump()
    world.sendgrid.hand_upsert([world.list_id], {"email": "outsider@example.com"})
    world.sendgrid.fail_next("remove_from_list", Rejected("refused", status=400), times=None)
    world.arrive("loyal/b.csv", people(*range(10)))
    world.pump()
    failed = world.latest()
    assert (failed.state, failed.extra, failed.heals) == ("failed", 1, 1)
    assert "outsider@example.com" in world.emails()
    world.sendgrid.clear_faults()

    world.destination(sync_mode="mirror", **UNVERIFIED)
    world.arrive("loyal/c.csv", people(*range(10)))
    world.pump()
    run = world.latest()
    assert (run.state, run.leavers, run.removed) == ("succeeded", 1, 1)
    assert world.emails() == emails(range(10))


def test_a_run_that_never_planned_commits_nothing(world: MemoryWorld) -> None:
    world.destination()
    world.arrive("loyal/a.csv", segment_csv(10))
    world.pump()
    state = world.storage.read_state("marketing", "loyal", world.list_id)
    world.destination(profile_cap=5)
    world.arrive("loyal/b.csv", segment_csv(10))
    world.pump()
    assert (world.latest().state, world.latest().state_committed) == ("failed", False)
    assert world.storage.read_state("marketing", "loyal", world.list_id) == state


def test_a_removed_destinations_state_stays_deleted(world: MemoryWorld) -> None:
    world.destination()
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(10))
    world.plan_queued()
    world.destinations.delete("marketing")
    commit.commit_state(world.svc, world.run(run_id))
    assert not world.run(run_id).state_committed
    assert world.storage.read_state("marketing", "loyal", world.list_id) is None


def test_a_commit_is_made_once(world: MemoryWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world.destination(**UNVERIFIED)
    (run_id,) = world.arrive("loyal/a.csv", segment_csv(10))
    world.pump()
    monkeypatch.setattr(world.storage, "commit_pending_state", lambda *a: pytest.fail("again"))
    commit.commit_state(world.svc, world.run(run_id))
    assert world.run(run_id).state_committed


def test_a_moved_list_starts_from_nothing_and_drops_the_old_lists_state(
    world: MemoryWorld,
) -> None:
    world.destination(sync_mode="mirror")
    world.arrive("loyal/a.csv", people(*range(25)))
    world.pump()
    new_list = world.sendgrid.store.create_list("v2").id
    world.destination(sync_mode="mirror", list_id=new_list)
    world.arrive("loyal/b.csv", people(*range(25)))
    world.pump()
    run = world.latest()
    assert (run.state, run.sent, run.verified) == ("succeeded", 25, True)
    assert world.emails(new_list) == emails(range(25))
    states = [b for b in world.storage.blobs if b.startswith("state/marketing/loyal/")]
    assert states and all(b.startswith(f"state/marketing/loyal/{new_list}/") for b in states)
