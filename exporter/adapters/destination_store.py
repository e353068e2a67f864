"""Destinations as JSON blobs `destinations/<name>.json` in the app's container, each read
with a bound (`MAX_DOCUMENT_BYTES`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from exporter.core.errors import InputError
from exporter.model.destinations import MAX_DOCUMENT_BYTES, Destination, valid_name

log = logging.getLogger(__name__)


class BlobDestinationStore:
    """Destinations as JSON blobs `destinations/<name>.json` in the app's container.

    Only valid destination names become blob names (no other blob of the container can be
    read or deleted through a name), and at most `MAX_DOCUMENT_BYTES` of a document are read.
    `all` leaves out, with an error in the log, a document that cannot be read: one broken
    document must not stop the exports to every other destination.
    """

    PREFIX = "destinations/"

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def get(self, name: str) -> Destination | None:
        if not valid_name(name):
            return None  # no document can be stored under it
        try:
            download = self._container.download_blob(
                f"{self.PREFIX}{name}.json", offset=0, length=MAX_DOCUMENT_BYTES + 1
            )
            data: bytes = download.readall()
        except ResourceNotFoundError:
            return None
        if len(data) > MAX_DOCUMENT_BYTES:
            raise InputError(
                f"destination {name!r} is stored as a document over {MAX_DOCUMENT_BYTES:,} "
                "bytes: not read; replace it (PUT) or remove it"
            )
        return Destination.from_json(data, stored=True)

    def put(self, destination: Destination) -> None:
        if not valid_name(destination.name):
            raise InputError(f"invalid destination name {destination.name!r}")
        self._container.upload_blob(
            f"{self.PREFIX}{destination.name}.json", destination.stored_json(), overwrite=True
        )

    def delete(self, name: str) -> bool:
        if not valid_name(name):
            return False
        try:
            self._container.delete_blob(f"{self.PREFIX}{name}.json")
        except ResourceNotFoundError:
            return False
        return True

    def all(self) -> Iterator[Destination]:
        names = sorted(b.name for b in self._container.list_blobs(name_starts_with=self.PREFIX))
        for blob_name in names:
            name = blob_name[len(self.PREFIX) : -len(".json")]
            if not blob_name.endswith(".json") or not valid_name(name):
                continue
            try:
                destination = self.get(name)
            except InputError as exc:
                log.error("destination %s left out: %s", name, exc)  # noqa: TRY400  (no traceback: the message says it)
                continue
            if destination is not None:
                yield destination
