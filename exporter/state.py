"""Synced state: which contacts a destination's list holds from one segment, and in what form.

A run compares each valid contact with the state of the last run whose batches all landed and sends
only the new and the changed ones. The state is two blobs per destination x segment:
- `index`: a header, then the members' email keys (64-bit, sorted) and the hashes of their
  contact JSON (64-bit, same order): 16 bytes per member, loaded into two `array('Q')` and
  searched with `bisect` (1M members: 16 MB, not a dict of strings);
- `emails`: the members' emails, one per line, in the same order: only streamed when a mirror
  run looks for those who left the segment.
A new state is written beside the run and committed only once every batch is done, so a failed
run leaves the old state, and the next run sends again what did not land. Contacts SendGrid
errored are committed marked `UNSENT` (`mark_unsent`): the next run sends them again.

Keys are BLAKE2b-64 of the normalised email and of the contact's exact JSON text. A run tells
duplicates apart by email key too (`KeySet`: 8-24 bytes a member, where a set of strings takes
about 100), so two different emails sharing a key would count as one: for a million members
the chance that any two do is about 3 in 100 million. A contact skipped as unchanged by
mistake needs both 64-bit hashes to collide.

Memory stays flat as a segment grows: the members a run collects for its new state go to disk
in sorted runs of `SPILL_MEMBERS` and are merged into the new state when it is written.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import struct
import sys
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import IO, Final

MAGIC: Final = b"SGSYNC01"
_HEADER: Final = struct.Struct("<8sQ")
_RECORD: Final = struct.Struct("<QQB")
"""A spilled member: email key, contact hash, email length; the email's bytes follow."""
SPILL_MEMBERS: Final = 65_536
"""Members collected in memory (about 10 MB) before they are sorted and written to disk."""
UNSENT: Final = 0
"""The contact hash of a member whose contact may not have landed: no contact's hash (but for
a 1 in 2**64 chance), so the next run sends it as changed."""
READ_BLOCK: Final = 1 << 16
"""Bytes read at a time from each sorted run while they are merged."""


def email_key(email: str) -> int:
    return int.from_bytes(hashlib.blake2b(email.encode(), digest_size=8).digest(), "little")


def contact_key(contact_json: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(contact_json.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
        "little",
    )


class StateFormatError(ValueError):
    """A state blob that is not one (or is damaged): the run falls back to a full refresh."""


class KeySet:
    """A set of 64-bit keys in one flat array (open addressing, linear probing, at most 2/3
    full): 8 to 24 bytes a key, where a Python set of ints takes about 60. Keys are uniform
    hashes, so the low bits make a good slot."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        size = 1 << max(4, (capacity * 3 // 2).bit_length())
        self._slots = array("Q", (0,)) * size
        self._mask = size - 1
        self._count = 0
        self._zero = False  # 0 marks an empty slot, so key 0 is kept aside

    def __len__(self) -> int:
        return self._count + self._zero

    def __contains__(self, key: int) -> bool:
        if not key:
            return self._zero
        slots, mask = self._slots, self._mask
        i = key & mask
        while True:
            slot = slots[i]
            if slot == key:
                return True
            if not slot:
                return False
            i = (i + 1) & mask

    def add(self, key: int) -> bool:
        """Add a key; False when it was there already."""
        if not key:
            had, self._zero = self._zero, True
            return not had
        slots, mask = self._slots, self._mask
        i = key & mask
        while True:
            slot = slots[i]
            if slot == key:
                return False
            if not slot:
                break
            i = (i + 1) & mask
        slots[i] = key
        self._count += 1
        if self._count * 3 > mask * 2:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        size = 2 * len(old)
        self._slots = slots = array("Q", (0,)) * size
        self._mask = mask = size - 1
        for key in old:
            if key:
                i = key & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = key


class SyncedState:
    """The members a list holds from us, as of the last run whose batches all landed."""

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
        view = memoryview(data)
        keys.frombytes(view[_HEADER.size : _HEADER.size + 8 * count])
        hashes.frombytes(view[_HEADER.size + 8 * count :])
        if sys.byteorder != "little":  # the file is little-endian
            keys.byteswap()
            hashes.byteswap()
        return cls(keys, hashes)

    def to_index(self) -> bytes:
        """The `index` blob of this state (what `read_index` reads)."""
        keys, hashes = array("Q", self.keys), array("Q", self.hashes)
        if sys.byteorder != "little":
            keys.byteswap()
            hashes.byteswap()
        return _HEADER.pack(MAGIC, len(keys)) + keys.tobytes() + hashes.tobytes()

    def mark_unsent(self, keys: Iterable[int]) -> int:
        """Forget the contact hashes of these members (they stay members), so the next run
        sends them again whatever they hold; returns how many were found."""
        found = 0
        for key in keys:
            i = self.index_of(key)
            if i >= 0:
                self.hashes[i] = UNSENT
                found += 1
        return found

    def index_of(self, key: int) -> int:
        i = bisect_left(self.keys, key)
        return i if i < len(self.keys) and self.keys[i] == key else -1

    def left(self) -> Iterator[int]:
        """Positions of the members no contact of this run matched (they left the segment)."""
        return (i for i, seen in enumerate(self.seen) if not seen)


class Delta:
    """Classifies a run's valid contacts against the old state and collects the new state.

    The planner calls `observe` for every valid contact. Members of the old state are told
    apart from duplicates by the state's `seen` flags; only new members take room in a
    `KeySet`. With `collect=False` (a dry run: `check`, the planning benchmark) nothing is
    written to disk and only duplicates are detected.
    """

    def __init__(
        self, old: SyncedState | None = None, *, full_refresh: bool = False, collect: bool = True
    ) -> None:
        self.old = SyncedState.empty() if old is None else old
        self.full_refresh = full_refresh
        self.unchanged = 0
        self.new = 0
        self.changed = 0
        self._fresh = KeySet()
        self._members = _SortedSpill() if collect else None

    def observe(self, email: str, contact_json: str) -> bool | None:
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
            members.add(key, digest, email)
        if position < 0:
            self.new += 1
            return True
        old.seen[position] = 1
        if old.hashes[position] != digest:
            self.changed += 1
            return True
        self.unchanged += 1
        return self.full_refresh

    def write(self, index: IO[bytes], emails: IO[bytes]) -> int:
        """Write the new state (sorted by email key); returns its member count."""
        if self._members is None:
            raise ValueError("this delta did not collect its members (collect=False)")
        count = len(self._members)
        index.write(_HEADER.pack(MAGIC, count))
        # The index holds all keys, then all hashes: keys go straight to it, hashes to a
        # temporary file appended at the end.
        with tempfile.TemporaryFile() as hashes_file:
            keys, hashes = array("Q"), array("Q")
            lines: list[bytes] = []
            for key, digest, email in self._members.drain():
                keys.append(key)
                hashes.append(digest)
                lines.append(email)
                if len(keys) == SPILL_MEMBERS:
                    _write_part(index, keys)
                    _write_part(hashes_file, hashes)
                    emails.write(b"\n".join(lines) + b"\n")
                    keys, hashes, lines = array("Q"), array("Q"), []
            _write_part(index, keys)
            _write_part(hashes_file, hashes)
            if lines:
                emails.write(b"\n".join(lines) + b"\n")
            hashes_file.seek(0)
            while chunk := hashes_file.read(1 << 20):
                index.write(chunk)
        return count


def _write_part(out: IO[bytes], values: array[int]) -> None:
    if sys.byteorder != "little":  # the file is little-endian
        values.byteswap()
    out.write(values.tobytes())


class _SortedSpill:
    """(key, hash, email) triples, kept on disk in sorted runs and merged on the way out.

    Each run of up to SPILL_MEMBERS triples is sorted in memory and appended to one temporary
    file; `drain` merges the runs (a heap of one cursor per run), reading each in 64 KiB
    blocks. Memory: one run being collected, plus a block per run while merging."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, int, bytes]] = []
        self._file: IO[bytes] | None = None
        self._runs: list[tuple[int, int]] = []  # (offset, length) of each sorted run
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: int, digest: int, email: str) -> None:
        self._pending.append((key, digest, email.encode()))
        self._count += 1
        if len(self._pending) == SPILL_MEMBERS:
            self._spill()

    def _spill(self) -> None:
        if not self._pending:
            return
        if self._file is None:
            # Lives across calls; closed by `drain` (and unlinked already, so never left behind).
            self._file = tempfile.TemporaryFile()  # noqa: SIM115
        self._pending.sort()
        pack = _RECORD.pack
        data = b"".join(pack(k, h, len(e)) + e for k, h, e in self._pending)
        start = self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        self._runs.append((start, len(data)))
        self._pending = []

    def drain(self) -> Iterator[tuple[int, int, bytes]]:
        """Every triple once, in key order; the spill is empty afterwards."""
        if self._file is None:  # everything fits in memory: no disk at all
            pending, self._pending = self._pending, []
            pending.sort()
            yield from pending
            return
        self._spill()
        self._file.flush()
        fd = self._file.fileno()
        try:
            yield from heapq.merge(*(_read_run(fd, start, length) for start, length in self._runs))
        finally:
            self._file.close()
            self._file, self._runs = None, []


def _read_run(fd: int, start: int, length: int) -> Iterator[tuple[int, int, bytes]]:
    """One sorted run of a spill file, record by record, read in blocks (never all at once)."""
    unpack, size, block = _RECORD.unpack_from, _RECORD.size, READ_BLOCK
    offset, end = start, start + length
    buffer, at = b"", 0
    while True:
        while len(buffer) - at < size + 255 and offset < end:  # keep a whole record buffered
            fresh = os.pread(fd, min(block, end - offset), offset)
            if not fresh:
                raise OSError("a spill file of the synced state ended early")
            offset += len(fresh)
            buffer, at = buffer[at:] + fresh, 0
        if at >= len(buffer):
            return
        key, digest, n = unpack(buffer, at)
        at += size
        yield key, digest, buffer[at : at + n]
        at += n


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
