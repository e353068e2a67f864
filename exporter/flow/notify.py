"""Notifications: when a run ends, tell each target of its destination the events it wants
(`run_ended`); deliver each through the notifications queue (`deliver`), never in a run's way.

Events (`events_of`), decided from the run's final record:
- `run_failed`: the run ended `failed` (its reason in the payload);
- `list_drift`: the run's last look at its list, taken a lag after one that saw the list differ
  (after healing it, when the run could), still found it different from the segment
  (`exporter.model.runs.confirmed_difference`): members missing, with other field values, or
  (mirror mode) not in the segment. A list that could not be read back is not drift: that run
  says "not verified", its outcome comes from its batches;
- `rejects_above`: more than the target's `reject_share` of the rows read were rejected;
- `list_ready`: the run `succeeded`, so every change it made is applied in SendGrid: its list was
  read back and found to hold exactly the segment, or (a run that does not read its list back)
  every batch landed and SendGrid's import jobs took every contact. The payload says which
  list, how many members it holds, when, and how it is known (`confirmation`).

One message per target x event, on queue `notifications`; the run records each (`notifications`:
queued, delivered or failed, attempts, the last error) and a repeat of the run's end queues none
twice. A delivery that gets no answer, a 429 or a 5xx is put back on the queue, hidden for
`notify_retry_base` x 1, 2, 4 … seconds (at most 300 s, or the target's `Retry-After`), at most
`MAX_ATTEMPTS` POSTs; any other answer but 2xx fails it at once. A failed notification is
recorded on the run and shown by `runs show`; the run's state and outcome never change.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Final

from exporter.core.errors import InputError
from exporter.core.redact import mask_emails
from exporter.flow.events import event
from exporter.flow.notify_payloads import reject_share, render
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.messages import (
    NOTIFICATIONS,
    POISON_SUFFIX,
    Notification,
    log_dropped,
    log_handler_failed,
)
from exporter.model.notifications import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    MAX_ERROR,
    SIGNATURE_HEADER,
    NotificationRecord,
    NotificationTarget,
    NotifyEvent,
    delivery_id,
    signature,
)
from exporter.model.runs import RunRecord, confirmed_difference
from exporter.ports.notifier import TargetRefused, TargetUnreachable
from exporter.ports.secrets import SecretUnavailable

log = logging.getLogger("exporter.flow.notify")

MAX_ATTEMPTS: Final = 8
"""POSTs a notification gets: with the default base of 5 s, about 10 minutes of trying."""
MAX_DELAY: Final = 300.0


# --- what a run's end tells whom ---------------------------------------------------------------


def events_of(run: RunRecord, target: NotificationTarget) -> list[NotifyEvent]:
    """The events of an ended run that `target` wants, in its order."""
    if not run.final or run.state == "skipped":
        return []
    happened = {
        "run_failed": run.state == "failed",
        "list_drift": confirmed_difference(run),
        "rejects_above": run.rows > 0 and reject_share(run) > target.reject_share,
        "list_ready": run.state == "succeeded",
    }
    return [e for e in target.events if happened[e]]


def run_ended(svc: Services, run: RunRecord) -> None:
    """Queue the notifications an ended run calls for, those not queued before (called by
    `finish.wrap_up` after every end of a run and every repeat of it). The messages first, then
    the record: a crash in between queues them again, and a receiver sees the same delivery id."""
    if not run.final:
        return
    destination = svc.destinations.get(run.destination)
    if destination is None or not destination.notifications:
        return
    current = svc.ledger.get_run(run.run_id) or run
    known = {(n.target, n.event) for n in current.notifications}
    due = [
        (target, name)
        for target in destination.notifications
        for name in events_of(current, target)
        if (target.name, name) not in known
    ]
    if not due:
        return
    for target, name in due:
        svc.queues.send(
            NOTIFICATIONS, Notification(run_id=run.run_id, target=target.name, event=name)
        )
    now = _now()

    def queued(r: RunRecord) -> bool:
        have = {(n.target, n.event) for n in r.notifications}
        new = [
            NotificationRecord(t.name, t.kind, name, queued_at=now, updated_at=now)
            for t, name in due
            if (t.name, name) not in have
        ]
        r.notifications = [*r.notifications, *new]
        return bool(new)

    svc.ledger.update_run(run.run_id, queued)
    event(
        "notifications queued",
        run_id=run.run_id,
        destination=run.destination,
        notifications=",".join(f"{t.name}:{name}" for t, name in due),
    )


# --- delivering one ----------------------------------------------------------------------------


def deliver(svc: Services, message: Notification) -> None:
    """One attempt at one notification (queue notifications). Safe to repeat: a notification
    delivered or failed is not posted again, nor one whose attempt this message is not."""
    run = svc.ledger.get_run(message.run_id)
    if run is None:
        log_dropped(NOTIFICATIONS, f"run {message.run_id} does not exist", message.encode())
        return
    record = _record(run, message)
    if record is not None and (record.settled or record.attempts > message.attempts):
        return  # delivered, failed, or a later attempt is under way: this one is a repeat
    destination = svc.destinations.get(run.destination)
    target = _target(destination, message.target)
    if destination is None or target is None:
        where = "the destination was removed" if destination is None else "the target was removed"
        _settle(svc, message, "", "failed", error=f"not sent: {where} from the destination")
        return
    try:
        url = svc.secrets.notification_secret(target.url_secret, "url")
        signing = ""
        if target.kind == "webhook":
            signing = svc.secrets.notification_secret(target.signing_secret, "signing")
    except SecretUnavailable as exc:
        _attempt_failed(svc, message, target, f"the secret could not be read: {exc}")
        return
    except InputError as exc:  # not there, not a usable name or value: fixing it takes a person
        _settle(svc, message, target.kind, "failed", error=f"not sent: {exc}")
        return
    if svc.notifier is None:
        _settle(svc, message, target.kind, "failed", error="not sent: no notifier is configured")
        return
    delivery = delivery_id(run.run_id, target.name, message.event)
    sent_at = time.time()
    body = render(
        run,
        destination,
        target,
        event=message.event,
        delivery=delivery,
        sent_at=datetime.fromtimestamp(sent_at, UTC),
    )
    headers = {EVENT_HEADER: message.event, DELIVERY_HEADER: delivery}
    if target.kind == "webhook":
        headers[SIGNATURE_HEADER] = signature(signing, int(sent_at), body)
    try:
        answer = svc.notifier.post(url, body, headers)
    except TargetUnreachable as exc:
        _attempt_failed(svc, message, target, str(exc))
        return
    except TargetRefused as exc:
        _settle(svc, message, target.kind, "failed", error=f"not sent: {exc}")
        return
    attempts = message.attempts + 1
    if answer.ok:
        _settle(svc, message, target.kind, "delivered", attempts=attempts, status=answer.status)
        event(
            "notification delivered",
            run_id=run.run_id,
            target=target.name,
            notification=message.event,
            attempts=attempts,
            status=answer.status,
        )
        return
    said = f"HTTP {answer.status}" + (f": {answer.detail}" if answer.detail else "")
    if answer.transient:
        _attempt_failed(
            svc, message, target, said, status=answer.status, retry_after=answer.retry_after
        )
        return
    _settle(
        svc,
        message,
        target.kind,
        "failed",
        attempts=attempts,
        status=answer.status,
        error=f"the target refused it ({said}); not tried again",
    )


def retry_delay(svc: Services, attempts: int, retry_after: float | None = None) -> float:
    """Seconds before attempt `attempts + 1`: `notify_retry_base` x 2^(attempts - 1), at most
    `MAX_DELAY`; never sooner than the target's `Retry-After` (itself capped)."""
    delay = min(MAX_DELAY, svc.notify_retry_base * 2.0 ** max(0, attempts - 1))
    if retry_after is not None and not math.isnan(retry_after):
        delay = max(delay, min(MAX_DELAY, retry_after))
    return delay


def poisoned(svc: Services, message: Notification) -> None:
    """Every delivery of the message failed in the app (storage, a bug; a target's failures are
    retried by `deliver` itself): the notification is recorded failed. Never raises."""
    queue = NOTIFICATIONS + POISON_SUFFIX
    try:
        if svc.ledger.get_run(message.run_id) is None:
            log_dropped(queue, f"run {message.run_id} does not exist", message.encode())
            return
        _settle(
            svc,
            message,
            "",
            "failed",
            error="not sent: delivering it failed on every attempt (an error of the app, "
            "not of the target: see the app's logs)",
        )
    except Exception as exc:
        log_handler_failed(queue, exc, message.encode())


def _attempt_failed(
    svc: Services,
    message: Notification,
    target: NotificationTarget,
    error: str,
    *,
    status: int = 0,
    retry_after: float | None = None,
) -> None:
    attempts = message.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        _settle(
            svc,
            message,
            target.kind,
            "failed",
            attempts=attempts,
            status=status,
            error=f"failed {attempts} times; the last: {error}",
        )
        event(
            "notification failed",
            run_id=message.run_id,
            target=target.name,
            notification=message.event,
            attempts=attempts,
        )
        return
    delay = retry_delay(svc, attempts, retry_after)
    svc.queues.send(NOTIFICATIONS, message.model_copy(update={"attempts": attempts}), delay=delay)
    _settle(
        svc,
        message,
        target.kind,
        "queued",
        attempts=attempts,
        status=status,
        error=f"attempt {attempts}: {error}; trying again in {delay:.0f} s",
    )


def _settle(
    svc: Services,
    message: Notification,
    kind: str,
    state: str,
    *,
    attempts: int | None = None,
    status: int = 0,
    error: str = "",
) -> None:
    """Record how the notification stands (never over one delivered or failed already)."""
    now = _now()

    def change(r: RunRecord) -> bool:
        found = _record(r, message)
        if found is None:  # queued by a run's end whose record was lost (a crash in between)
            found = NotificationRecord(
                message.target, kind, message.event, queued_at=now, updated_at=now
            )
            r.notifications = [*r.notifications, found]
        if found.settled:
            return False
        found.state = state
        found.attempts = message.attempts if attempts is None else attempts
        found.status = status
        found.error = mask_emails(error)[:MAX_ERROR]
        found.kind = found.kind or kind
        found.updated_at = now
        return True

    svc.ledger.update_run(message.run_id, change)


def _record(run: RunRecord, message: Notification) -> NotificationRecord | None:
    for record in run.notifications:
        if record.target == message.target and record.event == message.event:
            return record
    return None


def _target(destination: Destination | None, name: str) -> NotificationTarget | None:
    if destination is None:
        return None
    return next((t for t in destination.notifications if t.name == name), None)


def _now() -> str:
    return datetime.now(UTC).isoformat()
