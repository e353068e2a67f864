"""Synced state: which contacts a destination's list holds from one segment, and in what form.

A run compares each valid contact with the state of the last fully successful run and sends
only the new and the changed ones. The state is two blobs per destination x segment:
- `index`: a header, then the members' email keys (64-bit, sorted) and the hashes of their
  contact JSON (64-bit, same order): 16 bytes per member, loaded into two `array('Q')` and
  searched with `bisect` (1M members: 16 MB, not a dict of strings);
- `emails`: the members' emails, one per line, in the same order: only streamed when a mirror
  run looks for those who left the segment.
A new state is written beside the run and committed only after the run fully succeeded, so a
failed or partial run leaves the old state, and the next run sends again what did not land.

Keys are BLAKE2b-64 of the normalised email and of the contact's exact JSON text. Two emails
sharing a key would at worst be sent again (their contact hashes differ); a contact skipped by
mistake needs both 64-bit hashes to collide.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import IO, Final

MAGIC: Final = b"SGSYNC01"
_HEADER: Final = struct.Struct("<8sQ")


def email_key(email: str) -> int:
    return int.from_bytes(hashlib.blake2b(email.encode(), digest_size=8).digest(), "little")


def contact_key(contact_json: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(contact_json.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
        "little",
    )


class StateFormatError(ValueError):
    """A state blob that is not one (or is damaged): the run falls back to a full refresh."""


class SyncedState:
    """The members a list holds from us, as of the last fully successful run."""

    def __init__(self, keys: array[int], hashes: array[int]) -> None:
        if len(keys) != len(hashes):
            raise StateFormatError("state index: keys and hashes differ in length")
        self.keys = keys
        self.hashes = hashes
        self.seen = bytearray(len(keys))

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def empty(cls) -> SyncedState:
        return cls(array("Q"), array("Q"))

    @classmethod
    def read_index(cls, data: bytes) -> SyncedState:
        if len(data) < _HEADER.size:
            raise StateFormatError("state index is truncated")
        magic, count = _HEADER.unpack_from(data)
        if magic != MAGIC or len(data) != _HEADER.size + 16 * count:
            raise StateFormatError("state index is not a state index or is damaged")
        keys, hashes = array("Q"), array("Q")
        keys.frombytes(data[_HEADER.size : _HEADER.size + 8 * count])
        hashes.frombytes(data[_HEADER.size + 8 * count :])
        if sys.byteorder != "little":  # the file is little-endian
            keys.byteswap()
            hashes.byteswap()
        return cls(keys, hashes)

    def index_of(self, key: int) -> int:
        i = bisect_left(self.keys, key)
        return i if i < len(self.keys) and self.keys[i] == key else -1

    def left(self) -> Iterator[int]:
        """Positions of the members no contact of this run matched (they left the segment)."""
        return (i for i, seen in enumerate(self.seen) if not seen)


class Delta:
    """Classifies a run's valid contacts against the old state and collects the new state."""

    def __init__(self, old: SyncedState, *, full_refresh: bool = False) -> None:
        self.old = old
        self.full_refresh = full_refresh
        self.members: dict[str, int] = {}  # email -> contact hash: the new state (and dedupe)
        self.unchanged = 0
        self.new = 0
        self.changed = 0

    def observe(self, email: str, contact_json: str) -> bool:
        """Record a valid contact; True when it must be sent."""
        digest = contact_key(contact_json)
        self.members[email] = digest
        old = self.old
        if not len(old.keys):
            self.new += 1
            return True
        i = old.index_of(email_key(email))
        if i < 0:
            self.new += 1
            return True
        old.seen[i] = 1
        if old.hashes[i] != digest:
            self.changed += 1
            return True
        self.unchanged += 1
        return self.full_refresh

    def write(self, index: IO[bytes], emails: IO[bytes]) -> int:
        """Write the new state (sorted by email key); returns its member count."""
        order = sorted(self.members, key=email_key)
        keys = array("Q", map(email_key, order))
        hashes = array("Q", (self.members[e] for e in order))
        if sys.byteorder != "little":
            keys.byteswap()
            hashes.byteswap()
        index.write(_HEADER.pack(MAGIC, len(order)))
        index.write(keys.tobytes())
        index.write(hashes.tobytes())
        for chunk in _lines(order):
            emails.write(chunk)
        return len(order)


def _lines(emails: Iterable[str], size: int = 4096) -> Iterator[bytes]:
    batch: list[str] = []
    for email in emails:
        batch.append(email)
        if len(batch) == size:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()


def read_emails(stream: IO[bytes], positions: Iterable[int]) -> Iterator[str]:
    """The emails at the given ascending positions of a state's `emails` blob, streamed."""
    wanted = iter(positions)
    target = next(wanted, None)
    for i, line in enumerate(stream):
        if target is None:
            return
        if i == target:
            yield line.decode().rstrip("\n")
            target = next(wanted, None)
