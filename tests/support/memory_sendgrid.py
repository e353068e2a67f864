"""SendGrid in process, for the flow's unit tests: `MemorySendGrid` implements the port
(`exporter.ports.sendgrid.SendGrid`) on the sandbox's own state engine (`SandboxStore`), so this
fake and the sandbox agree on what SendGrid does: import jobs that complete when due (merging
fields, per-contact errors), list changes that show after a lag, contact exports written as gzip
CSV files, custom field definitions and values, lists deleted with or without their contacts.

What the sandbox does over HTTP (`exporter.local.sandbox.api_*`) and in its job thread (`jobs`)
is done here in the call: requests are checked as the sandbox checks them (valid emails, known
list ids and custom field ids, 6 MB and 30,000 contacts per upsert, 100 emails per search) and
refused with the errors the real client raises for those answers (`Rejected` for a 400 or 413,
`NotFound` for a 404, `ExportFileGone` for an export file that is gone, `Unauthorized` for a
key it does not take).

Time is a number the test sets (`now`, `advance`), never the wall clock: an import job, an
export or a lagged list change falls due when `now` passes its time, and is applied before the
next call (or by `settle()`). Faults are injected per method (`fail_next`, `throttle_next`,
`lose_next`: the call takes effect, then its answer is lost), per contact (`refused`,
`refuse_all`), per job (`failing_jobs`) and per export (`failing_exports`). Every call is
recorded in `calls` (method -> the arguments of each call).
"""

from __future__ import annotations

import io
import json
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

from exporter.core.batching import MAX_CONTACTS, ContactStream, upsert_body, upsert_body_stream
from exporter.local.sandbox.api_contacts import MAX_SEARCH_EMAILS, MAX_UPSERT_BYTES, valid_email
from exporter.local.sandbox.api_fields import _FIELD_NAME_RE as FIELD_NAME_RE
from exporter.local.sandbox.api_fields import RESERVED_FIELDS, RESERVED_NAMES
from exporter.local.sandbox.store import SandboxStore
from exporter.local.sandbox.store_exports import MB
from exporter.local.sandbox.store_model import Conflict, FieldType, Forbidden, JobInfo
from exporter.local.sandbox.store_model import NotFound as StoreNotFound
from exporter.ports.sendgrid import (
    REMOVE_CHUNK,
    SEARCH_CHUNK,
    ApiError,
    ContactExport,
    ContactList,
    ExportFileGone,
    FieldDefinition,
    FieldDefinitions,
    ImportJob,
    NotFound,
    RateLimited,
    Rejected,
    SendGrid,
    SendGridError,
    TransientError,
    Unauthorized,
)

T = TypeVar("T")

EPOCH: Final = datetime(2026, 11, 24, tzinfo=UTC)
"""`now == 0` in wall time (SendGrid's timestamps); the tests' snapshots are written just after."""
START: Final = 60.0
"""Where a new fake's clock starts: a minute after `EPOCH`, after the snapshots the tests write
(`MemoryStorage` dates them a second apart from `EPOCH`)."""
URL_BASE: Final = "memory-sendgrid://"
"""The scheme of the fake's export file and import error URLs (no network behind them)."""

PORT_METHODS: Final = (
    "upsert",
    "import_status",
    "field_definitions",
    "create_field",
    "get_list",
    "lists",
    "find_list",
    "create_list",
    "list_count",
    "search_emails",
    "remove_from_list",
    "delete_list",
    "start_export",
    "export_status",
    "open_export_file",
    "close",
)
"""Every call of the port (`exporter.ports.sendgrid.SendGrid`)."""

_FIELD_TYPES: Final = ("Text", "Number", "Date")


@dataclass
class _Fault:
    error: Callable[[], SendGridError] | None
    """What the call raises instead of taking effect; None: it takes effect, then its answer is
    lost (`TransientError`)."""
    times: int | None
    """How many calls more (None: every call until `clear_faults`)."""


class MemorySendGrid:
    """One SendGrid account in memory. `api_key`: the one key it takes (None: any non-empty
    key, as the sandbox). `job_delay`, `export_delay`: seconds an import job or an export stays
    pending; `list_lag`: seconds before list membership changes show (SendGrid's lag)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        job_delay: float = 0.5,
        export_delay: float = 0.5,
        list_lag: float = 0.0,
        now: float = START,
    ) -> None:
        self.now = now
        """The fake's clock in seconds (set it, or `advance`): what falls due when."""
        self.api_key = api_key
        self.job_delay = job_delay
        self.export_delay = export_delay
        self.list_lag = list_lag
        self.store = SandboxStore(clock=lambda: EPOCH.timestamp() + self.now, monotonic=self.time)
        self.calls: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)
        """Method -> the arguments of every call made to it (upserts: list ids and contacts)."""
        self.keys: list[str] = []
        """The API keys clients were made for, in order."""
        self.refused: set[str] = set()
        """Emails (lower-case) every import job errors, one by one."""
        self.refuse_all = False
        """Import jobs error every contact."""
        self.failing_jobs = 0
        """The next this many upserts make import jobs that end `failed` (nothing applied)."""
        self.failing_exports = 0
        """The next this many exports started end `failure`."""
        self._faults: defaultdict[str, deque[_Fault]] = defaultdict(deque)
        self._job_emails: dict[str, list[str]] = {}
        self._failing: set[str] = set()
        """The jobs and exports that end failed (`failing_jobs`, `failing_exports`)."""

    def __repr__(self) -> str:
        return f"MemorySendGrid(now={self.now}, lists={len(self.store.lists())})"

    # --- time ---------------------------------------------------------------------------------

    def time(self) -> float:
        return self.now

    def at(self) -> datetime:
        """`now` as a wall-clock time."""
        return EPOCH + timedelta(seconds=self.now)

    def advance(self, seconds: float) -> None:
        """Let time pass (then apply what fell due)."""
        self.now += seconds
        self.settle()

    def settle(self) -> None:
        """Apply what is due at `now`, as the sandbox's job thread does: import jobs (in the
        order they were submitted), exports, then lagged list changes."""
        for job_id in self.store.due_jobs(self.now):
            emails = self._job_emails.pop(job_id, [])
            fail = job_id in self._failing
            errored = set() if fail else {i for i, e in enumerate(emails) if self._refuses(e)}
            self.store.apply_upsert(job_id, error_indexes=errored, fail=fail, lag=self.list_lag)
        for export_id in self.store.due_exports(self.now):
            self.store.finish_export(
                export_id,
                fail=export_id in self._failing,
                message="the export failed (injected fault)",
            )
        self.store.apply_due_changes()

    # --- faults -------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error: SendGridError | Callable[[], SendGridError],
        *,
        times: int | None = 1,
    ) -> None:
        """The next `times` calls of `method` raise `error` (a factory, or one instance raised
        each time) and change nothing; `times=None`: every call, until `clear_faults`."""
        self._check_method(method)
        factory = error if callable(error) and not isinstance(error, BaseException) else None
        made = factory or (lambda: cast(SendGridError, error))
        self._faults[method].append(_Fault(made, times))

    def throttle_next(self, method: str, *, retry_after: float = 30.0, times: int = 1) -> None:
        """The next `times` calls of `method` answer 429 with this reset."""
        self.fail_next(
            method,
            lambda: RateLimited(
                f"SendGrid rate limit reached for {method}", retry_after=retry_after
            ),
            times=times,
        )

    def break_next(self, method: str, *, status: int = 500, times: int | None = 1) -> None:
        """The next `times` calls of `method` answer with a server error (`TransientError`)."""
        self.fail_next(
            method,
            lambda: TransientError(f"SendGrid failed on {method} (HTTP {status})", status=status),
            times=times,
        )

    def lose_next(self, method: str, *, times: int | None = 1) -> None:
        """The next `times` calls of `method` take effect, then their answer is lost: the
        caller gets a `TransientError`, as for a dropped connection."""
        self._check_method(method)
        self._faults[method].append(_Fault(None, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _check_method(self, method: str) -> None:
        if method not in PORT_METHODS:
            raise ValueError(f"the SendGrid port has no call {method!r}")

    def _next_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                queue.popleft()
        return fault

    def _refuses(self, email: str) -> bool:
        return self.refuse_all or email in self.refused

    def _call(self, method: str, args: tuple[Any, ...], run: Callable[[], T]) -> T:
        self.calls[method].append(args)
        self.settle()
        fault = self._next_fault(method)
        if fault is not None and fault.error is not None:
            raise fault.error()
        result = run()
        if fault is not None:
            raise TransientError(f"the answer to {method} was lost (injected)")
        return result

    # --- what a test reads and does by hand ---------------------------------------------------

    def count(self, method: str) -> int:
        """Calls made to `method`."""
        self._check_method(method)
        return len(self.calls.get(method, ()))

    def upserted(self) -> list[dict[str, Any]]:
        """Every contact sent in an upsert, in order (repeats included)."""
        return [c for _, contacts in self.calls.get("upsert", ()) for c in contacts]

    def members(self, list_id: str) -> dict[str, dict[str, Any]]:
        """The list's visible members now: email -> its fields (custom fields by name)."""
        self.settle()
        return {str(m["email"]): m for m in self.store.list_members(list_id)}

    def client(self, key: str) -> SendGrid:
        """The client `Services.clients` makes for `key`: this account, or (a key it does not
        take) one that every call answers 401."""
        if not key or not key.strip():
            raise Unauthorized("no SendGrid API key was given")
        self.keys.append(key)
        if self.api_key is not None and key != self.api_key:
            return cast(SendGrid, _RefusedKey(self))
        return self

    def hand_upsert(self, list_ids: Sequence[str], *contacts: dict[str, Any]) -> None:
        """Contacts added or edited by a person in SendGrid's UI (shown after `list_lag`)."""
        job = self.store.submit_upsert(list(contacts), list_ids, self.now)
        self.store.apply_upsert(job, lag=self.list_lag)

    def hand_remove(self, list_id: str, *emails: str) -> None:
        """Contacts taken off a list by a person in SendGrid's UI (shown after `list_lag`)."""
        found = self.store.search_emails(emails)
        ids = [str(c["id"]) for c in found.values() if c is not None]
        self.store.remove_from_list(list_id, ids, lag=self.list_lag)

    # --- the port: contacts and import jobs ---------------------------------------------------

    def upsert(self, list_ids: Sequence[str], contacts: str | bytes | ContactStream) -> str:
        # The body as the client sends it (a stream is read through, as the client does).
        if isinstance(contacts, ContactStream):
            _, chunks = upsert_body_stream(list_ids, contacts)
            body = b"".join(chunks)
        else:
            body = upsert_body(list_ids, contacts)
        parsed = json.loads(body)
        sent: list[dict[str, Any]] = parsed["contacts"]

        def run() -> str:
            if len(body) > MAX_UPSERT_BYTES:
                raise Rejected(
                    "SendGrid rejected PUT /v3/marketing/contacts (HTTP 413)",
                    status=413,
                    errors=[ApiError(f"request body must be at most {MAX_UPSERT_BYTES:,} bytes")],
                )
            problems = self._upsert_problems(parsed["list_ids"], sent)
            if problems:
                raise Rejected(
                    "SendGrid rejected PUT /v3/marketing/contacts (HTTP 400)",
                    status=400,
                    errors=problems,
                )
            job_id = self.store.submit_upsert(sent, parsed["list_ids"], self.now + self.job_delay)
            self._job_emails[job_id] = [str(c.get("email") or "").lower() for c in sent]
            if self.failing_jobs > 0:
                self.failing_jobs -= 1
                self._failing.add(job_id)
            return job_id

        return self._call("upsert", (tuple(list_ids), sent), run)

    def _upsert_problems(
        self, list_ids: list[str], contacts: list[dict[str, Any]]
    ) -> list[ApiError]:
        """What the sandbox's `upsert_contacts` (and the spec) refuse, as SendGrid's errors."""
        problems: list[ApiError] = []
        if not contacts or len(contacts) > MAX_CONTACTS:
            problems.append(ApiError(f"must have 1 to {MAX_CONTACTS:,} items", "contacts"))
        known = {f.id for f in self.store.custom_fields()}
        for i, contact in enumerate(contacts):
            email = contact.get("email")
            if not email:
                problems.append(ApiError("is required", f"contacts[{i}].email"))
            elif not valid_email(email):
                problems.append(ApiError("must be a valid email address", f"contacts[{i}].email"))
            for j, alternate in enumerate(contact.get("alternate_emails") or ()):
                if not valid_email(alternate):
                    where = f"contacts[{i}].alternate_emails[{j}]"
                    problems.append(ApiError("must be a valid email address", where))
            for field_id in contact.get("custom_fields") or {}:
                if field_id not in known:
                    where = f"contacts[{i}].custom_fields.{field_id}"
                    problems.append(ApiError("is not the id of a custom field", where))
        for list_id in self.store.unknown_list_ids(list_ids):
            problems.append(ApiError(f"list {list_id} does not exist", "list_ids"))
        return problems

    def import_status(self, job_id: str) -> ImportJob:
        def run() -> ImportJob:
            job = self.store.job(job_id)
            if job is None:
                raise NotFound(
                    "SendGrid: not found (GET /v3/marketing/contacts/imports/{id})", status=404
                )
            return _import_job(job)

        return self._call("import_status", (job_id,), run)

    def search_emails(self, emails: Iterable[str]) -> dict[str, str]:
        asked = list(emails)

        def run() -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(asked), SEARCH_CHUNK):
                chunk = asked[start : start + SEARCH_CHUNK]  # as the client sends them
                if len(chunk) > MAX_SEARCH_EMAILS:  # as the sandbox refuses them
                    raise Rejected(
                        "SendGrid rejected POST /v3/marketing/contacts/search/emails (HTTP 400)",
                        status=400,
                        errors=[ApiError(f"must have at most {MAX_SEARCH_EMAILS} items", "emails")],
                    )
                bad = [e for e in chunk if e.strip() and not valid_email(e.strip())]
                if bad:
                    raise Rejected(
                        "SendGrid rejected POST /v3/marketing/contacts/search/emails (HTTP 400)",
                        status=400,
                        errors=[ApiError("must be a valid email address", "emails")],
                    )
                for email, contact in self.store.search_emails(chunk).items():
                    if contact is not None:  # a chunk finding none is a 404 the client skips
                        found[email] = str(contact["id"])
            return found

        return self._call("search_emails", (tuple(asked),), run)

    # --- the port: lists ----------------------------------------------------------------------

    def get_list(self, list_id: str) -> ContactList:
        def run() -> ContactList:
            found = self.store.get_list(list_id)
            if found is None:
                raise _list_not_found("GET /v3/marketing/lists/{id}")
            return ContactList(found.id, found.name, found.contact_count)

        return self._call("get_list", (list_id,), run)

    def lists(self) -> Iterator[ContactList]:
        def run() -> Iterator[ContactList]:
            return iter([ContactList(x.id, x.name, x.contact_count) for x in self.store.lists()])

        return self._call("lists", (), run)

    def find_list(self, name: str) -> ContactList | None:
        def run() -> ContactList | None:
            found = [x for x in self.store.lists() if x.name == name]
            return (
                ContactList(found[0].id, found[0].name, found[0].contact_count) if found else None
            )

        return self._call("find_list", (name,), run)

    def create_list(self, name: str) -> ContactList:
        def run() -> ContactList:
            try:
                created = self.store.create_list(name)
            except Conflict:
                raise Rejected(
                    "SendGrid rejected POST /v3/marketing/lists (HTTP 400)",
                    status=400,
                    errors=[ApiError("a list with this name already exists", "name")],
                ) from None
            return ContactList(created.id, created.name, 0)

        return self._call("create_list", (name,), run)

    def list_count(self, list_id: str) -> int:
        def run() -> int:
            found = self.store.get_list(list_id)
            if found is None:
                raise _list_not_found("GET /v3/marketing/lists/{id}/contacts/count")
            return found.contact_count

        return self._call("list_count", (list_id,), run)

    def remove_from_list(self, list_id: str, contact_ids: Iterable[str]) -> list[str]:
        ids = list(contact_ids)

        def run() -> list[str]:
            jobs = []
            for start in range(0, len(ids), REMOVE_CHUNK):
                chunk = ids[start : start + REMOVE_CHUNK]
                if self.store.get_list(list_id) is None:
                    raise _list_not_found("DELETE /v3/marketing/lists/{id}/contacts")
                try:
                    self.store.remove_from_list(list_id, chunk, lag=self.list_lag)
                except StoreNotFound as exc:
                    raise NotFound(
                        "SendGrid: not found (DELETE /v3/marketing/lists/{id}/contacts)",
                        status=404,
                        errors=[ApiError(str(exc), "contact_ids")],
                    ) from None
                jobs.append(str(uuid.uuid4()))
            return jobs

        return self._call("remove_from_list", (list_id, tuple(ids)), run)

    def delete_list(self, list_id: str, *, delete_contacts: bool = False) -> None:
        def run() -> None:
            try:
                self.store.delete_list(list_id, delete_contacts=delete_contacts)
            except StoreNotFound:
                raise _list_not_found("DELETE /v3/marketing/lists/{id}") from None

        self._call("delete_list", (list_id, delete_contacts), run)

    # --- the port: custom fields --------------------------------------------------------------

    def field_definitions(self) -> FieldDefinitions:
        def run() -> FieldDefinitions:
            custom = {
                f.name: FieldDefinition(f.id, f.name, f.field_type)
                for f in self.store.custom_fields()
            }
            reserved = {
                name: FieldDefinition(f"_rf{i}_{kind[0]}", name, kind)
                for i, (name, kind, _) in enumerate(RESERVED_FIELDS)
            }
            return FieldDefinitions(custom=custom, reserved=reserved)

        return self._call("field_definitions", (), run)

    def create_field(self, name: str, field_type: str) -> FieldDefinition:
        def run() -> FieldDefinition:
            problem = None
            if field_type not in _FIELD_TYPES:
                problem = ApiError(f"must be one of {', '.join(_FIELD_TYPES)}", "field_type")
            elif not FIELD_NAME_RE.fullmatch(name):
                problem = ApiError(
                    "must hold only letters A-Z, digits and underscores, and not start with a "
                    "digit",
                    "name",
                )
            else:
                try:
                    created = self.store.create_custom_field(
                        name, cast(FieldType, field_type), reserved=RESERVED_NAMES
                    )
                except Conflict as exc:
                    problem = ApiError(str(exc), "name")
                else:
                    return FieldDefinition(created.id, created.name, created.field_type)
            raise Rejected(
                "SendGrid rejected POST /v3/marketing/field_definitions (HTTP 400)",
                status=400,
                errors=[problem],
            )

        return self._call("create_field", (name, field_type), run)

    # --- the port: contact exports ------------------------------------------------------------

    def start_export(self, list_id: str, *, max_file_size_mb: int = 1000) -> str:
        def run() -> str:
            try:
                export = self.store.submit_export(
                    [list_id],
                    due=self.now + self.export_delay,
                    max_file_bytes=max_file_size_mb * MB,
                )
            except StoreNotFound as exc:
                raise NotFound(
                    "SendGrid: not found (POST /v3/marketing/contacts/exports)",
                    status=404,
                    errors=[ApiError(str(exc), "list_ids")],
                ) from None
            if self.failing_exports > 0:
                self.failing_exports -= 1
                self._failing.add(export.id)
            return export.id

        return self._call("start_export", (list_id, max_file_size_mb), run)

    def export_status(self, export_id: str) -> ContactExport:
        def run() -> ContactExport:
            export = self.store.export(export_id)
            if export is None:
                raise NotFound(
                    "SendGrid: not found (GET /v3/marketing/contacts/exports/{id})", status=404
                )
            urls: tuple[str, ...] = ()
            if export.status == "ready":
                urls = tuple(
                    f"{URL_BASE}export-files/{export.id}/{n}?sig={export.token}"
                    for n in range(1, export.file_count + 1)
                )
            return ContactExport(
                id=export.id,
                status=export.status,
                urls=urls,
                contact_count=export.contact_count if export.status == "ready" else None,
                message=export.message if export.status == "failure" else "",
            )

        return self._call("export_status", (export_id,), run)

    def open_export_file(self, url: str) -> IO[bytes]:
        def run() -> IO[bytes]:
            parts = urlsplit(url)
            path = parts.path.strip("/").split("/")
            if f"{parts.scheme}://" != URL_BASE or parts.netloc != "export-files" or len(path) != 2:
                raise Rejected(f"not an export file URL of this fake: {url[:80]}")
            signature = (parse_qs(parts.query).get("sig") or [""])[0]
            try:
                data = self.store.export_file(path[0], int(path[1]), signature)
            except StoreNotFound as exc:  # expired ones too
                raise ExportFileGone(
                    f"the export file has expired or is gone ({exc}); start a new export",
                    status=404,
                ) from None
            except Forbidden as exc:  # a wrong signature: 403
                raise ExportFileGone(
                    f"the export file server refused the download ({exc})", status=403
                ) from None
            return io.BytesIO(data)

        return self._call("open_export_file", (url,), run)

    def close(self) -> None:
        self._call("close", (), lambda: None)


class _RefusedKey:
    """A client made with a key the account does not take: every call answers 401, as the
    real client raises it (`Unauthorized`), and is recorded on the account."""

    def __init__(self, account: MemorySendGrid) -> None:
        self._account = account

    def close(self) -> None:
        self._account.calls["close"].append(())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in PORT_METHODS:
            raise AttributeError(name)

        def refused(*args: Any, **_: Any) -> Any:
            self._account.calls[name].append(args)
            raise Unauthorized(
                f"SendGrid refused the API key for {name} (HTTP 401); check that the key is "
                "current and has the Marketing Campaigns scopes",
                status=401,
            )

        return refused


def _import_job(job: JobInfo) -> ImportJob:
    return ImportJob(
        id=job.id,
        status=job.status,
        requested=job.requested_count,
        created=job.created_count,
        updated=job.updated_count,
        errored=job.errored_count,
        errors_url=f"{URL_BASE}import-errors/{job.id}" if job.errored_count else None,
    )


def _list_not_found(endpoint: str) -> NotFound:
    return NotFound(
        f"SendGrid: not found ({endpoint})", status=404, errors=[ApiError("list not found")]
    )
