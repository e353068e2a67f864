"""Compare a list, read back from SendGrid member by member, with what the segment says (pure).

The segment's side is a run's pending state: the members' email keys, the hashes of the contact
JSON we build for them, and which mapped fields each contact holds
(`exporter.core.synced_state.state`). A member read back is rebuilt with the same `ContactBuilder`
from the values SendGrid shows for exactly those fields, so it hashes to the same value when
SendGrid holds what we sent (numbers, dates and alternate emails are built in one canonical
spelling: see `exporter.core.contacts`). Fields we did not send (blank in the segment) are not
compared: an upsert leaves them as they are.

Memory: the state's arrays (24 bytes a member plus one "seen" byte), the keys of what differs,
and the emails of contacts the segment does not hold, written to a file the caller gives.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from exporter.core.contacts import ContactBuilder
from exporter.core.synced_state.keys import contact_key, email_key
from exporter.core.synced_state.state import MASK_BITS, UNSENT, SyncedState


@dataclass(slots=True)
class Diff:
    """What one look at the list found."""

    members: int
    """Members the segment says the list holds."""
    listed: int = 0
    """Contacts the list holds (rows of SendGrid's export)."""
    missing: int = 0
    changed: int = 0
    extra: int = 0
    """Contacts on the list the segment does not hold."""
    unverifiable: int = 0
    """Members on the list whose fields SendGrid's export does not show (membership only)."""
    resend: array[int] = field(default_factory=lambda: array("Q"))
    """Email keys of the members missing or changed: what healing sends again."""

    def clean(self, *, mirror: bool) -> bool:
        return not (self.missing or self.changed or (mirror and self.extra))


class Comparer:
    """Feed it the list's members (`row`), then `finish` for the difference.

    `builder` builds contacts exactly as the run's planner did (same mapping, same custom field
    ids); None compares membership only (the mapping changed since the run was planned, or it
    has more fields than a mask tells apart). `unavailable` names the mapped fields the export
    has no column for (their members' fields are not compared). `extra_to` receives the emails
    on the list that the segment does not hold, one a line (None: only count them).
    """

    def __init__(
        self,
        expected: SyncedState,
        builder: ContactBuilder | None,
        *,
        extra_to: IO[bytes] | None = None,
    ) -> None:
        if expected.masks is None:
            raise ValueError("the expected state must be read with its masks")
        self._state = expected
        self._masks = expected.masks
        self._builder = builder if len(expected.fields) <= MASK_BITS else None
        self._fields = len(expected.fields)
        self._unavailable = 0
        self._extra_to = extra_to
        self.diff = Diff(members=len(expected))

    def columns_missing(self, fields: Sequence[str]) -> None:
        """The mapped fields (by name) the export shows no column for."""
        bits = 0
        for name in fields:
            if name in self._state.fields:
                bits |= 1 << self._state.fields.index(name)
        self._unavailable = bits

    def row(self, email: str, values: Sequence[str]) -> None:
        """One member of the list: its (lower-cased) email, and the values SendGrid shows for
        the mapped fields, in the expected state's field order."""
        diff = self.diff
        diff.listed += 1
        key = email_key(email)
        state = self._state
        i = state.index_of(key)
        if i < 0:
            diff.extra += 1
            if self._extra_to is not None:
                self._extra_to.write(email.encode() + b"\n")
            return
        if state.seen[i]:
            diff.listed -= 1  # the same contact twice in one export: count it once
            return
        state.seen[i] = 1
        digest = state.hashes[i]
        if digest == UNSENT:
            diff.changed += 1  # what the list holds of it is unknown: send it again
            diff.resend.append(key)
            return
        builder = self._builder
        mask = self._masks[i]
        if builder is None or mask & self._unavailable:
            diff.unverifiable += 1
            return
        shown = [email]
        for bit in range(self._fields):
            shown.append(values[bit] if mask >> bit & 1 else "")
        built = builder.build(shown)
        if type(built) is not tuple or contact_key(built[1]) != digest:
            diff.changed += 1
            diff.resend.append(key)

    def finish(self) -> Diff:
        """The difference, once every member of the list was fed."""
        diff = self.diff
        seen, keys = self._state.seen, self._state.keys
        start = 0
        while True:
            i = seen.find(0, start)
            if i < 0:
                break
            diff.missing += 1
            diff.resend.append(keys[i])
            start = i + 1
        return diff
