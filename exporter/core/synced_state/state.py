"""A synced state as it is stored and loaded: the format of its two blobs (see
`exporter.model.layout`), and `SyncedState`, the members a list may hold from us.

- `index`: a header (with the names of the mapped fields), then the members' email keys (64-bit,
  sorted), the hashes of their contact JSON (64-bit, same order) and which mapped fields each
  contact holds (a 64-bit mask, same order): 24 bytes per member, loaded into `array('Q')`s and
  searched with `bisect` (1M members: 24 MB, not a dict of strings). A planner loads only keys
  and hashes; a verification loads the masks too (`read_index(..., masks=True)`).
- `emails`: the members' emails, one per line, in the same order: streamed when a mirror run
  looks for those who left the segment, and when a state is merged (`writing.merge_members`).

A new state is written by `writing.write_state`.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

MAGIC: Final = b"SGSYNC02"
MAGIC_V1: Final = b"SGSYNC01"
"""The first format (keys and hashes, no masks or field names): still read."""
HEADER: Final = struct.Struct("<8sQI")
"""Magic, member count, bytes of the field names (JSON) that follow the header."""
_HEADER_V1: Final = struct.Struct("<8sQ")
UNSENT: Final = 0
"""The contact hash of a member whose contact may not have landed: no contact's hash (but for
a 1 in 2**64 chance), so the next run sends it as changed."""
MASK_BITS: Final = 64
"""Mapped fields (after email) a mask can tell apart; a mapping with more is verified by
membership only."""

Member = tuple[int, int, int, bytes]
"""(email key, contact hash, field mask, email as UTF-8): one member of a state, in key order."""


class StateFormatError(ValueError):
    """A state blob that is not one (or is damaged): the run falls back to a full refresh."""


def little_endian(values: array[int]) -> array[int]:
    """The values in the files' byte order (in place), on any machine."""
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
        elif data[:8] == MAGIC and len(data) >= HEADER.size:
            _, count, names = HEADER.unpack_from(data)
            start = HEADER.size + names
            try:
                fields = json.loads(data[HEADER.size : start])
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
            little_endian(loaded)
        return cls(little_endian(keys), little_endian(hashes), loaded, fields)

    def to_index(self) -> bytes:
        """The `index` blob of this state (what `read_index` reads)."""
        names = json.dumps(list(self.fields)).encode()
        masks = self.masks if self.masks is not None else array("Q", bytes(8 * len(self)))
        parts = [HEADER.pack(MAGIC, len(self), len(names)), names]
        for values in (self.keys, self.hashes, masks):
            parts.append(little_endian(array("Q", values)).tobytes())
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
