"""Synced state: which contacts a destination's list may hold from one segment, and in what form.

A run compares each valid contact with the state of the destination x segment x list and sends
only the new and the changed ones. The state is two blobs (see `exporter.model.layout`):
- `index`: a header (with the names of the mapped fields), then the members' email keys (64-bit,
  sorted), the hashes of their contact JSON (64-bit, same order) and which mapped fields each
  contact holds (a 64-bit mask, same order): 24 bytes per member, loaded into `array('Q')`s and
  searched with `bisect` (1M members: 24 MB, not a dict of strings). A planner loads only keys
  and hashes; a verification loads the masks too (`read_index(..., masks=True)`).
- `emails`: the members' emails, one per line, in the same order: streamed when a mirror run
  looks for those who left the segment, and when a state is merged (`merge_members`).
A run writes its state beside itself; when the run ends, whatever its outcome, the state the next
run compares against is committed from it (`exporter.flow.commit`): every member that may now be on
the list is in it, those whose contact may not have landed marked `UNSENT` (sent again, or
removed in mirror mode if they left).

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
import json
import os
import struct
import sys
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Final

MAGIC: Final = b"SGSYNC02"
MAGIC_V1: Final = b"SGSYNC01"
"""The first format (keys and hashes, no masks or field names): still read."""
_HEADER: Final = struct.Struct("<8sQI")
"""Magic, member count, bytes of the field names (JSON) that follow the header."""
_HEADER_V1: Final = struct.Struct("<8sQ")
_RECORD: Final = struct.Struct("<QQQB")
"""A spilled member: email key, contact hash, field mask, email length; the email follows."""
SPILL_MEMBERS: Final = 65_536
"""Members collected in memory (about 12 MB) before they are sorted and written to disk."""
UNSENT: Final = 0
"""The contact hash of a member whose contact may not have landed: no contact's hash (but for
a 1 in 2**64 chance), so the next run sends it as changed."""
MASK_BITS: Final = 64
"""Mapped fields (after email) a mask can tell apart; a mapping with more is verified by
membership only."""
READ_BLOCK: Final = 1 << 16
"""Bytes read at a time from each sorted run while they are merged."""
_ALL_BITS: Final = (1 << MASK_BITS) - 1

Member = tuple[int, int, int, bytes]
"""(email key, contact hash, field mask, email as UTF-8): one member of a state, in key order."""


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

    def update(self, keys: Iterable[int]) -> None:
        for key in keys:
            self.add(key)

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


def _little(values: array[int]) -> array[int]:
    if sys.byteorder != "little":  # the files are little-endian
        values.byteswap()
    return values


def state_size(header: bytes) -> int:
    """The member count of a state `index`, from its first 16 bytes."""
    if len(header) < 16 or header[:8] not in (MAGIC, MAGIC_V1):
        raise StateFormatError("state index is not a state index or is truncated")
    return int.from_bytes(header[8:16], "little")


class SyncedState:
    """The members a list may hold from us, in email-key order.

    `masks` (which mapped fields each contact holds; see `contacts.Built`) and `fields` (the
    names of those mapped fields, in mask-bit order) are loaded only when asked for."""

    def __init__(
        self,
        keys: array[int],
        hashes: array[int],
        masks: array[int] | None = None,
        fields: Sequence[str] = (),
    ) -> None:
        if len(keys) != len(hashes) or (masks is not None and len(masks) != len(keys)):
            raise StateFormatError("state index: keys, hashes and masks differ in length")
        self.keys = keys
        self.hashes = hashes
        self.masks = masks
        self.fields = tuple(fields)
        self.seen = bytearray(len(keys))

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def empty(cls) -> SyncedState:
        return cls(array("Q"), array("Q"), array("Q"))

    @classmethod
    def read_index(cls, data: bytes, *, masks: bool = False) -> SyncedState:
        """Parse an `index` blob; `masks=True` loads the field masks (zeros for a first-format
        state, which has none)."""
        if data[:8] == MAGIC_V1 and len(data) >= _HEADER_V1.size:
            _, count = _HEADER_V1.unpack_from(data)
            start, fields, has_masks = _HEADER_V1.size, [], False
        elif data[:8] == MAGIC and len(data) >= _HEADER.size:
            _, count, names = _HEADER.unpack_from(data)
            start = _HEADER.size + names
            try:
                fields = json.loads(data[_HEADER.size : start])
            except ValueError:
                raise StateFormatError("state index: damaged field names") from None
            if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
                raise StateFormatError("state index: damaged field names")
            has_masks = True
        else:
            raise StateFormatError("state index is not a state index or is truncated")
        width = 24 if has_masks else 16
        if len(data) != start + width * count:
            raise StateFormatError("state index is damaged (its size does not match)")
        view = memoryview(data)
        keys, hashes = array("Q"), array("Q")
        keys.frombytes(view[start : start + 8 * count])
        hashes.frombytes(view[start + 8 * count : start + 16 * count])
        loaded: array[int] | None = None
        if masks:
            loaded = array("Q")
            if has_masks:
                loaded.frombytes(view[start + 16 * count : start + 24 * count])
            else:
                loaded = array("Q", bytes(8 * count))
            _little(loaded)
        return cls(_little(keys), _little(hashes), loaded, fields)

    def to_index(self) -> bytes:
        """The `index` blob of this state (what `read_index` reads)."""
        names = json.dumps(list(self.fields)).encode()
        masks = self.masks if self.masks is not None else array("Q", bytes(8 * len(self)))
        parts = [_HEADER.pack(MAGIC, len(self), len(names)), names]
        for values in (self.keys, self.hashes, masks):
            parts.append(_little(array("Q", values)).tobytes())
        return b"".join(parts)

    def index_of(self, key: int) -> int:
        i = bisect_left(self.keys, key)
        return i if i < len(self.keys) and self.keys[i] == key else -1

    def left(self) -> Iterator[int]:
        """Positions of the members no contact of this run matched (they left the segment)."""
        return (i for i, seen in enumerate(self.seen) if not seen)

    def members(self, emails: Iterable[bytes]) -> Iterator[Member]:
        """Every member with its email, from the state's `emails` lines (same order)."""
        masks = self.masks if self.masks is not None else array("Q", bytes(8 * len(self)))
        count = 0
        for line, key, digest, mask in zip(emails, self.keys, self.hashes, masks, strict=False):
            count += 1
            yield key, digest, mask, line.rstrip(b"\n")
        if count != len(self):
            raise StateFormatError("the state's emails and index differ in length")


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


def write_state(
    members: Iterable[Member], index: IO[bytes], emails: IO[bytes], fields: Sequence[str]
) -> int:
    """Write members (in key order, each key once) as a state's `index` and `emails`; returns
    how many. `index` must be seekable: its count is filled in at the end."""
    names = json.dumps(list(fields)).encode()
    start = index.tell()
    index.write(_HEADER.pack(MAGIC, 0, len(names)) + names)
    count = 0
    # The index holds all keys, then all hashes, then all masks: keys go straight to it,
    # hashes and masks to temporary files appended at the end.
    with tempfile.TemporaryFile() as hashes_file, tempfile.TemporaryFile() as masks_file:
        keys, hashes, masks = array("Q"), array("Q"), array("Q")
        lines: list[bytes] = []

        def flush() -> None:
            index.write(_little(keys).tobytes())
            hashes_file.write(_little(hashes).tobytes())
            masks_file.write(_little(masks).tobytes())
            if lines:
                emails.write(b"\n".join(lines) + b"\n")

        for key, digest, mask, email in members:
            keys.append(key)
            hashes.append(digest)
            masks.append(mask & _ALL_BITS)
            lines.append(email)
            count += 1
            if len(keys) == SPILL_MEMBERS:
                flush()
                keys, hashes, masks, lines = array("Q"), array("Q"), array("Q"), []
        flush()
        for part in (hashes_file, masks_file):
            part.seek(0)
            while chunk := part.read(1 << 20):
                index.write(chunk)
    end = index.tell()
    index.seek(start)
    index.write(_HEADER.pack(MAGIC, count, len(names)))
    index.seek(end)
    return count


def merge_members(
    state: SyncedState,
    emails: Iterable[bytes],
    *,
    unsent: KeySet | None = None,
    additions: SortedSpill | None = None,
) -> Iterator[Member]:
    """A state's members (with their `emails` lines), those in `unsent` marked UNSENT, merged
    with `additions` (members the list may hold although the state does not have them: they
    keep the hash they were added with). A key in both is taken once, from the state."""
    marks = unsent if unsent is not None and len(unsent) else None

    def ours() -> Iterator[Member]:
        for key, digest, mask, email in state.members(emails):
            unsent = marks is not None and key in marks
            yield key, UNSENT if unsent else digest, mask, email

    extra = additions.drain() if additions is not None else iter(())
    last: int | None = None
    for key, digest, mask, email in heapq.merge(ours(), extra, key=lambda m: m[0]):
        if key == last:
            continue  # heapq.merge is stable: the state's own entry came first
        last = key
        yield key, digest, mask, email


class SortedSpill:
    """Members (key, hash, mask, email), kept on disk in sorted runs, merged on the way out.

    Each run of up to SPILL_MEMBERS members is sorted in memory and appended to one temporary
    file; `drain` merges the runs (a heap of one cursor per run), reading each in 64 KiB
    blocks. Memory: one run being collected, plus a block per run while merging."""

    def __init__(self) -> None:
        self._pending: list[Member] = []
        self._file: IO[bytes] | None = None
        self._runs: list[tuple[int, int]] = []  # (offset, length) of each sorted run
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: int, digest: int, mask: int, email: str) -> None:
        self._pending.append((key, digest, mask & _ALL_BITS, email.encode()))
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
        data = b"".join(pack(k, h, m, len(e)) + e for k, h, m, e in self._pending)
        start = self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        self._runs.append((start, len(data)))
        self._pending = []

    def drain(self) -> Iterator[Member]:
        """Every member once, in key order; the spill is empty afterwards."""
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


def _read_run(fd: int, start: int, length: int) -> Iterator[Member]:
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
        key, digest, mask, n = unpack(buffer, at)
        at += size
        yield key, digest, mask, buffer[at : at + n]
        at += n


def read_emails(stream: Iterable[bytes], positions: Iterable[int]) -> Iterator[str]:
    """The emails at the given ascending positions of a state's `emails` blob, streamed."""
    wanted = iter(positions)
    target = next(wanted, None)
    for i, line in enumerate(stream):
        if target is None:
            return
        if i == target:
            yield line.decode().rstrip("\n")
            target = next(wanted, None)
