"""Mirror mode: taking those who left the segment off the list, in steps that survive faults.

Removal batches hold at most `REMOVAL_BATCH` emails (a blob each, like upsert batches). One
delivery of a removal batch makes at most two SendGrid calls: one search for the contact ids of
its emails (recorded on the batch), then one removal of those ids from the list. A redelivery,
a rate-limit wait or a lost answer resumes from what is recorded: an answered search is not
asked again, and removing contacts that are already off the list changes nothing. Contacts are
taken off the list, never deleted from the account (deleting and re-adding them would count
against the account's monthly allotment).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from exporter.flow.services import Services
from exporter.model.runs import BatchRecord, RunRecord, set_fields
from exporter.ports.sendgrid import REMOVE_CHUNK, SEARCH_CHUNK, SendGrid

REMOVAL_BATCH: Final = min(SEARCH_CHUNK, REMOVE_CHUNK)
"""Emails per removal batch: one search (at most 100 emails) and one removal (at most 100 ids,
a 3.7 KB query string) per delivery."""


def removal_batches(
    svc: Services, run_id: str, first: int, emails: Iterable[str], *, round: int = 0
) -> list[BatchRecord]:
    """Write removal batches of these emails from batch index `first` on; returns their records
    (for the ledger). Streams: one batch of emails in memory at a time."""
    records: list[BatchRecord] = []
    chunk: list[str] = []

    def flush() -> None:
        index = first + len(records)
        svc.removal_blobs.write_removals(run_id, index, chunk)
        records.append(BatchRecord(run_id, index, len(chunk), 0, kind="remove", round=round))

    for email in emails:
        chunk.append(email)
        if len(chunk) == REMOVAL_BATCH:
            flush()
            chunk = []
    if chunk:
        flush()
    return records


def remove(svc: Services, client: SendGrid, run: RunRecord, batch: BatchRecord) -> int:
    """One delivery of a removal batch: search (unless an earlier delivery did), record the ids
    found, take them off the list. Returns how many contacts SendGrid knew. Raises SendGrid's
    errors for the caller to defer, retry or fail the batch; what is recorded stays."""
    if not batch.searched:
        emails = svc.removal_blobs.read_removals(run.run_id, batch.index)
        ids = client.search_emails(emails)
        found = ",".join(sorted(ids.values()))
        batch = svc.ledger.update_batch(
            run.run_id, batch.index, lambda b: set_fields(b, searched=True, contact_ids=found)
        )
    contact_ids = [x for x in batch.contact_ids.split(",") if x]
    if contact_ids:
        client.remove_from_list(run.list_id, contact_ids)
    return len(contact_ids)
