"""Reading a run's list back (exporter/flow/verification.py): each look is a SendGrid contact
export compared member by member with the segment; SendGrid's lag is looked at again before
anything is called drift; a look that cannot be taken ends the run unverified, honestly."""

from __future__ import annotations

import itertools

import pytest

from exporter.flow import poison, sending, verification
from exporter.model.messages import IMPORT_JOBS, LIST_CHECKS
from exporter.ports.sendgrid import ExportFileGone, Rejected, Unauthorized
from tests.support.memory_flow import MemoryWorld, emails, people


def exported(world: MemoryWorld, n: int = 20, **destination: object) -> str:
    world.destination(**destination)
    (run_id,) = world.arrive("loyal/a.csv", people(*range(n)))
    return run_id


def test_a_list_read_back_equal_verifies_the_run(world: MemoryWorld) -> None:
    run_id = exported(world)
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified, run.looks, run.heals) == ("succeeded", True, 1, 0)
    assert (run.missing, run.changed, run.extra, run.list_count, run.drift) == (0, 0, 0, 20, 0)
    assert run.verify_note == ""
    assert world.sendgrid.count("start_export") == 1
    looks = world.delivered(LIST_CHECKS)
    assert [bool(d.message.export_id) for d in looks] == [False, True]  # start, then read


def test_sendgrids_lag_is_looked_at_again_before_anything_is_called_drift() -> None:
    world = MemoryWorld.create(list_lag=100.0)  # look 0 after 60 s, look 1 300 s later
    run_id = exported(world)
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified, run.looks, run.heals, run.resent) == (
        "succeeded",
        True,
        2,
        0,
        0,
    )
    assert world.sendgrid.count("upsert") == 1  # nothing sent again


def test_an_export_still_pending_is_looked_at_again_later_and_later() -> None:
    world = MemoryWorld.create(export_delay=40.0)
    run_id = exported(world)
    world.pump()
    polls = [d.at for d in world.delivered(LIST_CHECKS) if d.message.export_id]
    assert [round(b - a) for a, b in itertools.pairwise(polls)] == [2, 4, 8, 16, 32]
    assert world.run(run_id).verified


def test_a_list_deleted_in_sendgrid_fails_the_run_when_it_is_read_back(world: MemoryWorld) -> None:
    run_id = exported(world)
    world.pump(until=lambda: world.run(run_id).state == "verifying")
    world.sendgrid.store.delete_list(world.list_id)
    world.pump()
    run = world.run(run_id)
    assert run.state == "failed"
    assert run.error.startswith(f"SendGrid has no list {world.list_id}")
    assert world.sendgrid.count("start_export") == 0  # 404 on the list, before any export


def test_a_list_deleted_while_its_export_was_written_fails_the_run(world: MemoryWorld) -> None:
    run_id = exported(world)
    world.pump(until=lambda: world.sendgrid.count("start_export") == 1)
    world.sendgrid.store.delete_list(world.list_id)
    world.pump()
    run = world.run(run_id)
    assert run.state == "failed"
    assert "SendGrid has no list" in run.error


def test_a_look_that_cannot_be_taken_leaves_the_run_unverified_with_the_reason(
    world: MemoryWorld,
) -> None:
    world.sendgrid.failing_exports = 100
    run_id = exported(world, 10)
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified) == ("succeeded", False)  # every batch landed
    assert run.verify_note.startswith("not verified: SendGrid's export of the list failed")
    assert world.sendgrid.count("start_export") == verification.MAX_EXPORT_FAILURES
    assert len(world.members()) == 10


def test_an_export_file_gone_is_exported_again(world: MemoryWorld) -> None:
    world.sendgrid.fail_next("open_export_file", ExportFileGone("expired", status=403))
    run_id = exported(world)
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified, run.looks) == ("succeeded", True, 1)
    assert world.sendgrid.count("start_export") == 2


def test_sendgrid_failing_every_look_ends_the_run_unverified(world: MemoryWorld) -> None:
    world.sendgrid.break_next("start_export", times=None)
    run_id = exported(world)
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified) == ("succeeded", False)
    assert run.verify_note.startswith(
        f"not verified: SendGrid failed {sending.MAX_RETRIES} times in a row"
    )


@pytest.mark.parametrize(
    ("error", "state", "says"),
    [
        (Unauthorized("key refused", status=401), "failed", "could not read the list back"),
        (Rejected("bad request", status=400), "succeeded", "not verified: could not read"),
    ],
)
def test_sendgrid_refusing_a_look_ends_the_run_saying_why(
    world: MemoryWorld, error: Exception, state: str, says: str
) -> None:
    world.sendgrid.fail_next("export_status", error)
    run_id = exported(world)
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified) == (state, False)
    assert says in (run.error if state == "failed" else run.verify_note)


def test_a_destination_removed_while_verifying_fails_the_run(world: MemoryWorld) -> None:
    run_id = exported(world)
    world.pump(until=lambda: world.run(run_id).state == "verifying")
    world.destinations.delete("marketing")
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.error) == (
        "failed",
        "the destination was removed: the list was not read back",
    )


def test_a_stale_or_repeated_look_changes_nothing_a_repeat_could_break(
    world: MemoryWorld,
) -> None:
    run_id = exported(world)
    world.pump(until=lambda: world.run(run_id).state == "verifying")
    (look,) = world.take(LIST_CHECKS)
    world.advance(60)
    world.deliver(look)
    world.deliver(look)  # again: a second export (harmless), one decision
    assert world.sendgrid.count("start_export") == 2
    world.deliver(look.model_copy(update={"look": 5}))  # a look the run is not at
    world.pump()
    run = world.run(run_id)
    assert (run.state, run.verified, run.looks) == ("succeeded", True, 1)
    world.deliver(look)  # after the end: nothing
    assert world.sendgrid.count("start_export") == 2
    assert world.run(run_id) == run


def test_a_poisoned_look_ends_the_run_unverified(world: MemoryWorld) -> None:
    run_id = exported(world, 10)
    world.pump(until=lambda: world.run(run_id).state == "verifying")
    (look,) = world.take(LIST_CHECKS)
    poison.list_check_poisoned(world.svc, look)
    run = world.run(run_id)
    assert (run.state, run.verified) == ("succeeded", False)
    assert "the look at the list failed on every attempt" in run.verify_note


def test_a_worker_dying_before_queueing_the_first_look_does_not_hang_the_run(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = exported(world, 10)
    real = world.storage.send

    def dies(queue: str, message: object, *, delay: float = 0) -> None:
        if queue == LIST_CHECKS:
            raise ConnectionError("the worker died")
        real(queue, message, delay=delay)

    monkeypatch.setattr(world.storage, "send", dies)
    with pytest.raises(ConnectionError):
        world.pump()
    run = world.run(run_id)
    assert (run.state, run.look_queued) == ("verifying", False)
    assert len(world.storage.queues[IMPORT_JOBS]) == 1  # the job check comes back
    monkeypatch.undo()
    world.pump()
    assert (world.run(run_id).state, world.run(run_id).verified) == ("succeeded", True)


def test_what_a_look_found_is_kept_for_the_commit_and_deleted_with_the_run() -> None:
    world = MemoryWorld.create(list_lag=200.0)  # nobody shows at the first look
    run_id = exported(world, sync_mode="mirror")
    world.pump(until=lambda: world.run(run_id).looks == 1)
    resend = world.storage.blobs[f"runs/{run_id}/verify/resend"]
    assert len(resend.splitlines()) == 20  # every member's key, to send again
    assert world.storage.blobs[f"runs/{run_id}/verify/extra"] == b""
    world.pump()
    assert (world.run(run_id).verified, world.run(run_id).heals) == (True, 0)
    assert world.run_files(run_id) == []
    assert world.emails() == emails(range(20))
