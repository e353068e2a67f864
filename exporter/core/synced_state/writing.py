"""Writing a new synced state: its members collected, kept sorted, merged, and written as the
state's two blobs (`index` and `emails`; their format: `state`).

Memory stays flat as a segment grows: the members a run collects for its new state go to disk
in sorted runs of `SPILL_MEMBERS` (`SortedSpill`) and are merged into the new state when it is
written (`write_state`). When a run ends, the state the next run compares against is committed
from it, merged with what the list may hold besides (`merge_members`, `exporter.flow.commit`).
"""

from __future__ import annotations

import heapq
import json
import os
import struct
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Final

from exporter.core.synced_state.keys import KeySet
from exporter.core.synced_state.state import (
    HEADER,
    MAGIC,
    MASK_BITS,
    UNSENT,
    Member,
    SyncedState,
    little_endian,
)

_RECORD: Final = struct.Struct("<QQQB")
"""A spilled member: email key, contact hash, field mask, email length; the email follows."""
SPILL_MEMBERS: Final = 65_536
"""Members collected in memory (about 12 MB) before they are sorted and written to disk (and
members written at a time by `write_state`)."""
READ_BLOCK: Final = 1 << 16
"""Bytes read at a time from each sorted run while they are merged."""
_ALL_BITS: Final = (1 << MASK_BITS) - 1


def write_state(
    members: Iterable[Member], index: IO[bytes], emails: IO[bytes], fields: Sequence[str]
) -> int:
    """Write members (in key order, each key once) as a state's `index` and `emails`; returns
    how many. `index` must be seekable: its count is filled in at the end."""
    names = json.dumps(list(fields)).encode()
    start = index.tell()
    index.write(HEADER.pack(MAGIC, 0, len(names)) + names)
    count = 0
    # The index holds all keys, then all hashes, then all masks: keys go straight to it,
    # hashes and masks to temporary files appended at the end.
    with tempfile.TemporaryFile() as hashes_file, tempfile.TemporaryFile() as masks_file:
        keys, hashes, masks = array("Q"), array("Q"), array("Q")
        lines: list[bytes] = []

        def flush() -> None:
            index.write(little_endian(keys).tobytes())
            hashes_file.write(little_endian(hashes).tobytes())
            masks_file.write(little_endian(masks).tobytes())
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
    index.write(HEADER.pack(MAGIC, count, len(names)))
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
