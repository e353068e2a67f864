"""The two containers `Storage`'s parts share (`segments`, where snapshots arrive, and the app's
own; layout: `exporter.model.layout`), and reading a blob line by line."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

from azure.storage.blob import BlobServiceClient, ContainerClient

from exporter.model.layout import APP_CONTAINER, SEGMENTS


class Containers:
    """The account's blob service and the app's two containers (each client made once)."""

    blobs: BlobServiceClient

    @cached_property
    def app(self) -> ContainerClient:
        return self.blobs.get_container_client(APP_CONTAINER)

    @cached_property
    def segments(self) -> ContainerClient:
        return self.blobs.get_container_client(SEGMENTS)


class _Lines:
    """Lines of a stream of byte chunks (iteration only: what `read_emails` needs)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        rest = b""
        for chunk in self._chunks:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest
