"""The synced state's blobs (see `exporter.core.synced_state`): the state a run's snapshot says,
kept beside the run (`runs/<run_id>/state/`) until it is committed, and the committed state of
each destination x segment x list (`state/...`), which the next run is planned against."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Sequence

from azure.core.exceptions import ResourceNotFoundError

from exporter.adapters.storage_containers import Containers, _Lines
from exporter.core.synced_state.delta import Delta
from exporter.core.synced_state.state import Member, state_size
from exporter.core.synced_state.writing import write_state
from exporter.model.layout import state_blob


class StateBlobs(Containers):
    """The synced state's blobs (a part of `Storage`)."""

    def read_state(self, destination: str, segment: str, list_id: str) -> bytes | None:
        """The committed state's index of this destination x segment x list, or None before
        its first run (a destination moved to another list starts that list from nothing)."""
        try:
            data: bytes = self.app.download_blob(
                state_blob(destination, segment, list_id, "index")
            ).readall()
        except ResourceNotFoundError:
            return None
        return data

    def state_emails(self, destination: str, segment: str, list_id: str) -> Iterable[bytes]:
        """The committed state's emails, streamed line by line."""
        downloader = self.app.download_blob(state_blob(destination, segment, list_id, "emails"))
        return _Lines(downloader.chunks())

    def write_state(
        self,
        destination: str,
        segment: str,
        list_id: str,
        members: Iterable[Member],
        fields: Sequence[str],
    ) -> int:
        """Commit a state (members in key order) for this destination x segment x list, and
        delete the states of the other lists the destination x segment had."""
        with (
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as index,
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as emails,
        ):
            count = write_state(members, index, emails, fields)
            for part, spool in (("emails", emails), ("index", index)):  # the index last
                spool.seek(0)
                self.app.upload_blob(
                    state_blob(destination, segment, list_id, part), spool, overwrite=True
                )
        self._drop_other_states(destination, segment, list_id)
        return count

    def commit_pending_state(
        self, run_id: str, destination: str, segment: str, list_id: str
    ) -> int:
        """Commit a run's pending state as it is (a streamed blob-to-blob copy, the index last:
        it is what the next run reads first); returns its member count."""
        for part in ("emails", "index"):
            source = self.app.download_blob(f"runs/{run_id}/state/{part}")
            self.app.upload_blob(
                state_blob(destination, segment, list_id, part), source.chunks(), overwrite=True
            )
        self._drop_other_states(destination, segment, list_id)
        header = self.app.download_blob(
            state_blob(destination, segment, list_id, "index"), offset=0, length=16
        ).readall()
        return state_size(header)

    def _drop_other_states(self, destination: str, segment: str, list_id: str) -> None:
        """Only the list the destination names now is trusted: other lists' states of the pair
        (and the one kept before states were per list) go."""
        keep = state_blob(destination, segment, list_id, "")
        for blob in self.app.list_blobs(name_starts_with=f"state/{destination}/{segment}/"):
            if not blob.name.startswith(keep):
                with contextlib.suppress(ResourceNotFoundError):
                    self.app.delete_blob(blob.name)

    def write_pending_state(self, run_id: str, delta: Delta) -> int:
        """The state this run's snapshot says (its members and their contacts), beside the run:
        what its list is compared with, and what its committed state is made from."""
        with (
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as index,
            tempfile.SpooledTemporaryFile(max_size=1 << 20) as emails,
        ):
            count = delta.write(index, emails)
            for part, spool in (("index", index), ("emails", emails)):
                spool.seek(0)
                self.app.upload_blob(f"runs/{run_id}/state/{part}", spool, overwrite=True)
        return count

    def read_pending_index(self, run_id: str) -> bytes:
        data: bytes = self.app.download_blob(f"runs/{run_id}/state/index").readall()
        return data

    def pending_emails(self, run_id: str) -> Iterable[bytes]:
        return _Lines(self.app.download_blob(f"runs/{run_id}/state/emails").chunks())
