"""Which contacts a run sends: each valid contact classified against the old synced state.

A run compares each valid contact with the state of the destination x segment x list and sends
only the new and the changed ones (`Delta`), collecting the new state as it goes; a verification
that heals a list sends exactly the contacts it found missing or different (`Resend`). Both are
the planner's observer (`exporter.core.planning.Observer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from exporter.core.synced_state.keys import KeySet, contact_key, email_key
from exporter.core.synced_state.state import SyncedState
from exporter.core.synced_state.writing import SortedSpill, write_state


class Delta:
    """Classifies a run's valid contacts against the old state and collects the new state.

    The planner calls `observe` for every valid contact. Members of the old state are told
    apart from duplicates by the state's `seen` flags; only new members take room in a
    `KeySet`. With `collect=False` (a dry run: `check`, the planning benchmark) nothing is
    written to disk and only duplicates are detected. `fields` names the mapped fields the
    masks refer to (written into the new state's header).
    """

    def __init__(
        self,
        old: SyncedState | None = None,
        *,
        full_refresh: bool = False,
        collect: bool = True,
        fields: Sequence[str] = (),
    ) -> None:
        self.old = SyncedState.empty() if old is None else old
        self.full_refresh = full_refresh
        self.fields = tuple(fields)
        self.unchanged = 0
        """Contacts not sent because the list holds them as they are (0 on a full refresh)."""
        self.new = 0
        self.changed = 0
        self._fresh = KeySet()
        self._members = SortedSpill() if collect else None

    def observe(self, email: str, contact_json: str, mask: int = 0) -> bool | None:
        """Record a valid contact: None when this run has had its email already (a duplicate),
        else whether it must be sent (new, changed, or a full refresh)."""
        key = email_key(email)
        old = self.old
        position = old.index_of(key) if len(old.keys) else -1
        if position < 0:
            if not self._fresh.add(key):
                return None
        elif old.seen[position]:
            return None
        digest = contact_key(contact_json)
        members = self._members
        if members is not None:
            members.add(key, digest, mask, email)
        if position < 0:
            self.new += 1
            return True
        old.seen[position] = 1
        if old.hashes[position] != digest:
            self.changed += 1
            return True
        if self.full_refresh:
            return True
        self.unchanged += 1
        return False

    def write(self, index: IO[bytes], emails: IO[bytes]) -> int:
        """Write the new state (sorted by email key); returns its member count."""
        if self._members is None:
            raise ValueError("this delta did not collect its members (collect=False)")
        return write_state(self._members.drain(), index, emails, self.fields)


class Resend:
    """The planner's observer when a verification heals a list: exactly the contacts whose
    email keys are in `keys` are sent (the first valid row of each, as in the run's plan)."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys
        self._sent = KeySet()
        self.unchanged = 0

    def observe(self, email: str, contact_json: str, mask: int = 0) -> bool | None:
        key = email_key(email)
        if key not in self._keys:
            return False
        return True if self._sent.add(key) else None

    @property
    def sent(self) -> int:
        return len(self._sent)
