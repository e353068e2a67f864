"""The state every part of the sandbox's store shares: the contacts, stored column-wise, the lists'
members, the custom field definitions, one lock, and SendGrid's lag on list changes.

Contacts are stored column-wise so that a million of them fit in a few hundred MB: a contact is a
slot number; the email → slot dict, a slot → email list, the other fields as one compact UTF-8 JSON
text per contact (None when there are none), two timestamp arrays, and per list a set of slots.
Measured with 200,000 contacts: about 220 bytes per contact with only an email (28 characters),
320 with three short fields as well; a dict per contact indexed by email and id takes about 900.
So a million contacts take about 300 MB. `tests/unit/test_sandbox_store.py` guards the order.
Contact ids are not stored either: a contact's id is derived from its slot (a random per-store
UUID prefix + the slot XOR a random mask), so it is a valid version-4 UUID, stable for the life of
the store (across restarts too, with a state file: `persist` keeps the prefix and mask), and
unknown again after `reset()`. A deleted contact keeps its slot as a tombstone (an
empty email): its id stops resolving, and the same email later gets a new slot and a new id.

SendGrid's lag: list membership changes (contacts joining a list when an upsert job is applied,
removals from a list) can be made visible only `lag` seconds later. They wait in one queue in
submission order, each due no earlier than the one before it, and are applied when due: by the
sandbox's job thread, and lazily before every read (list counts, members, a contact's
`list_ids`, exports). With a lag of 0 and an empty queue a change applies at once.

One lock guards everything; every public method of the store takes it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from exporter.local.sandbox.store_model import Contact, CustomField, iso_timestamp

# Text fields every contact shows, as "" when unset (what SendGrid answers).
_SHOWN_TEXT_FIELDS: Final = (
    "first_name",
    "last_name",
    "unique_name",
    "address_line_1",
    "address_line_2",
    "city",
    "state_province_region",
    "postal_code",
    "country",
    "phone_number",
    "whatsapp",
    "line",
    "facebook",
)


@dataclass(slots=True)
class ListChange:
    """A list membership change waiting for SendGrid's lag: `slots` join or leave a list."""

    due: float
    list_id: str
    join: bool
    slots: Collection[int]


@dataclass(slots=True)
class ListState:
    id: str
    name: str
    members: set[int] = field(default_factory=set)


def encode_fields(fields: Mapping[str, Any]) -> bytes | None:
    if not fields:
        return None
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


FIELDS_DECODER: Final = json.JSONDecoder()


def decode_fields(raw: bytes | None) -> dict[str, Any]:
    return {} if raw is None else dict(json.loads(raw))


class StoreState:
    """The shared state and its helpers; the store's parts (`store_lists`, `store_exports`,
    `store`) add their state in `_init_state` and their methods. `clock` gives epoch seconds for
    timestamps; `monotonic` the clock of due times (jobs, exports, lagged list changes)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._init_state()

    def _init_state(self) -> None:
        # The part of a version-4 UUID that carries the version and variant bits, plus 48 bits
        # that scramble the slot number into the last group.
        self._id_prefix = str(uuid.uuid4())[:24]
        self._id_mask = uuid.uuid4().int & 0xFFFF_FFFF_FFFF
        self._by_email: dict[str, int] = {}
        self._by_alternate: dict[str, int] = {}
        self._emails: list[str] = []
        self._fields: list[bytes | None] = []
        self._created_ms: array[int] = array("q")
        self._updated_ms: array[int] = array("q")
        self._lists: dict[str, ListState] = {}
        self._list_names: set[str] = set()
        self._custom_fields: dict[str, CustomField] = {}
        self._changes: deque[ListChange] = deque()

    def reset(self) -> None:
        """Forget everything: lists, contacts (their ids stop resolving), fields, jobs, pending
        list changes and exports (an export being written is abandoned)."""
        with self._lock:
            self._init_state()

    # --- ids ---------------------------------------------------------------------------------

    def _contact_id(self, slot: int) -> str:
        return f"{self._id_prefix}{slot ^ self._id_mask:012x}"

    def _slot_of(self, contact_id: str) -> int | None:
        contact_id = contact_id.strip().lower()
        if len(contact_id) != 36 or not contact_id.startswith(self._id_prefix):
            return None
        try:
            slot = int(contact_id[24:], 16) ^ self._id_mask
        except ValueError:
            return None
        return slot if slot < len(self._emails) and self._emails[slot] else None

    # --- SendGrid's lag ----------------------------------------------------------------------

    def _queue_change(
        self, list_id: str, slots: Collection[int], *, join: bool, lag: float
    ) -> None:
        """Apply at once when there is no lag and nothing waits; else queue, due `lag` seconds
        from now but never before the change queued last (so changes apply in order)."""
        if lag <= 0 and not self._changes:
            self._apply_change(ListChange(0.0, list_id, join, slots))
            return
        due = self._monotonic() + max(0.0, lag)
        if self._changes and self._changes[-1].due > due:
            due = self._changes[-1].due
        self._changes.append(ListChange(due, list_id, join, slots))

    def _apply_change(self, change: ListChange) -> None:
        target = self._lists.get(change.list_id)
        if target is None:  # deleted since
            return
        if change.join:
            emails = self._emails
            target.members.update(s for s in change.slots if emails[s])  # not deleted since
        else:
            target.members.difference_update(change.slots)

    def _apply_due_changes(self) -> None:
        if not self._changes:
            return
        now = self._monotonic()
        while self._changes and self._changes[0].due <= now:
            self._apply_change(self._changes.popleft())

    # --- views -------------------------------------------------------------------------------

    def _custom_names(self) -> dict[str, str]:
        return {f.id: f.name for f in self._custom_fields.values()}

    def _contact_view(self, slot: int) -> Contact:
        fields = decode_fields(self._fields[slot])
        names = self._custom_names()
        view: Contact = {"id": self._contact_id(slot), "email": self._emails[slot]}
        for name in _SHOWN_TEXT_FIELDS:
            view[name] = fields.get(name, "")
        for name in ("phone_number_id", "external_id", "anonymous_id"):
            if name in fields:
                view[name] = fields[name]
        view["alternate_emails"] = fields.get("alternate_emails", [])
        view["custom_fields"] = {
            names.get(k, k): v for k, v in fields.get("custom_fields", {}).items()
        }
        view["list_ids"] = [x.id for x in self._lists.values() if slot in x.members]
        view["segment_ids"] = []
        view["created_at"] = iso_timestamp(self._created_ms[slot] / 1000)
        view["updated_at"] = iso_timestamp(self._updated_ms[slot] / 1000)
        return view

    def _member_view(self, slot: int, names: Mapping[str, str]) -> Contact:
        view: Contact = {"email": self._emails[slot]}
        fields = decode_fields(self._fields[slot])
        custom = fields.pop("custom_fields", None)
        view.update(fields)
        if custom:
            view["custom_fields"] = {names.get(k, k): v for k, v in custom.items()}
        return view
