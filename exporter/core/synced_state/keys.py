"""The 64-bit keys a synced state is made of, and a compact set of them.

Keys are BLAKE2b-64 of the normalised email and of the contact's exact JSON text. A run tells
duplicates apart by email key too (`KeySet`: 8-24 bytes a member, where a set of strings takes
about 100), so two different emails sharing a key would count as one: for a million members
the chance that any two do is about 3 in 100 million. A contact skipped as unchanged by
mistake needs both 64-bit hashes to collide.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable


def email_key(email: str) -> int:
    return int.from_bytes(hashlib.blake2b(email.encode(), digest_size=8).digest(), "little")


def contact_key(contact_json: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(contact_json.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
        "little",
    )


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
