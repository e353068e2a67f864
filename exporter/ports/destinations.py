"""Where destinations are kept (`exporter.adapters.destination_store` in blobs;
`tests/support/memory_destinations.py` in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from exporter.model.destinations import Destination


class DestinationStore(Protocol):
    def get(self, name: str) -> Destination | None: ...

    def put(self, destination: Destination) -> None: ...

    def delete(self, name: str) -> bool: ...

    def all(self) -> Iterator[Destination]: ...
