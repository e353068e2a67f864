"""Pack contacts into the fewest upsert requests that SendGrid's limits allow.

`PUT /v3/marketing/contacts` takes at most 30,000 contacts or 6 MB, whichever is lower. We
count the exact UTF-8 size of the whole request body (envelope with its list ids included) and
stay a margin below 6,000,000 bytes. Packing is greedy in file order, which gives the fewest
batches of any packing that keeps that order: each greedy batch ends no earlier than the
corresponding batch of any other order-keeping packing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

MAX_CONTACTS: Final = 30_000
MAX_BODY_BYTES: Final = 6_000_000
"""SendGrid's "6MB", read as decimal megabytes: already below 6 MiB."""
SAFETY_MARGIN: Final = 64 * 1024
"""Kept free below MAX_BODY_BYTES, in case SendGrid counts a little differently than we do."""

PLACEHOLDER_LIST_ID: Final = "00000000-0000-0000-0000-000000000000"


def envelope(list_ids: Sequence[str]) -> tuple[str, str]:
    """The body text before and after the contacts of an upsert request."""
    ids = ",".join(f'"{i}"' for i in list_ids)
    return '{"list_ids":[' + ids + '],"contacts":[', "]}"


def upsert_body(list_ids: Sequence[str], contacts_json: str | bytes) -> bytes:
    """The `PUT /v3/marketing/contacts` body for a JSON array of contacts, as sent."""
    head, tail = envelope(list_ids)
    if isinstance(contacts_json, bytes):
        return b"".join((head.encode(), memoryview(contacts_json)[1:-1], tail.encode()))
    return (head + contacts_json[1:-1] + tail).encode("utf-8")


_OPEN, _CLOSE = ord("["), ord("]")


@dataclass(frozen=True, slots=True)
class ContactStream:
    """A JSON array of contacts as UTF-8 byte chunks (a batch blob being read) and its size.

    A worker sends a batch from its blob to SendGrid chunk by chunk: it never holds the 6 MB
    batch, let alone twice (blob and body)."""

    size: int
    chunks: Iterable[bytes]


def upsert_body_stream(
    list_ids: Sequence[str], contacts: ContactStream
) -> tuple[int, Iterator[bytes]]:
    """The upsert body for a streamed JSON array: (its length, its chunks). The array's
    brackets are dropped on the way; a stream that is not one array fails before its end."""
    head, tail = (part.encode() for part in envelope(list_ids))
    size = contacts.size
    if size < 2:
        raise ValueError("a batch blob must hold a JSON array of contacts")

    def chunks() -> Iterator[bytes]:
        yield head
        at = 0
        for chunk in contacts.chunks:
            if not chunk:
                continue
            view = memoryview(chunk)
            if at == 0 and view[0] != _OPEN:
                raise ValueError("a batch blob must hold a JSON array of contacts")
            start, end = max(0, 1 - at), min(len(view), size - 1 - at)
            if at + len(view) > size or (end == len(view) - 1 and view[-1] != _CLOSE):
                raise ValueError("a batch blob must hold a JSON array of contacts")
            at += len(view)
            if start < end:
                yield bytes(view[start:end]) if start or end < len(view) else chunk
        if at != size:
            raise ValueError(f"the batch blob ended after {at:,} of its {size:,} bytes")
        yield tail

    return len(head) + size - 2 + len(tail), chunks()


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The limits one upsert request must respect; tests shrink them to exercise packing."""

    max_contacts: int = MAX_CONTACTS
    max_body_bytes: int = MAX_BODY_BYTES - SAFETY_MARGIN
    list_ids: tuple[str, ...] = (PLACEHOLDER_LIST_ID,)

    @property
    def envelope_bytes(self) -> int:
        head, tail = envelope(self.list_ids)
        return utf8_size(head) + utf8_size(tail)

    @property
    def max_contact_bytes(self) -> int:
        """The largest single contact that fits in a request on its own."""
        return self.max_body_bytes - self.envelope_bytes


DEFAULT_LIMITS: Final = BatchLimits()


@dataclass(slots=True)
class Batch:
    """Consecutive valid contacts (as JSON texts) that make one upsert request."""

    index: int
    contacts: list[str] = field(default_factory=list)
    body_bytes: int = 0
    """Exact UTF-8 size of `body(list_ids)` for the list ids the limits were made with."""

    def contacts_json(self) -> str:
        return "[" + ",".join(self.contacts) + "]"

    def body(self, list_ids: Sequence[str]) -> bytes:
        return upsert_body(list_ids, self.contacts_json())


class BatchPacker:
    """Feed contacts in order with `add`; it hands back each batch as soon as it is full."""

    def __init__(self, limits: BatchLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._envelope = limits.envelope_bytes
        self._max_contacts = limits.max_contacts
        self._max_bytes = limits.max_body_bytes
        self._index = 0
        self._open = Batch(0, [], self._envelope)

    def add(self, contact: str, size: int) -> Batch | None:
        """Add a contact of `size` UTF-8 bytes (at most `limits.max_contact_bytes`).

        Returns the batch this contact closed, if adding it would have broken a limit.
        """
        batch = self._open
        n = len(batch.contacts)
        closed = None
        if n and (n >= self._max_contacts or batch.body_bytes + 1 + size > self._max_bytes):
            closed = batch
            self._index += 1
            batch = self._open = Batch(self._index, [], self._envelope)
            n = 0
        batch.contacts.append(contact)
        batch.body_bytes += size + 1 if n else size
        return closed

    def finish(self) -> Batch | None:
        """The last, partly filled batch (None when no contact was added since the last one)."""
        batch = self._open
        if not batch.contacts:
            return None
        self._index += 1
        self._open = Batch(self._index, [], self._envelope)
        return batch
