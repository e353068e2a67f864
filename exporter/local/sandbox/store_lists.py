"""The store's lists: create, read, members, removals (with SendGrid's lag), deletion (with or
without their contacts)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable

from exporter.local.sandbox.store_model import Conflict, Contact, ListInfo, NotFound
from exporter.local.sandbox.store_state import ListState, StoreState, decode_fields


class ListsPart(StoreState):
    """The lists' methods of `SandboxStore`."""

    def create_list(self, name: str) -> ListInfo:
        """A new empty list; a name already in use is a `Conflict` (names are unique)."""
        with self._lock:
            if name in self._list_names:
                raise Conflict(f"a list named {name!r} already exists")
            new = ListState(str(uuid.uuid4()), name)
            self._lists[new.id] = new
            self._list_names.add(name)
            return ListInfo(new.id, new.name, 0)

    def get_list(self, list_id: str) -> ListInfo | None:
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            return None if found is None else ListInfo(found.id, found.name, len(found.members))

    def lists(self) -> list[ListInfo]:
        """Every list, oldest first (the order pages are cut from)."""
        with self._lock:
            self._apply_due_changes()
            return [ListInfo(x.id, x.name, len(x.members)) for x in self._lists.values()]

    def unknown_list_ids(self, list_ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [x for x in list_ids if x not in self._lists]

    def list_members(self, list_id: str, *, custom_by_id: bool = False) -> list[Contact]:
        """The members as email + the fields they hold (no ids, no timestamps), by email:
        what a test compares with the segment it exported. Custom fields show by name, or as
        stored, by field id (`custom_by_id`)."""
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            names = {} if custom_by_id else self._custom_names()
            members = [self._member_view(slot, names) for slot in found.members]
        members.sort(key=lambda m: str(m["email"]))
        return members

    def sample_member(self, list_id: str) -> Contact | None:
        """One member in full (the oldest), for `contact_sample`; None for an empty list."""
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            return self._contact_view(min(found.members)) if found.members else None

    def remove_from_list(
        self, list_id: str, contact_ids: Collection[str], *, lag: float = 0.0
    ) -> int:
        """Take contacts off a list (never out of the account); all ids must exist. The
        removal becomes visible `lag` seconds later (SendGrid's lag).

        Returns how many were visible members. An unknown list or any unknown id is `NotFound`
        and changes nothing, as SendGrid answers 404 for either.
        """
        with self._lock:
            self._apply_due_changes()
            found = self._lists.get(list_id)
            if found is None:
                raise NotFound("list not found")
            slots = [self._slot_of(x) for x in contact_ids]
            missing = sum(1 for s in slots if s is None)
            if missing:
                raise NotFound(f"{missing} of the contact ids do not exist")
            known = {s for s in slots if s is not None}
            removed = len(found.members & known)
            self._queue_change(list_id, known, join=False, lag=lag)
            return removed

    def delete_list(self, list_id: str, *, delete_contacts: bool = False) -> int:
        """Delete a list (its name is free again). Its contacts stay in the account, unless
        `delete_contacts`: then every contact that is or will be a member (pending joins
        count, pending removals too) is deleted from the account: it leaves every list and
        its id stops resolving. Returns how many contacts were deleted."""
        with self._lock:
            self._apply_due_changes()
            found = self._lists.pop(list_id, None)
            if found is None:
                raise NotFound("list not found")
            self._list_names.discard(found.name)
            if not delete_contacts:
                return 0
            members = set(found.members)
            for change in self._changes:  # in order: what the list would end up holding
                if change.list_id == list_id:
                    if change.join:
                        members.update(change.slots)
                    else:
                        members.difference_update(change.slots)
            deleted = 0
            for slot in members:
                deleted += self._delete_contact(slot)
            return deleted

    def _delete_contact(self, slot: int) -> int:
        email = self._emails[slot]
        if not email:
            return 0
        del self._by_email[email]
        for alternate in decode_fields(self._fields[slot]).get("alternate_emails", []):
            if self._by_alternate.get(alternate) == slot:
                del self._by_alternate[alternate]
        self._emails[slot] = ""  # a tombstone: the slot (and so the id) never comes back
        self._fields[slot] = None
        for other in self._lists.values():
            other.members.discard(slot)
        return 1

    def apply_due_changes(self) -> int:
        """Make visible the list changes whose lag has passed; returns how many still wait."""
        with self._lock:
            self._apply_due_changes()
            return len(self._changes)
