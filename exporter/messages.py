"""Queue messages between the functions: small JSON documents (claim checks, never contacts).

Each is a pydantic model so a malformed message fails loudly at the boundary; all are far below
the 64 KB queue message limit because batches travel as blobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

EXPORT_REQUESTS: Final = "export-requests"
CONTACT_BATCHES: Final = "contact-batches"
IMPORT_JOBS: Final = "import-jobs"
CDM_MANIFESTS: Final = "cdm-manifests"
LIST_CHECKS: Final = "list-checks"
POISON_SUFFIX: Final = "-poison"

Trigger = Literal["blob", "timer", "api", "cli"]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def encode(self) -> str:
        return self.model_dump_json()


class ExportRequest(_Message):
    """Plan one run: one destination x one snapshot version."""

    run_id: str
    destination: str
    segment: str
    snapshot: str = Field(description="blob name in the segments container")
    etag: str = Field(description="the snapshot version this run exports")
    trigger: Trigger
    requested_at: datetime
    snapshot_time: datetime | None = Field(
        default=None, description="when that version was written (orders snapshots)"
    )
    full_refresh: bool = Field(default=False, description="send every contact, changed or not")
    allow_mass_removal: bool = Field(
        default=False, description="mirror mode: allow removing more than the destination's share"
    )
    verify: bool = Field(
        default=False, description="read the list back and heal it, whatever the cadence says"
    )
    retries: int = Field(default=0, ge=0, description="SendGrid failures in a row so far")
    deferrals: int = Field(default=0, ge=0, description="times put back for a rate limit")


class BatchMessage(_Message):
    """Send one planned batch (its contacts are in a blob)."""

    run_id: str
    batch: int = Field(ge=0)
    deferrals: int = Field(default=0, ge=0, description="times put back for a rate limit")
    retries: int = Field(default=0, ge=0, description="SendGrid failures in a row so far")


class JobCheck(_Message):
    """Look at a SendGrid import job again (sent with a visibility delay)."""

    run_id: str
    batch: int = Field(ge=0)
    job_id: str
    checks: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0, description="SendGrid failures in a row so far")
    deferrals: int = Field(default=0, ge=0, description="times put back for a rate limit")


class ListCheck(_Message):
    """Take a look at a run's list (a SendGrid contacts export), or at the export started for
    it: sent with a visibility delay (SendGrid applies changes with a lag)."""

    run_id: str
    look: int = Field(ge=0, description="which look of the run this is (RunRecord.look)")
    export_id: str = Field(default="", description="the export started for it, once started")
    checks: int = Field(default=0, ge=0, description="times the export was found pending")
    exports: int = Field(default=0, ge=0, description="exports started for this look")
    retries: int = Field(default=0, ge=0, description="SendGrid failures in a row so far")
    deferrals: int = Field(default=0, ge=0, description="times put back for a rate limit")


class ManifestCheck(_Message):
    """Look at a CDM folder again: its model.json arrived before some of its partitions.

    Sent with a visibility delay, so waiting costs no worker and no delivery attempt; the wait is
    measured from when the model.json was written, so a repeated message cannot extend it.
    """

    manifest: str = Field(description="the model.json's blob name in the segments container")
    etag: str = Field(description="the model.json version that is waiting")
    written_at: datetime = Field(description="when that version was written")
    size: int = Field(default=0, ge=0)
    checks: int = Field(default=0, ge=0, description="looks taken so far")


M = TypeVar("M", bound=_Message)


def decode(model: type[M], body: bytes | str) -> M:
    """Parse a queue message body; pydantic's ValidationError says what is wrong with it."""
    return model.model_validate_json(body)
