"""How a run ends: once its batches have settled it reads its list back (when it verifies) or ends
with the outcome its batches and its looks at the list say; then its state is committed and its
slot given back.

Outcomes (`outcome`): a run is `succeeded` when the list was read back and held exactly what the
segment says, or, where it was not read back this run, when every batch landed and SendGrid took
every contact. Rejected rows are reported, but do not change this. `succeeded_with_errors`: the
list holds what the segment says except contacts SendGrid refused one by one (its import jobs
errored them; the run shows how many and where SendGrid lists them). Anything else is `failed`,
with the reason: a batch that never landed (on an unverified run), or a list that still differs
from the segment after it was healed. Every step here is safe to repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from exporter.core.errors import InputError
from exporter.core.redact import mask_emails
from exporter.flow import commit, notify, slots
from exporter.flow.events import brief, event
from exporter.flow.services import Services
from exporter.model.messages import LIST_CHECKS, ListCheck
from exporter.model.runs import (
    BatchRecord,
    RunRecord,
    confirmed_difference,
    differences,
    totals,
    utcnow,
)
from exporter.ports.sendgrid import NotFound, SendGridError

log = logging.getLogger("exporter.flow.runs")

FAILED: Final = "failed"


def settle(svc: Services, run_id: str) -> RunRecord | None:
    """Called whenever a batch settles (and by a run with nothing to send): once every batch of
    the run has, the run reads its list back (a verifying run) or ends. Returns the run when it
    has ended. Concurrent and repeated calls are harmless."""
    if svc.ledger.has_open_batches(run_id):
        return None
    run = svc.ledger.get_run(run_id)
    if run is None:
        return None
    if run.final:
        wrap_up(svc, run)  # a repeat: the first call may have died before committing
        return run
    if run.state == "verifying":
        queue_look(svc, run)
        return None
    if run.state not in ("sending", "confirming"):
        return None  # still planning: the planner settles it
    if run.verify and svc.destinations.get(run.destination) is not None:

        def verifying(r: RunRecord) -> bool:
            if r.state not in ("sending", "confirming"):
                return False
            r.state, r.look_queued = "verifying", False
            return True

        run = svc.ledger.update_run(run_id, verifying)
        if run.state == "verifying":
            queue_look(svc, run)
        return None
    return finish(svc, run_id)


def queue_look(svc: Services, run: RunRecord) -> None:
    """Queue the run's next look at its list, unless it is queued already. The first look, and
    the first after healing, wait `verify_delay` (SendGrid shows finished imports in lists with a
    lag); a look after one that found differences waits `verify_lag`."""
    if run.state != "verifying" or run.look_queued:
        return
    after_difference = run.looks % 2 == 1
    delay = svc.verify_lag if after_difference else svc.verify_delay
    svc.queues.send(LIST_CHECKS, ListCheck(run_id=run.run_id, look=run.looks), delay=delay)

    def queued(r: RunRecord) -> bool:
        if r.looks != run.looks or r.look_queued:
            return False
        r.look_queued = True
        return True

    svc.ledger.update_run(run.run_id, queued)


def finish(svc: Services, run_id: str, *, list_count: int | None = None) -> RunRecord:
    """End the run with the outcome its batches and looks say (once); commit its state and give
    back its slot. `list_count`: what the last look counted (else SendGrid's count is asked)."""
    batches = svc.ledger.batches(run_id)
    current = svc.ledger.get_run(run_id)
    if current is None:
        raise KeyError(f"no run {run_id}")
    if current.final:
        wrap_up(svc, current)
        return current
    count, note = list_count, ""
    if count is None:
        count, note = _list_count(svc, current)
    # The state first: whoever sees the run ended finds the state it left.
    commit.commit_state(svc, current)
    ended: list[bool] = []

    def change(run: RunRecord) -> bool:
        ended.clear()
        if run.final:
            return False
        _apply_totals(run, batches)
        run.state, run.error = outcome(run, batches)
        run.list_count, run.list_count_note = count, note
        run.drift = None if count is None else count - run.members
        run.finished_at = utcnow()
        ended.append(True)
        return True

    run = svc.ledger.update_run(run_id, change)
    wrap_up(svc, run)
    if ended:
        event(
            "run finished",
            run_id=run.run_id,
            destination=run.destination,
            state=run.state,
            created=run.created,
            updated=run.updated,
            errored=run.errored,
            removed=run.removed,
            verified=run.verified,
        )
    return svc.ledger.get_run(run_id) or run


def fail_run(svc: Services, run_id: str, reason: str, *, state: str = FAILED) -> RunRecord:
    """End a run that cannot go on, saying why (unless it already ended). A run that planned
    commits its state first, as any ended run does."""
    batches = svc.ledger.batches(run_id)
    current = svc.ledger.get_run(run_id)
    if current is not None and not current.final:
        commit.commit_state(svc, current)

    def change(run: RunRecord) -> bool:
        if run.final:
            return False
        if batches:
            _apply_totals(run, batches)
        run.state = state
        run.error = mask_emails(reason)
        run.finished_at = utcnow()
        return True

    run = svc.ledger.update_run(run_id, change)
    wrap_up(svc, run)
    event("run ended", run_id=run_id, destination=run.destination, state=run.state, reason=reason)
    return svc.ledger.get_run(run_id) or run


def wrap_up(svc: Services, run: RunRecord) -> None:
    """After a run ended: its state committed (a repeat after a crash commits it now), its slot
    given back, and its contact data deleted (batches, removals, pending state: personal data
    is kept no longer than the run needs it; the reject report stays for its retention).
    Idempotent; called again by any repeat that finds the run ended."""
    if not run.final:
        return
    commit.commit_state(svc, run)
    slots.release(svc, svc.ledger.get_run(run.run_id) or run)
    svc.run_files.delete_run_blobs(run.run_id)
    notify.run_ended(svc, run)  # queued once; delivered on their own queue, never in the way


def outcome(run: RunRecord, batches: Sequence[BatchRecord]) -> tuple[str, str]:
    """(final state, reason) from what the run's batches and its looks at the list found."""
    failed = [b for b in batches if b.state == "failed"]
    errored = sum(b.errored for b in batches)
    if run.verified:
        return "succeeded", ""
    if confirmed_difference(run):
        # Seen twice (a lag apart), after healing if it could be healed: never a success.
        refused = sum(b.errored for b in batches if b.round > 0)
        extra = run.extra if run.sync_mode == "mirror" else 0
        missing, changed = run.missing or 0, run.changed or 0
        # What still differs is no more than SendGrid refused one by one when the run sent it
        # again (an errored new contact is missing; an errored update leaves the old fields),
        # and not everyone: the list holds everyone else.
        refused_only = 0 < missing + changed <= refused and missing < run.members
        if run.heals and not extra and refused_only:
            return "succeeded_with_errors", (
                f"SendGrid refused {missing + changed:,} contacts of the segment one by one "
                "(its import jobs errored them, twice): the list holds everyone else as the "
                "segment says; its error files say why"
            )
        said = "still differs from the segment after healing" if run.heals else "differs"
        why = f" ({run.verify_note})" if run.verify_note else ""
        return FAILED, f"the list {said}: {differences(run)}{why}"
    if failed:
        first = failed[0]
        return FAILED, (
            f"{len(failed)} of {len(batches)} batches failed; batch {first.index}: "
            + (first.error or "no reason recorded")
        )
    if errored and errored >= sum(b.requested for b in batches if b.kind == "upsert"):
        return FAILED, f"SendGrid refused every contact sent ({errored:,}) one by one"
    if errored:
        return "succeeded_with_errors", (
            f"SendGrid refused {errored:,} contacts one by one (its import jobs errored them): "
            "they are not on the list; the next run sends them again"
        )
    return "succeeded", ""


def list_gone(destination: str, list_id: str) -> str:
    """Why a run ends when SendGrid no longer has its list, and what to do about it."""
    return (
        f"SendGrid has no list {list_id} (destination {destination!r}): it was deleted, or the "
        "API key belongs to another account. Name a list with `destinations update "
        f"{destination} --list-name NAME` (found or created), then export again"
    )


def _apply_totals(run: RunRecord, batches: Sequence[BatchRecord]) -> None:
    sums = totals(batches)
    run.requested, run.created = sums["requested"], sums["created"]
    run.updated, run.errored = sums["updated"], sums["errored"]
    run.removed = sums["removed"]
    run.batches_done, run.batches_failed = sums["done"], sums["failed"]


def _list_count(svc: Services, run: RunRecord) -> tuple[int | None, str]:
    """SendGrid's count of the list, or (None, why it is unknown)."""
    destination = svc.destinations.get(run.destination)
    if destination is None:
        return None, "not counted: the destination was removed"
    try:
        return svc.sendgrid(destination).list_count(run.list_id), ""
    except NotFound:
        return None, f"SendGrid has no list {run.list_id} any more"
    except (SendGridError, InputError) as exc:
        log.warning("could not count list of run %s: %s", run.run_id, brief(exc))
        return None, f"SendGrid did not say how many contacts the list holds ({brief(exc)})"
