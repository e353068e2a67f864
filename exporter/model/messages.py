"""Queue messages between the functions: small JSON documents (claim checks, never contacts).

Each is a pydantic model, so a malformed message fails at the boundary (`decode` raises
`BadMessage`, whose text names the fields at fault, never their values); all are far below the
64 KB queue message limit because batches travel as blobs.

A queue is an input like any other: whoever can write to it can write anything. So every field
is bounded: run ids match the pattern `make_run_id` writes (`20261124T101500-1f2e3d4c5b6a`),
destination names the destination rule, batch indexes and counters are whole numbers from 0 to
a bound, times carry a time zone, and names that become blob paths (segments, snapshots,
model.json blobs) cannot leave their container (`exporter.core.paths`).
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Annotated, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from exporter.core import cdm, paths
from exporter.core.errors import InputError
from exporter.core.redact import mask_emails
from exporter.model.destinations import NAME_PATTERN
from exporter.model.notifications import TARGET_PATTERN, NotifyEvent

EXPORT_REQUESTS: Final = "export-requests"
CONTACT_BATCHES: Final = "contact-batches"
IMPORT_JOBS: Final = "import-jobs"
CDM_MANIFESTS: Final = "cdm-manifests"
LIST_CHECKS: Final = "list-checks"
NOTIFICATIONS: Final = "notifications"
POISON_SUFFIX: Final = "-poison"

RUN_ID_PATTERN: Final = r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{12}$"
"""A run id as `exporter.flow.run_requests.make_run_id` writes it: UTC time, then 12 hex digits."""
MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Azure's limit on a queue message; a larger body is refused before it is parsed."""
MAX_BATCH_INDEX: Final = 999_999
"""More batches than a run can have (1M removal batches of 100 contacts is 100M members)."""
MAX_COUNT: Final = 1_000_000
"""Retries, deferrals, checks and looks: far above every limit the steps keep themselves."""
MAX_TOKEN: Final = 512
"""ETags, SendGrid job and export ids: a few dozen characters each."""
MAX_SNAPSHOT: Final = paths.MAX_BLOB_NAME + 1 + paths.MAX_SEGMENT_NAME
"""A blob name, or a CDM entity's snapshot name (`<model.json blob>#<entity>`)."""

EXCERPT_CHARS: Final = 200
"""How much of a dropped message its log line shows (emails masked)."""

Trigger = Literal["blob", "timer", "api", "cli"]

log = logging.getLogger("exporter.model.messages")
_CUT_ADDRESS: Final = re.compile(r"[^\s@\"'<>(),;:\[\]]+@(?=[\s\"'<>(),;:\[\]]|$)")
"""An address's local part whose domain is missing (cut off by the excerpt, say)."""


class BadMessage(InputError):
    """A queue message that cannot be decoded. The text names the fields at fault and why,
    never their values (a hostile message may carry anything)."""


def _segment_problem(value: str) -> str | None:
    """Why a segment's name taken from a message could leave its place in a blob name
    (`state/<destination>/<segment>/...`), or None. Not the full segment rule: a destination
    stored before the rule may still name a segment otherwise, and its runs must still end."""
    if "/" in value or "\\" in value:
        return "it holds a path separator"
    return paths.escape_problem(value)


def _segment(value: str) -> str:
    problem = _segment_problem(value)
    if problem:
        raise ValueError(f"not a segment name: {problem}")
    return value


def _snapshot(value: str) -> str:
    problem = paths.escape_problem(value)
    if problem:
        raise ValueError(f"not a blob name in the segments container: {problem}")
    entity = cdm.split_entity_snapshot(value)
    if entity is not None and _segment_problem(entity[1]):
        raise ValueError(f"a CDM entity's snapshot: {_segment_problem(entity[1])}")
    return value


def _manifest(value: str) -> str:
    problem = paths.escape_problem(value)
    if problem:
        raise ValueError(f"not a blob name in the segments container: {problem}")
    if not cdm.is_manifest(value):
        raise ValueError("not a CDM folder's model.json")
    return value


RunId = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]
DestinationName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
SegmentName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=paths.MAX_BLOB_NAME),
    AfterValidator(_segment),
]
SnapshotName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_SNAPSHOT), AfterValidator(_snapshot)
]
ManifestName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=paths.MAX_BLOB_NAME),
    AfterValidator(_manifest),
]
Token = Annotated[str, StringConstraints(max_length=MAX_TOKEN)]
BatchIndex = Annotated[int, Field(ge=0, le=MAX_BATCH_INDEX)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def encode(self) -> str:
        return self.model_dump_json()


class ExportRequest(_Message):
    """Plan one run: one destination x one snapshot version."""

    run_id: RunId
    destination: DestinationName
    segment: SegmentName
    snapshot: SnapshotName = Field(description="blob name in the segments container")
    etag: Token = Field(description="the snapshot version this run exports")
    trigger: Trigger
    requested_at: AwareDatetime
    snapshot_time: AwareDatetime | None = Field(
        default=None, description="when that version was written (orders snapshots)"
    )
    full_refresh: bool = Field(default=False, description="send every contact, changed or not")
    allow_mass_removal: bool = Field(
        default=False, description="mirror mode: allow removing more than the destination's share"
    )
    verify: bool = Field(
        default=False, description="read the list back and heal it, whatever the cadence says"
    )
    retries: Count = Field(default=0, description="SendGrid failures in a row so far")
    deferrals: Count = Field(default=0, description="times put back for a rate limit")


class BatchMessage(_Message):
    """Send one planned batch (its contacts are in a blob)."""

    run_id: RunId
    batch: BatchIndex
    deferrals: Count = Field(default=0, description="times put back for a rate limit")
    retries: Count = Field(default=0, description="SendGrid failures in a row so far")


class JobCheck(_Message):
    """Look at a SendGrid import job again (sent with a visibility delay)."""

    run_id: RunId
    batch: BatchIndex
    job_id: Token
    checks: Count = Field(default=0)
    retries: Count = Field(default=0, description="SendGrid failures in a row so far")
    deferrals: Count = Field(default=0, description="times put back for a rate limit")


class ListCheck(_Message):
    """Take a look at a run's list (a SendGrid contacts export), or at the export started for
    it: sent with a visibility delay (SendGrid applies changes with a lag)."""

    run_id: RunId
    look: Count = Field(description="which look of the run this is (RunRecord.look)")
    export_id: Token = Field(default="", description="the export started for it, once started")
    checks: Count = Field(default=0, description="times the export was found pending")
    exports: Count = Field(default=0, description="exports started for this look")
    retries: Count = Field(default=0, description="SendGrid failures in a row so far")
    deferrals: Count = Field(default=0, description="times put back for a rate limit")


class ManifestCheck(_Message):
    """Look at a CDM folder again: its model.json arrived before some of its partitions.

    Sent with a visibility delay, so waiting costs no worker and no delivery attempt; the wait is
    measured from when the model.json was written, so a repeated message cannot extend it.
    """

    manifest: ManifestName = Field(
        description="the model.json's blob name in the segments container"
    )
    etag: Token = Field(description="the model.json version that is waiting")
    written_at: AwareDatetime = Field(description="when that version was written")
    size: int = Field(default=0, ge=0, le=cdm.MAX_MANIFEST_BYTES)
    checks: Count = Field(default=0, description="looks taken so far")


class Notification(_Message):
    """Tell one target of a run's destination about one event of the run (its end). The
    payload is built from the run when it is delivered; the message names, never carries, it."""

    run_id: RunId
    target: Annotated[str, StringConstraints(pattern=TARGET_PATTERN)]
    event: NotifyEvent
    attempts: Count = Field(default=0, description="POSTs made so far")


M = TypeVar("M", bound=_Message)


def decode(model: type[M], body: bytes | str) -> M:
    """Parse a queue message body. Raises `BadMessage` saying which fields are wrong and why
    (never quoting their values); a body over `MAX_MESSAGE_BYTES` is refused unread."""
    if len(body) > MAX_MESSAGE_BYTES:
        unit = "bytes" if isinstance(body, bytes) else "characters"
        raise BadMessage(
            f"the message is {len(body):,} {unit} long; a queue message holds at most "
            f"{MAX_MESSAGE_BYTES:,} bytes"
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise BadMessage(f"not a {model.__name__}: {_problems(exc)}") from None


def _problems(exc: ValidationError, *, limit: int = 5) -> str:
    """What pydantic found, as `field: problem; ...`: locations and messages only (a hostile
    key name is cut short and masked), never the input values."""
    found = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False)[:limit]:
        where = ".".join(_printable(str(part)[:40]) for part in error["loc"]) or "the message"
        found.append(f"{where}: {_printable(error['msg'][:200])}")
    more = exc.error_count() - len(found)
    text = "; ".join(found) + (f"; and {more} more" if more > 0 else "")
    return mask_emails(text)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of a message body for a log line: email addresses masked
    (also one cut before its domain), anything unprintable shown as '?', its size after it."""
    head = body[: limit * 4]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    text = _CUT_ADDRESS.sub("***@", mask_emails(text))
    text = _printable(text)
    cut = "..." if len(text) > limit or len(head) < len(body) else ""
    unit = "bytes" if isinstance(body, bytes) else "characters"
    return f"{text[:limit]}{cut} ({len(body):,} {unit})"


def log_dropped(queue: str, reason: str, body: bytes | str) -> None:
    """Record a queue message that is dropped (the function returns, so the host deletes it):
    the queue, why, and a bounded, masked excerpt. The only trace such a message leaves."""
    log.error(
        "queue message dropped: queue=%s reason=%s message=%s",
        queue,
        _printable(mask_emails(reason[:1000])),
        excerpt(body),
    )


def log_handler_failed(queue: str, exc: BaseException, body: bytes | str) -> None:
    """A poison handler failed: recorded (the exception's type, masked message and where it was
    raised, never a full traceback, whose last line could hold an address) and dropped, so
    nothing ends in a `-poison-poison` queue."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    reason = f"the handler failed{where}: {type(exc).__name__}: {exc}"
    log_dropped(queue, reason, body)
