"""Commit a run's synced state: what the next run of the destination x segment x list compares
against, whatever this run's outcome.

The state never forgets a contact that may be on the list. It is made from the run's pending
state (the snapshot's members, written by the planner) and what became of the run's batches:
- the list was read back and held exactly the segment: the pending state as it is;
- otherwise the contacts of every upsert batch that did not land whole (failed, never sent, or
  SendGrid errored some of its contacts) are marked UNSENT (their content on the list is
  unknown: the next run sends them again, or removes them in mirror mode if they left), and so
  are the members the last look found missing or changed; the emails of removal batches that
  did not complete, and (mirror mode) the outsiders the last look found and could not remove,
  are added as UNSENT members, so the next mirror run removes them.
A removal is dropped from the state only once SendGrid accepted it. Safe to repeat: the inputs
(the pending state, the batch outcomes, the last look's files) no longer change once the run
has ended.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from exporter.core.synced_state.keys import KeySet, email_key
from exporter.core.synced_state.state import UNSENT, SyncedState
from exporter.core.synced_state.writing import SortedSpill, merge_members
from exporter.flow.events import event
from exporter.flow.services import Services
from exporter.model.runs import RunRecord, set_fields

RESEND_FILE = "verify/resend"
"""Email keys (hex, one a line) the run's last look found missing or changed."""
EXTRA_FILE = "verify/extra"
"""Emails (one a line) the run's last look found on the list but not in the segment (mirror)."""


def commit_state(svc: Services, run: RunRecord) -> None:
    """Commit the state of a run that is ending (it got as far as planning), once: before the
    run shows as ended, so whoever sees it ended finds the state it left."""
    if run.state_committed or not run.planned:
        return
    if svc.destinations.get(run.destination) is None:
        return  # removed: its states were deleted with it, and must stay deleted
    unsent, additions = KeySet(), SortedSpill()
    if not run.verified:
        _mark_what_did_not_land(svc, run, unsent, additions)
    if not len(unsent) and not len(additions):
        # Everything landed (or the list was read back equal): the pending state as it is,
        # copied blob to blob, never parsed.
        count = svc.synced_states.commit_pending_state(
            run.run_id, run.destination, run.segment, run.list_id
        )
    else:
        pending = SyncedState.read_index(
            svc.pending_states.read_pending_index(run.run_id), masks=True
        )
        members = merge_members(
            pending,
            svc.pending_states.pending_emails(run.run_id),
            unsent=unsent,
            additions=additions,
        )
        count = svc.synced_states.write_state(
            run.destination, run.segment, run.list_id, members, pending.fields
        )
    svc.ledger.update_run(run.run_id, lambda r: set_fields(r, state_committed=True))
    event(
        "state committed",
        run_id=run.run_id,
        destination=run.destination,
        members=count,
        marked_unsent=len(unsent),
        kept_for_removal=len(additions),
    )


def _mark_what_did_not_land(
    svc: Services, run: RunRecord, unsent: KeySet, additions: SortedSpill
) -> None:
    for batch in svc.ledger.batches(run.run_id):
        if batch.kind == "upsert" and (batch.state != "done" or batch.errored):
            # One batch's contacts in memory at a time (at most 6 MB).
            contacts = json.loads(svc.batch_blobs.read_batch(run.run_id, batch.index))
            unsent.update(email_key(c["email"]) for c in contacts)
        elif batch.kind == "remove" and batch.state != "done":
            for email in svc.removal_blobs.read_removals(run.run_id, batch.index):
                additions.add(email_key(email), UNSENT, 0, email)
    resend = svc.run_files.open_run_file(run.run_id, RESEND_FILE)
    if resend is not None:
        unsent.update(int(line, 16) for line in resend if line.strip())
    if run.sync_mode == "mirror":
        for email in _lines(svc.run_files.open_run_file(run.run_id, EXTRA_FILE)):
            additions.add(email_key(email), UNSENT, 0, email)


def _lines(stream: Iterable[bytes] | None) -> Iterable[str]:
    for line in stream or ():
        text = line.decode().strip()
        if text:
            yield text
