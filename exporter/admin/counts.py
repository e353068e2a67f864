"""What a run's batches add up to, for its progress, its summary and its JSON: each batch and
each contact counted once, so every line that shows them adds up (`Counts`)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model.runs import BatchRecord, RunRecord


@dataclass(frozen=True, slots=True)
class Counts:
    """What a run's batches add up to, each batch and each contact counted once.

    Batches: `confirmed + failed + awaiting + unsent == batches`. Contacts of upsert batches:
    `to_send + healed == sent + in_failed + not_sent` (`sent`: SendGrid took them, 202), and
    `sent == upserted + errored + awaiting_contacts + uncounted` (its import jobs' counts).
    Only confirmed batches count as upserted or errored: a failed batch's contacts count once,
    as failed, whatever its job said."""

    batches: int = 0
    confirmed: int = 0
    failed: int = 0
    awaiting: int = 0
    """Batches SendGrid took (202) whose import is not confirmed yet."""
    unsent: int = 0
    """Batches not sent (yet, or ever when the run ended)."""
    to_send: int = 0
    """Contacts planned into upsert batches from the snapshot."""
    healed: int = 0
    """Contacts sent again to heal the list (heal batches)."""
    sent: int = 0
    in_failed: int = 0
    not_sent: int = 0
    upserted: int = 0
    """Created or updated, as SendGrid's import jobs count them."""
    created: int = 0
    updated: int = 0
    errored: int = 0
    awaiting_contacts: int = 0
    uncounted: int = 0
    """Contacts of confirmed batches that SendGrid's import jobs did not count."""
    removed: int = 0
    removal_failed: int = 0
    """Emails of removal batches that failed (still on the list, as far as the run knows)."""


def counts(run: RunRecord, batches: list[BatchRecord]) -> Counts:
    """The run's batches added up (see `Counts`); batches the ledger does not hold yet count as
    not sent."""
    n: dict[str, int] = dict.fromkeys(Counts.__dataclass_fields__, 0)
    for b in batches:
        upsert = b.kind != "remove"
        if b.state == "done":
            n["confirmed"] += 1
        elif b.state == "failed":
            n["failed"] += 1
            n["in_failed" if upsert else "removal_failed"] += b.contacts
        elif b.state == "accepted":
            n["awaiting"] += 1
        if not upsert:
            n["removed"] += b.removed if b.state == "done" else 0
            continue
        n["to_send" if b.round == 0 else "healed"] += b.contacts
        if b.state == "done":
            n["created"], n["updated"] = n["created"] + b.created, n["updated"] + b.updated
            n["errored"] += b.errored
            n["uncounted"] += max(0, b.contacts - b.created - b.updated - b.errored)
        if b.state in ("done", "accepted"):
            n["sent"] += b.contacts
        if b.state == "accepted":
            n["awaiting_contacts"] += b.contacts
    n["to_send"] = max(n["to_send"], run.sent)  # planned, not all in the ledger yet
    n["batches"] = max(run.batches, len(batches))
    n["unsent"] = n["batches"] - n["confirmed"] - n["failed"] - n["awaiting"]
    n["not_sent"] = n["to_send"] + n["healed"] - n["sent"] - n["in_failed"]
    n["upserted"] = n["created"] + n["updated"]
    return Counts(**n)


def counts_json(c: Counts) -> dict[str, int]:
    """The contacts of a run's batches, each once: to_send + healed = sent + in_failed_batches
    + not_sent; sent = upserted + errored + awaiting_confirmation + uncounted."""
    return {
        "to_send": c.to_send,
        "healed": c.healed,
        "sent": c.sent,
        "in_failed_batches": c.in_failed,
        "not_sent": c.not_sent,
        "upserted": c.upserted,
        "created": c.created,
        "updated": c.updated,
        "errored": c.errored,
        "awaiting_confirmation": c.awaiting_contacts,
        "uncounted": c.uncounted,
        "removed": c.removed,
        "in_failed_removal_batches": c.removal_failed,
    }
