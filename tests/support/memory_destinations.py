"""Destinations in a dict, with the blob store's semantics (for fast tests)."""

from __future__ import annotations

from collections.abc import Iterator

from exporter.model.destinations import Destination


class MemoryDestinationStore:
    """For unit tests: the same interface, in a dict."""

    def __init__(self, *destinations: Destination) -> None:
        self._items = {d.name: d for d in destinations}

    def get(self, name: str) -> Destination | None:
        return self._items.get(name)

    def put(self, destination: Destination) -> None:
        self._items[destination.name] = destination

    def delete(self, name: str) -> bool:
        return self._items.pop(name, None) is not None

    def all(self) -> Iterator[Destination]:
        yield from sorted(self._items.values(), key=lambda d: d.name)
