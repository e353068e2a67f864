"""A run's blobs in the app's container (`runs/<run_id>/`): its batches (streamed to SendGrid in
`BATCH_RANGE` reads), removal batches, reject report, and the files its looks at the list
write; deleted once the run has ended, but for the reject report, kept until its retention."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError

from exporter.adapters.storage_containers import Containers, _Lines
from exporter.core.batching import ContactStream
from exporter.model.layout import batch_blob, removal_blob, report_blob

BATCH_RANGE: Final = 1 << 20
"""Batch blobs are read in 1 MiB ranges while they are sent: a dozen workers sending at once
hold about a dozen MiB of batches, not a dozen 6 MB batches twice over."""


class RunBlobs(Containers):
    """A run's own blobs (a part of `Storage`)."""

    def write_batch(self, run_id: str, index: int, contacts_json: str) -> None:
        self.app.upload_blob(
            batch_blob(run_id, index), contacts_json.encode("utf-8"), overwrite=True
        )

    def read_batch(self, run_id: str, index: int) -> bytes:
        """A batch's contacts as the UTF-8 JSON array they were written as."""
        data: bytes = self.app.download_blob(batch_blob(run_id, index)).readall()
        return data

    def open_batch(self, run_id: str, index: int) -> ContactStream:
        """A batch's contacts, read in BATCH_RANGE pieces as they are sent (see `upsert`)."""
        blob = self.app.get_blob_client(batch_blob(run_id, index))
        first = blob.download_blob(offset=0, length=BATCH_RANGE, max_concurrency=1)
        # The answer's Content-Range ("bytes 0-1048575/5188891") holds the whole blob's size.
        whole = first.properties.content_range
        size = int(whole.rsplit("/", 1)[1]) if whole else int(first.properties.size)

        def chunks() -> Iterator[bytes]:
            data: bytes = first.readall()
            yield data
            offset = len(data)
            while offset < size:
                part = blob.download_blob(
                    offset=offset,
                    length=min(BATCH_RANGE, size - offset),
                    etag=first.properties.etag,
                    match_condition=MatchConditions.IfNotModified,
                    max_concurrency=1,
                )
                data = part.readall()
                if not data:
                    raise OSError(f"batch blob {blob.blob_name} ended early")
                yield data
                offset += len(data)

        return ContactStream(size, chunks())

    def write_report(self, run_id: str, report: IO[bytes]) -> str:
        name = report_blob(run_id)
        report.seek(0)
        self.app.upload_blob(name, report, overwrite=True)
        return name

    def delete_run_blobs(self, run_id: str) -> None:
        """The run's contact data (batches, removals, its pending state, what its looks found):
        gone once the run has ended (or failed to plan). The reject report stays (it holds row
        numbers and reasons, no profile values) until its retention runs out."""
        keep = report_blob(run_id)
        for blob in self.app.list_blobs(name_starts_with=f"runs/{run_id}/"):
            if blob.name != keep:
                with contextlib.suppress(ResourceNotFoundError):
                    self.app.delete_blob(blob.name)

    def reports_older_than(self, cutoff: datetime) -> Iterator[str]:
        """Run ids whose reject report was written before `cutoff`."""
        for blob in self.app.list_blobs(name_starts_with="runs/"):
            if blob.name.endswith("/rejects.csv") and blob.last_modified < cutoff:
                yield blob.name.split("/")[1]

    def delete_report(self, run_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.app.delete_blob(report_blob(run_id))

    def put_run_file(self, run_id: str, name: str, data: bytes | IO[bytes]) -> None:
        """A file of the run's own (what a look at its list found), replaced if there."""
        self.app.upload_blob(f"runs/{run_id}/{name}", data, overwrite=True)

    def open_run_file(self, run_id: str, name: str) -> Iterable[bytes] | None:
        """A file of the run's, line by line (None when it was never written)."""
        client = self.app.get_blob_client(f"runs/{run_id}/{name}")
        try:
            downloader = client.download_blob()
        except ResourceNotFoundError:
            return None
        return _Lines(downloader.chunks())

    def write_removals(self, run_id: str, index: int, emails: list[str]) -> None:
        self.app.upload_blob(
            removal_blob(run_id, index), ("\n".join(emails) + "\n").encode(), overwrite=True
        )

    def read_removals(self, run_id: str, index: int) -> list[str]:
        data: bytes = self.app.download_blob(removal_blob(run_id, index)).readall()
        return [line for line in data.decode().split("\n") if line]
