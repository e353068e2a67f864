"""A run's steps in time order, from what the ledger records of it (the console's run page).

Only what the records say, with the times they keep: when the snapshot was written, when the
run was requested, each batch's last change (queued, sent with its job, confirmed with SendGrid's
counts, or failed with its reason), when the run finished, and each notification's queueing and
last delivery attempt. What the ledger holds without a time (that the run was planned, its looks
at the list, the healing) is placed where the flow takes it: planning after the request, the
looks after the planned batches, the healing before the batches it sent (`Step.at` is None
there). A run of many batches shows the first `MAX_BATCH_STEPS` by time and every failed one;
the rest are summed up in one step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from exporter.core.redact import mask_emails
from exporter.model.notifications import NotificationRecord
from exporter.model.runs import BatchRecord, RunRecord, differences

Tone = Literal["info", "good", "bad", "active"]

MAX_BATCH_STEPS: Final = 40
"""Batch steps shown one by one (failed ones always are); the others are summed up."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a run: when (None: the ledger keeps no time for it), what, and details."""

    at: datetime | None
    what: str
    detail: str = ""
    tone: Tone = "info"


def timeline(run: RunRecord, batches: list[BatchRecord]) -> list[Step]:
    """The run's steps, oldest first (see the module's docstring)."""
    steps: list[Step] = []
    if run.snapshot_time is not None:
        steps.append(Step(run.snapshot_time, "snapshot written", run.snapshot))
    steps.append(Step(run.created_at, "requested", _requested(run)))
    if run.planned or run.rows:
        steps.append(Step(None, "planned", _planned(run)))
    steps += _batch_steps([b for b in batches if b.round == 0])
    if run.looks:
        steps.append(Step(None, _plural(run.looks, "look") + " at the list", _looks(run)))
    if run.heals:
        healed = f"{run.resent:,} sent again"
        if run.extra_removed:
            healed += f", {run.extra_removed:,} not in the segment removed"
        steps.append(Step(None, "healing the list", healed))
    steps += _batch_steps([b for b in batches if b.round > 0])
    steps.append(_end(run))
    for n in run.notifications:
        steps += _notification_steps(n)
    return _in_time_order(steps)


def _requested(run: RunRecord) -> str:
    parts = [f"by {run.trigger}"]
    if run.full_refresh:
        parts.append("full refresh")
    if run.verify:
        parts.append("reads its list back")
    return ", ".join(parts)


def _planned(run: RunRecord) -> str:
    return (
        f"{run.rows:,} rows read: {run.valid:,} valid, {run.rejected:,} rejected, "
        f"{run.duplicates:,} duplicates; {run.unchanged:,} unchanged, {run.sent:,} to send "
        f"in {_plural(run.batches, 'batch')}"
        + (f"; {run.leavers:,} left the segment" if run.leavers else "")
    )


def _looks(run: RunRecord) -> str:
    if run.verified:
        return "the list holds exactly the segment"
    if run.missing is not None:
        return "last look: " + differences(run)
    return run.verify_note


def _end(run: RunRecord) -> Step:
    if run.finished_at is not None or run.final:
        at = run.finished_at or run.updated_at
        tone: Tone = "good" if run.state in ("succeeded", "skipped") else "bad"
        if run.state == "succeeded_with_errors":
            tone = "bad"
        detail = mask_emails(run.error or run.verify_note)
        return Step(at, f"finished: {run.state}", detail, tone)
    return Step(run.updated_at, f"now {run.state}", "the run's last recorded change", "active")


def _batch_name(b: BatchRecord) -> str:
    kind = "removal batch" if b.kind == "remove" else "batch"
    return ("heal " if b.round > 0 else "") + f"{kind} {b.index}"


def _batch_step(b: BatchRecord) -> Step:
    name = _batch_name(b)
    if b.state == "failed":
        return Step(b.updated_at, f"{name} failed", mask_emails(b.error), "bad")
    if b.state == "done" and b.kind == "remove":
        return Step(
            b.updated_at, f"{name} done", f"{b.removed:,} of {b.contacts:,} removed", "good"
        )
    if b.state == "done":
        detail = f"{b.contacts:,} contacts: created {b.created:,}, updated {b.updated:,}"
        detail += f", errored {b.errored:,}" if b.errored else ""
        return Step(b.updated_at, f"{name} confirmed", detail, "bad" if b.errored else "good")
    if b.state == "accepted":
        detail = f"SendGrid took {b.contacts:,} contacts (import job {b.job_id})"
        return Step(b.updated_at, f"{name} sent", detail + "; awaiting its import", "active")
    retrying = f"; retrying: {mask_emails(b.error)}" if b.error else ""
    return Step(b.updated_at, f"{name} queued", f"{b.contacts:,} contacts{retrying}", "active")


def _batch_steps(batches: list[BatchRecord]) -> list[Step]:
    in_order = sorted(batches, key=lambda b: (b.updated_at, b.index))
    shown = [b for i, b in enumerate(in_order) if i < MAX_BATCH_STEPS or b.state == "failed"]
    rest = [b for b in in_order if b not in shown]
    steps = [_batch_step(b) for b in shown]
    if rest:
        states: dict[str, int] = {}
        for b in rest:
            states[b.state] = states.get(b.state, 0) + 1
        how = ", ".join(f"{n:,} {_STATE_WORDS[s]}" for s, n in sorted(states.items()))
        steps.append(Step(rest[-1].updated_at, _plural(len(rest), "more batch"), how))
    return steps


_STATE_WORDS: Final = {
    "queued": "queued",
    "accepted": "sent",
    "done": "confirmed",
    "failed": "failed",
}


def _notification_steps(n: NotificationRecord) -> list[Step]:
    what = f"notification {n.event} to {n.target} ({n.kind})"
    queued, updated = _parse_time(n.queued_at), _parse_time(n.updated_at)
    steps = [Step(queued, f"{what} queued")] if queued else []
    tries = _plural(n.attempts, "attempt")
    if n.state == "delivered":
        steps.append(Step(updated, f"{what} delivered", f"{tries}, HTTP {n.status}", "good"))
    elif n.state == "failed":
        steps.append(Step(updated, f"{what} failed", f"{tries}: {mask_emails(n.error)}", "bad"))
    elif n.attempts:
        steps.append(Step(updated, f"{what} retrying", f"{tries}: {mask_emails(n.error)}"))
    return steps


def _parse_time(text: str) -> datetime | None:
    try:
        found = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return found if found is None or found.utcoffset() is not None else None


def _in_time_order(steps: Iterable[Step]) -> list[Step]:
    """Timed steps by time; a step without one stays right after the step before it."""
    keyed = []
    anchor: datetime | None = None
    for seq, step in enumerate(steps):
        anchor = step.at or anchor
        keyed.append(((anchor.timestamp() if anchor else float("-inf")), seq, step))
    return [step for _, _, step in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _plural(n: int, word: str) -> str:
    plural = word + ("es" if word.endswith("batch") else "s")
    return f"{n:,} {word if n == 1 else plural}"
