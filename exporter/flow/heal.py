"""What a look at a run's list decides, and healing the list.

`exporter.flow.verification` takes the looks; what each one found comes here (`decide`), once
per look (guarded by the look it was made for): equal, the run succeeds (verified); different
on a first look (0, 2), the list is looked at again after SendGrid's lag; different on a second
look (1, 3): the first time, the list is healed (the members missing or changed are sent again,
read afresh from the run's snapshot version into heal batches, and in mirror mode whoever the
segment does not hold is taken off the list); after the heal, the run ends with what differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from exporter.core.batching import Batch, BatchLimits
from exporter.core.compare import Diff
from exporter.core.errors import InputError
from exporter.core.mapping import CustomField
from exporter.core.planning import plan
from exporter.core.snapshots.snapshot import open_snapshot
from exporter.core.synced_state.delta import Resend
from exporter.core.synced_state.keys import KeySet
from exporter.flow import commit, finish, removals, sending
from exporter.flow.events import event
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.runs import BatchRecord, RunRecord, differences
from exporter.model.versions import SnapshotVersion
from exporter.ports.sendgrid import Rejected, Unauthorized


def decide(
    svc: Services,
    run: RunRecord,
    look: int,
    diff: Diff,
    *,
    destination: Destination,
    custom: dict[str, CustomField],
) -> None:
    """Record what look `look` found, and take the step it calls for (once per look)."""
    mirror = run.sync_mode == "mirror"
    clean = diff.clean(mirror=mirror)

    won: list[bool] = []

    def looked(r: RunRecord) -> bool:
        won.clear()
        if r.final or r.looks != look or r.state != "verifying":
            return False
        won.append(True)
        r.looks = look + 1
        r.look_queued = False
        r.missing, r.changed, r.extra = diff.missing, diff.changed, diff.extra
        r.unverifiable = diff.unverifiable
        r.verified = clean
        r.list_count, r.list_count_note = diff.listed, ""
        r.drift = diff.listed - r.members
        if clean:
            r.verify_note = ""
        elif look % 2 == 0:
            r.verify_note = (
                f"look {look + 1} found {differences(r)}: looking again after SendGrid's lag"
            )
        return True

    event(
        "list looked at",
        run_id=run.run_id,
        look=look,
        listed=diff.listed,
        missing=diff.missing,
        changed=diff.changed,
        extra=diff.extra,
    )
    if clean or look % 2 == 1:
        if not clean and run.heals == 0:
            _heal(svc, run, look, diff, destination=destination, custom=custom)
            return
        svc.ledger.update_run(run.run_id, looked)
        if won:
            finish.finish(svc, run.run_id, list_count=diff.listed)
        return
    updated = svc.ledger.update_run(run.run_id, looked)
    if won:
        finish.queue_look(svc, updated)


def _heal(
    svc: Services,
    run: RunRecord,
    look: int,
    diff: Diff,
    *,
    destination: Destination,
    custom: dict[str, CustomField],
) -> None:
    """Send again what the list lacks or holds differently (read again from the run's snapshot
    version), and in mirror mode take off the list whoever the segment does not hold."""
    first = run.batches
    try:
        records = _resend_batches(svc, run, diff, destination=destination, custom=custom)
    except (ResourceModifiedError, ResourceNotFoundError):
        why = "the snapshot was replaced or deleted since the run read it"
        _cannot_heal(svc, run, look, diff, why)
        return
    except (InputError, Rejected, Unauthorized) as exc:
        _cannot_heal(svc, run, look, diff, f"the contacts to send again could not be read: {exc}")
        return
    resent = sum(r.contacts for r in records)
    outsiders = 0
    if run.sync_mode == "mirror" and diff.extra:
        extra = removals.removal_batches(
            svc,
            run.run_id,
            first + len(records),
            _lines(svc.run_files.open_run_file(run.run_id, commit.EXTRA_FILE)),
            round=1,
        )
        outsiders = sum(r.contacts for r in extra)
        records += extra
    svc.ledger.put_batches(run.run_id, records, overwrite=False)

    won: list[bool] = []

    def healing(r: RunRecord) -> bool:
        won.clear()
        if r.final or r.looks != look or r.state != "verifying" or r.heals:
            return False
        won.append(True)
        r.looks, r.heals, r.look_queued = look + 1, 1, False
        r.missing, r.changed, r.extra = diff.missing, diff.changed, diff.extra
        r.unverifiable = diff.unverifiable
        r.list_count, r.drift = diff.listed, diff.listed - r.members
        r.resent, r.extra_removed = resent, outsiders
        r.batches = first + len(records)
        r.batches_queued = False
        r.state = "sending"
        r.verify_note = (
            f"look {look + 1} found {differences(r)} again: sent {resent:,} contacts "
            + (f"and removed {outsiders:,} " if outsiders else "")
            + "to heal the list"
        )
        return True

    svc.ledger.update_run(run.run_id, healing)
    if won:  # this delivery healed (a concurrent repeat of the same look did not)
        event("list healing", run_id=run.run_id, resent=resent, removed=outsiders)
        if records:
            sending.queue_batches(svc, run.run_id)
        else:
            finish.settle(svc, run.run_id)


def _cannot_heal(svc: Services, run: RunRecord, look: int, diff: Diff, why: str) -> None:
    def noted(r: RunRecord) -> bool:
        if r.final or r.looks != look:
            return False
        r.looks = look + 1
        r.missing, r.changed, r.extra = diff.missing, diff.changed, diff.extra
        r.list_count, r.drift = diff.listed, diff.listed - r.members
        r.verify_note = f"the list could not be healed: {why}"
        return True

    svc.ledger.update_run(run.run_id, noted)
    finish.finish(svc, run.run_id, list_count=diff.listed)


def _resend_batches(
    svc: Services,
    run: RunRecord,
    diff: Diff,
    *,
    destination: Destination,
    custom: dict[str, CustomField],
) -> list[BatchRecord]:
    """The contacts to send again, planned afresh from the run's snapshot version into heal
    batches, numbered after the run's batches."""
    if not diff.resend:
        return []
    keys = KeySet(len(diff.resend))
    keys.update(diff.resend)
    version = SnapshotVersion(run.snapshot, run.etag, run.snapshot_time or run.created_at, 0)
    records: list[BatchRecord] = []

    def on_batch(batch: Batch) -> None:
        index = run.batches + len(records)
        svc.batch_blobs.write_batch(run.run_id, index, batch.contacts_json())
        records.append(
            BatchRecord(run.run_id, index, len(batch.contacts), batch.body_bytes, round=1)
        )

    with open_snapshot(
        svc.snapshots.open_snapshot(version), name=run.snapshot, mapping=destination.field_mapping()
    ) as snapshot:
        plan(
            snapshot,
            on_batch=on_batch,
            custom_fields=custom,
            limits=BatchLimits(max_contacts=svc.max_batch_contacts, list_ids=(run.list_id,)),
            delta=Resend(keys),
        )
    return records


def _lines(stream: Iterable[bytes] | None) -> Iterator[str]:
    for line in stream or ():
        text = line.decode().strip()
        if text:
            yield text
