"""Reading a run's list back from SendGrid and comparing it with the segment: the looks.

Once a verifying run's batches have settled (`finish.settle`), it takes looks at its list, each
one a SendGrid contacts export (the only way to read every member) compared member by member,
fields included, with the run's pending state (`exporter.core.compare`); what each look found
decides what follows (`exporter.flow.heal`):

  look 0  (after `verify_delay`)  equal → succeeded (verified)
                                  different → look 1 after `verify_lag` (SendGrid lags)
  look 1                          equal → succeeded
                                  different → heal: send again the members missing or
                                  changed (read again from the snapshot), and in mirror mode
                                  take off the list whoever the segment does not hold
  look 2  (after the heal settles, `verify_delay`) equal → succeeded; different → look 3
  look 3                          equal → succeeded; different → failed (or
                                  succeeded_with_errors when SendGrid refused exactly those
                                  contacts one by one), with what differs

Each look is a `ListCheck` message: the first delivery starts the export, the next ones poll
it (with a growing delay), the one that finds it ready compares and decides. Every step is safe
to repeat: a stale or repeated message changes nothing (it queues the run's next step if a crash
lost it), heal batches are written once, and each decision is taken once (guarded by the look
it was made for). SendGrid failures are retried like a batch's (see `exporter.flow.sending`); a look
that cannot be taken at all leaves the run unverified, with the reason.
"""

from __future__ import annotations

import tempfile
from typing import Final

from exporter.core.compare import Comparer, Diff
from exporter.core.contacts import ContactBuilder
from exporter.core.errors import ExporterError, InputError
from exporter.core.list_export import read_export
from exporter.core.mapping import CustomField, field_spec
from exporter.core.synced_state.state import SyncedState
from exporter.flow import commit, finish, heal, sending
from exporter.flow.events import brief, event
from exporter.flow.fields import mapped_custom_fields, resolve_custom_fields
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.messages import LIST_CHECKS, ListCheck
from exporter.model.runs import RunRecord, set_fields
from exporter.ports.sendgrid import (
    ContactExport,
    NotFound,
    Rejected,
    SendGrid,
    TransientError,
    Unauthorized,
)

FIRST_EXPORT_CHECK: Final = 1.0
MAX_EXPORT_CHECK_DELAY: Final = 60.0
MAX_EXPORT_CHECKS: Final = 150
"""About 2 hours of waiting for SendGrid's export (most checks a minute apart)."""
MAX_EXPORT_FAILURES: Final = 3
"""Exports SendGrid may report failed for one look before the look is given up."""


def check_list(svc: Services, message: ListCheck) -> None:
    """One step of one look at a run's list (queue list-checks)."""
    run = svc.ledger.get_run(message.run_id)
    if run is None:
        return
    if run.final:
        # A repeat of the look that ended the run: it may have died in the wrap-up (the state
        # commit, the slot, the notifications); finish that (idempotent) and stop.
        finish.wrap_up(svc, run)
        return
    if run.state != "verifying" or message.look != run.looks:
        ensure_progress(svc, run)  # stale or repeated: the step it belonged to is done
        return
    destination = svc.destinations.get(run.destination)
    if destination is None or destination.consent is None:
        why = "removed" if destination is None else "left without a data-privacy consent"
        finish.fail_run(svc, run.run_id, f"the destination was {why}: the list was not read back")
        return
    try:
        client = svc.sendgrid(destination)
        if not message.export_id:
            _start(svc, client, run, message)
            return
        export = client.export_status(message.export_id)
        if not export.settled:
            _wait(svc, run, message)
            return
        if not export.ready:
            _export_failed(svc, run, message, export.message or "no reason given")
            return
        # The custom fields' ids before the download: a failure here costs no download.
        custom = _custom_fields(client, destination)
        diff = _look(svc, client, run, export, custom)
    except TransientError as exc:
        sending.again(
            svc,
            LIST_CHECKS,
            message,
            exc,
            fail=lambda why: give_up(svc, run, message, why),
        )
        return
    except NotFound as exc:
        if message.export_id and _list_exists(client, run):
            # The export (or one of its files) is gone or expired: a new export, a few times.
            _export_failed(svc, run, message, f"it is gone or expired ({exc})")
            return
        finish.fail_run(svc, run.run_id, finish.list_gone(run.destination, run.list_id))
        return
    except Unauthorized as exc:
        finish.fail_run(svc, run.run_id, f"could not read the list back: {exc}")
        return
    except (Rejected, InputError, ExporterError) as exc:
        give_up(svc, run, message, f"could not read the list back: {brief(exc)}")
        return
    heal.decide(svc, run, message.look, diff, destination=destination, custom=custom)


def ensure_progress(svc: Services, run: RunRecord) -> None:
    """Queue what a crashed step may have left unqueued: the next look, or the heal batches."""
    if run.final:
        return
    if run.state == "verifying":
        finish.queue_look(svc, run)
    elif run.state in ("sending", "confirming") and run.planned and not run.batches_queued:
        sending.queue_batches(svc, run.run_id)


# --- the steps of a look ---------------------------------------------------------------------


def _start(svc: Services, client: SendGrid, run: RunRecord, message: ListCheck) -> None:
    client.get_list(run.list_id)  # a deleted list answers 404 here, before any export
    export_id = client.start_export(run.list_id)
    svc.ledger.update_run(
        run.run_id,
        lambda r: set_fields(r, export_id=export_id) if r.looks == message.look else False,
    )
    changes = {"export_id": export_id, "checks": 0, "retries": 0, "exports": message.exports + 1}
    again = message.model_copy(update=changes)
    svc.queues.send(LIST_CHECKS, again, delay=FIRST_EXPORT_CHECK)
    event("list export started", run_id=run.run_id, look=message.look)


def _wait(svc: Services, run: RunRecord, message: ListCheck) -> None:
    if message.checks >= MAX_EXPORT_CHECKS:
        give_up(svc, run, message, "SendGrid's export of the list did not finish in 2 hours")
        return
    delay = min(MAX_EXPORT_CHECK_DELAY, FIRST_EXPORT_CHECK * 2 ** (message.checks + 1))
    again = message.model_copy(update={"checks": message.checks + 1, "retries": 0})
    svc.queues.send(LIST_CHECKS, again, delay=delay)


def _export_failed(svc: Services, run: RunRecord, message: ListCheck, why: str) -> None:
    """The look's export failed, or it or a file of it is gone: another one, a few times."""
    if message.exports >= MAX_EXPORT_FAILURES:
        give_up(svc, run, message, f"SendGrid's export of the list failed: {why}")
        return
    # A new export for the same look.
    again = message.model_copy(update={"export_id": "", "checks": 0})
    svc.queues.send(LIST_CHECKS, again, delay=sending.retry_delay(message.exports))


def give_up(svc: Services, run: RunRecord, message: ListCheck, why: str) -> None:
    """This look cannot be taken: the run ends with what its batches say, unverified."""
    note = f"not verified: {why}"

    def noted(r: RunRecord) -> bool:
        if r.final or r.looks != message.look:
            return False
        r.verify_note = note
        if r.looks and r.looks % 2 == 0:
            r.looks += 1  # what the look before this one saw is not confirmed either
        return True

    svc.ledger.update_run(run.run_id, noted)
    event("list not verified", run_id=run.run_id, look=message.look, reason=why)
    finish.finish(svc, run.run_id)


def _list_exists(client: SendGrid, run: RunRecord) -> bool:
    try:
        client.get_list(run.list_id)
    except NotFound:
        return False
    return True


def _look(
    svc: Services,
    client: SendGrid,
    run: RunRecord,
    export: ContactExport,
    custom: dict[str, CustomField],
) -> Diff:
    """Read every file of a ready export and compare it with the run's pending state; the
    keys to send again and (mirror mode) the emails to remove are kept as run files."""
    expected = SyncedState.read_index(svc.pending_states.read_pending_index(run.run_id), masks=True)
    builder = _builder(expected, custom)
    mirror = run.sync_mode == "mirror"
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as extra:
        comparer = Comparer(expected, builder, extra_to=extra if mirror else None)
        for url in export.urls:
            with client.open_export_file(url) as raw:
                reader = read_export(raw, expected.fields)
                comparer.columns_missing(reader.missing)
                for email, values in reader:
                    comparer.row(email, values)
        diff = comparer.finish()
        resend = "".join(f"{key:016x}\n" for key in diff.resend).encode()
        svc.run_files.put_run_file(run.run_id, commit.RESEND_FILE, resend)
        if mirror:
            extra.seek(0)
            svc.run_files.put_run_file(run.run_id, commit.EXTRA_FILE, extra)
    return diff


def _custom_fields(client: SendGrid, destination: Destination) -> dict[str, CustomField]:
    """The mapped custom fields' SendGrid ids now (no call when the mapping has none)."""
    return resolve_custom_fields(client, destination) if mapped_custom_fields(destination) else {}


def _builder(expected: SyncedState, custom: dict[str, CustomField]) -> ContactBuilder | None:
    """The builder the run's planner used (its mapped fields, the custom fields' ids now), or
    None when the fields cannot be compared (membership is, all the same)."""
    try:
        specs = [field_spec("email"), *(field_spec(name) for name in expected.fields)]
    except InputError:
        return None
    return ContactBuilder(specs, custom)
