"""A stateful SendGrid Marketing Campaigns API for local runs and tests.

What it reproduces of SendGrid:
- the paths, methods and bodies of the official OpenAPI specs vendored in `specs/` (contacts,
  lists, custom fields): every /v3 request is validated against them with openapi-core, so what
  the spec rejects is rejected here (400, one error per problem, `field` as `contacts[0].email`);
- the limits the spec does not encode: 6,000,000 bytes per upsert (413), a valid `email` on every
  contact (one bad address fails the whole request), existing `list_ids` and custom field ids,
  at most 100 emails per search;
- upserts as asynchronous import jobs (`pending` for `--job-delay`, then `completed`, `errored` or
  `failed` with per-contact errors and an `errors_url`); contacts keyed by lower-cased email,
  fields merged on update, custom fields by id (`e1_T`) with Number, Date and Text (at most
  1,000 characters) values checked, field names as SendGrid allows them (letters, digits, _; not
  starting with a digit; unique regardless of case);
- contact exports (`POST /v3/marketing/contacts/exports`, then its status): `pending` for
  `--export-delay`, then `ready` with the members visible at that moment (or `failure`), written
  once as gzip-compressed CSV or JSON Lines files split by `max_file_size`, served like S3
  presigned URLs from the sandbox itself (`/__sandbox/export-files/<id>/<n>?sig=...`: no API key;
  a wrong signature is a 403; a request that also carries an Authorization header is a 400, as
  S3 answers to two auth mechanisms). The CSV layout (`sandbox_store.EXPORT_CSV_COLUMNS`) is our
  best knowledge of SendGrid's real export, not a documented format;
- list deletion, keeping the contacts or deleting them from the account (`delete_contacts`);
- bearer-key auth, a fixed-window rate limit per key with `X-RateLimit-*` headers on every /v3
  answer, 429s; faults on demand: 500s, 429s, latency, dropped connections (before the request
  is handled: nothing changes), lost answers (after it is handled: it took effect, but the client
  sees a connection error), errored contacts, failed jobs, failed exports, and SendGrid's lag
  (`--list-lag`: list membership changes become visible to counts, members, a contact's
  `list_ids` and exports only that many seconds later); `--seed` makes the dice reproducible.

What it does not: other endpoints of those specs answer 501 (list rename, contact delete, SGQL
search, ...); contacts are identified by email only (SendGrid also takes phone_number_id,
external_id and anonymous_id); a removal from a list, and a list deletion with its contacts, run
in SendGrid as background jobs whose ids this answers but does not track (here: a removal after
the list lag, a deletion at once); segments (an export naming any is a 400), billing and
subusers do not exist; custom field values are kept as sent (SendGrid normalises dates); export
notifications are not sent; exports' `expires_at` is not enforced, but only the files of the
latest `KEPT_EXPORTS` exports are kept (older URLs answer 404 "expired").

Control endpoints under `/__sandbox/` (no auth, no rate limit) let tests and the local stack read
the state, change faults and reset; see `SandboxApp._control`. Logs carry method, path, status
and duration, never a body, a query string (export signatures) or the API key.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self, cast

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.validation.request.exceptions import (
    MissingRequiredParameter,
    ParameterValidationError,
)
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from exporter.local.process import configure_logging, serve_until_signal
from exporter.local.sandbox_store import (
    MB,
    Conflict,
    Expired,
    ExportInfo,
    FieldType,
    Forbidden,
    JobInfo,
    NotFound,
    SandboxStore,
    iso_timestamp,
)

if TYPE_CHECKING:  # the WSGI protocol types live in typeshed only
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("exporter.local.sandbox")  # also when run as __main__

SPEC_DIR: Final = Path(__file__).resolve().parent / "specs"
SPEC_FILES: Final = (
    "tsg_mc_contacts_v3.json",
    "tsg_mc_lists_v3.json",
    "tsg_mc_custom_fields_v3.json",
)
MAX_UPSERT_BYTES: Final = 6_000_000
"""SendGrid's cap on one upsert body (30,000 contacts is the other cap; the spec has that one)."""
MAX_BODY_BYTES: Final = MAX_UPSERT_BYTES
"""No request body may be larger; the sandbox never reads more than this into memory."""
MAX_SEARCH_EMAILS: Final = 100
MAX_ERRORS: Final = 100
"""At most this many errors in one 400 answer."""
PAGE_SIZE_DEFAULT: Final = 100

# Reserved fields as SendGrid lists them (the spec's example) plus the identifier fields.
RESERVED_FIELDS: Final[tuple[tuple[str, FieldType, bool], ...]] = (
    ("first_name", "Text", False),
    ("last_name", "Text", False),
    ("email", "Text", False),
    ("alternate_emails", "Text", False),
    ("address_line_1", "Text", False),
    ("address_line_2", "Text", False),
    ("city", "Text", False),
    ("state_province_region", "Text", False),
    ("postal_code", "Text", False),
    ("country", "Text", False),
    ("phone_number", "Text", False),
    ("whatsapp", "Text", False),
    ("line", "Text", False),
    ("facebook", "Text", False),
    ("unique_name", "Text", False),
    ("email_domains", "Text", True),
    ("last_clicked", "Date", True),
    ("last_opened", "Date", True),
    ("last_emailed", "Date", True),
    ("singlesend_id", "Text", True),
    ("automation_id", "Text", True),
    ("created_at", "Date", True),
    ("updated_at", "Date", True),
    ("contact_id", "Text", True),
    ("phone_number_id", "Text", False),
    ("external_id", "Text", False),
    ("anonymous_id", "Text", False),
)
RESERVED_NAMES: Final = frozenset(name for name, _, _ in RESERVED_FIELDS)
_FIELD_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A custom field name SendGrid creates (the spec's `CreateFieldDefinition`; length: the spec)."""

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_RE: Final = re.compile(
    rf"(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)


def valid_email(value: str) -> bool:
    """A plain internet address (dot-atom local part, DNS domain with a real top-level domain),
    compared lower-cased: what SendGrid takes without failing the batch."""
    return len(value) <= 254 and _EMAIL_RE.fullmatch(value.lower()) is not None


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Faults:
    """What the sandbox does to requests and jobs; changeable at runtime via /__sandbox/faults."""

    error_rate: float = 0.0
    throttle_rate: float = 0.0
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    contact_error_rate: float = 0.0
    job_fail_rate: float = 0.0
    job_delay: float = 0.5
    rate_limit: int = 600
    rate_window: float = 60.0
    export_delay: float = 0.5
    """Seconds a contact export stays `pending`."""
    export_fail_rate: float = 0.0
    """Fraction of contact exports that end `failure`."""
    list_lag: float = 0.0
    """Seconds before a list membership change (a join by an upsert job, a removal) is visible."""
    lose_rate: float = 0.0
    """Fraction of /v3 requests handled (they take effect) whose answer is never sent."""

    def __post_init__(self) -> None:
        for name in (
            "error_rate",
            "throttle_rate",
            "drop_rate",
            "contact_error_rate",
            "job_fail_rate",
            "export_fail_rate",
            "lose_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_ms", "job_delay", "export_delay", "list_lag"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied; unknown names or bad values raise `ValueError`, a
        value that is not a number `TypeError`."""
        known = {f.name: f.type for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number")
            if name != "rate_limit":
                values[name] = float(value)
            elif value == int(value):
                values[name] = int(value)
            else:
                raise ValueError("rate_limit must be a whole number")
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Startup settings; `faults` are the values `/__sandbox/reset` returns to."""

    host: str = "127.0.0.1"
    port: int = 3030
    api_key: str | None = None
    """The one accepted bearer key; None accepts any non-empty key."""
    seed: int | None = None
    faults: Faults = Faults()


# --- the specs and routing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    with_body: frozenset[str]
    openapi: OpenAPI


@cache
def _routes() -> tuple[_Route, ...]:
    """Every path of the three specs, loaded once per process (about 0.4 s), the routes with
    fewer parameters first so `/contacts/count` wins over `/contacts/{id}`."""
    routes: list[_Route] = []
    for name in SPEC_FILES:
        spec = json.loads((SPEC_DIR / name).read_text(encoding="utf-8"))
        spec["servers"] = [{"url": "/"}]  # the files declare api.sendgrid.com
        openapi = OpenAPI.from_dict(spec)
        for template, item in spec["paths"].items():
            regex = re.sub(r"\\\{\w+\\\}", "([^/]+)", re.escape(template))
            operations = {m: op for m, op in item.items() if m != "parameters"}
            routes.append(
                _Route(
                    template=template,
                    pattern=re.compile(regex),
                    methods=frozenset(m.upper() for m in operations),
                    with_body=frozenset(
                        m.upper() for m, op in operations.items() if "requestBody" in op
                    ),
                    openapi=openapi,
                )
            )
    routes.sort(key=lambda r: r.template.count("{"))
    return tuple(routes)


def _find_route(path: str) -> tuple[_Route, tuple[str, ...]] | None:
    for route in _routes():
        match = route.pattern.fullmatch(path)
        if match:
            return route, match.groups()
    return None


# --- answers ---------------------------------------------------------------------------------

Problem = tuple[str | None, str]
"""(field or None, message): one entry of a SendGrid `errors` array."""


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        mimetype="application/json",
        headers=dict(headers or {}),
    )


def _errors(status: int, problems: Iterable[Problem]) -> Response:
    """SendGrid's error shape; `field` is left out (never null) when there is none."""
    items = [
        {"field": f, "message": m} if f is not None else {"message": m}
        for f, m in list(problems)[:MAX_ERRORS]
    ]
    return _json(status, {"errors": items})


def _error(status: int, message: str, field: str | None = None) -> Response:
    return _errors(status, [(field, message)])


def _field_path(parts: Iterable[Any]) -> str | None:
    """`contacts[0].first_name` from jsonschema's path deque; None for the body itself."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or None


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _schema_problems(
    schema_errors: Iterable[Exception], prefix: str | None = None
) -> list[Problem]:
    """Short messages from jsonschema errors, never echoing the (possibly huge) value."""
    problems: list[Problem] = []
    seen: set[Problem] = set()
    for error in schema_errors:
        keyword = getattr(error, "validator", None)
        expected = getattr(error, "validator_value", None)
        path = [*([prefix] if prefix else []), *getattr(error, "absolute_path", ())]
        if keyword == "required":
            instance = getattr(error, "instance", None)
            missing = [
                p for p in expected or () if isinstance(instance, dict) and p not in instance
            ]
            new = [(_field_path([*path, p]), "is required") for p in missing]
        else:
            new = [(_field_path(path), _schema_message(keyword, expected))]
        for problem in new:
            if problem not in seen:
                seen.add(problem)
                problems.append(problem)
    return problems


def _schema_message(keyword: Any, expected: Any) -> str:
    if keyword == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        return f"must be of type {' or '.join(names)}"
    messages: dict[str, str] = {
        "maxLength": "must be at most {} characters",
        "minLength": "must be at least {} characters",
        "maxItems": "must have at most {} items",
        "minItems": "must have at least {} items",
        "maxProperties": "must have at most {} properties",
        "maximum": "must be at most {}",
        "minimum": "must be at least {}",
        "format": "must be a {}",
        "pattern": "must match {}",
    }
    if keyword == "enum":
        return "must be one of " + ", ".join(map(str, expected))
    if isinstance(keyword, str) and keyword in messages:
        return messages[keyword].format(_number(expected))
    return f"is not valid ({keyword})"


def _spec_problems(openapi: OpenAPI, request: Request) -> tuple[int, list[Problem]]:
    """Validate against the spec: (status, problems); status 415 for a foreign content type."""
    problems: list[Problem] = []
    for error in openapi.iter_request_errors(WerkzeugOpenAPIRequest(request)):
        cause = error.__cause__
        if isinstance(cause, MediaTypeNotFound):
            return 415, [(None, "Content-Type must be application/json")]
        if isinstance(error, MissingRequiredParameter):
            problems.append((error.name, "is required"))
        elif isinstance(error, ParameterValidationError):
            schema_errors = getattr(cause, "schema_errors", None)
            if schema_errors:
                problems.extend(_schema_problems(schema_errors, prefix=error.name))
            else:  # a CastError: the text is not a number/boolean/...
                kind = getattr(cause, "type", None)
                problems.append((error.name, f"must be of type {kind}" if kind else "is invalid"))
        elif cause is not None and getattr(cause, "schema_errors", None) is not None:
            problems.extend(_schema_problems(cast(Any, cause).schema_errors))
        else:
            problems.append((None, "invalid request"))
    return 400, problems


# --- rate limiting ---------------------------------------------------------------------------


class _RateLimiter:
    """Fixed windows per API key, each starting at the key's first request after the last one
    ended (so a test knows exactly which request is the first over the limit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, now: float, limit: int, window: float) -> tuple[bool, int, int]:
        """Count one request: (allowed, remaining, reset epoch seconds)."""
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now >= start + window:
                start, count = now, 0
            count += 1
            self._windows[key] = (start, count)
        return count <= limit, max(0, limit - count), math.ceil(start + window)

    def peek(self, key: str, now: float, limit: int, window: float) -> tuple[int, int]:
        """(remaining, reset) without counting: for answers given before the limit is checked."""
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
        if now >= start + window:
            start, count = now, 0
        return max(0, limit - count), math.ceil(start + window)

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()


def _rate_headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }


class DroppedConnection(ConnectionAbortedError):
    """Raised to the WSGI server so it sends nothing (werkzeug treats it as a dropped client).
    `outcome` is "dropped" (before handling) or "lost" (after)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(f"connection closed by the sandbox without an answer ({outcome})")
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class _Call:
    request: Request
    params: tuple[str, ...]
    body: Any
    base: str
    """Scheme and host the client used, no trailing slash: the base of `_metadata` links."""


Handler = Callable[["SandboxApp", _Call], Response]


class _BodyRequest(Request):
    max_content_length = MAX_BODY_BYTES


# --- the application -------------------------------------------------------------------------


class SandboxApp:
    """The WSGI application, with its store and the thread that finishes import jobs.

    Use `close()` (or `with`) to stop the job thread when used in-process.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.store = SandboxStore()
        self._faults = config.faults
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._limiter = _RateLimiter()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._counts_lock = threading.Lock()
        _routes()  # load the specs before the first request, not during it
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._jobs_thread = threading.Thread(
            target=self._run_jobs, name="sandbox-jobs", daemon=True
        )
        self._jobs_thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._jobs_thread.join(timeout=5)

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, changes: Mapping[str, Any]) -> Faults:
        self._faults = self._faults.updated(changes)
        self._wake.set()
        return self._faults

    def reset(self) -> None:
        """All state, counters and rate windows cleared; faults and randomness as at startup."""
        self.store.reset()
        self._limiter.clear()
        with self._counts_lock:
            self._counts.clear()
        with self._rng_lock:
            self._rng.seed(self.config.seed)
        self._faults = self.config.faults

    def _roll(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._rng_lock:
            return self._rng.random() < rate

    # --- import jobs ---------------------------------------------------------------------------

    def _run_jobs(self) -> None:
        """Finish each pending import job and export once its delay has passed, and make lagged
        list changes visible when due; sleeps until the next of them is due."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._finish_due_jobs()
            except Exception:  # keep the thread alive; a broken job must not stop the others
                log.exception("import job failed inside the sandbox")
            try:
                self._finish_due_exports()
            except Exception:
                log.exception("contact export failed inside the sandbox")
            self.store.apply_due_changes()
            next_due = self.store.next_due()
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            self._wake.wait(timeout)

    def _finish_due_jobs(self) -> None:
        for job_id in self.store.due_jobs(time.monotonic()):
            job = self.store.job(job_id)
            if job is None:  # reset in between
                continue
            faults = self._faults
            fail = self._roll(faults.job_fail_rate)
            errored: set[int] = set()
            if not fail and faults.contact_error_rate > 0:
                errored = {
                    i for i in range(job.requested_count) if self._roll(faults.contact_error_rate)
                }
            try:
                self.store.apply_upsert(
                    job_id, error_indexes=errored, fail=fail, lag=faults.list_lag
                )
            except NotFound:
                continue

    def _finish_due_exports(self) -> None:
        for export_id in self.store.due_exports(time.monotonic()):
            fail = self._roll(self._faults.export_fail_rate)
            started = time.perf_counter()
            try:
                done = self.store.finish_export(
                    export_id, fail=fail, message="the export failed (injected fault)"
                )
            except NotFound:  # reset in between
                continue
            log.info(
                "export %s %s: %s contacts, %d files in %.1fs",
                export_id,
                done.status,
                done.contact_count,
                done.file_count,
                time.perf_counter() - started,
            )

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _BodyRequest(environ)
        started = time.perf_counter()
        level = logging.INFO
        if request.path.startswith("/v3/"):
            try:
                response = self._v3(request)
            except DroppedConnection as exc:
                log.info("%s %s %s", request.method, request.path, exc.outcome)
                raise
        elif request.path.startswith("/__sandbox/"):
            response = self._control(request)
            level = logging.DEBUG
        else:
            response = _error(404, "not found")
        ms = (time.perf_counter() - started) * 1000
        log.log(level, "%s %s %s %.1fms", request.method, request.path, response.status_code, ms)
        return response(environ, start_response)

    def _count(self, key: str, status: str) -> None:
        with self._counts_lock:
            self._counts[(key, status)] += 1

    def _v3(self, request: Request) -> Response:
        """Latency, drop, injected 500, injected 429, auth, rate limit, validation, handler,
        then maybe a lost answer."""
        faults = self._faults
        found = _find_route(request.path)
        key = f"{request.method} {found[0].template if found else '(unknown path)'}"
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000)
        if self._roll(faults.drop_rate):
            self._count(key, "dropped")
            self._drop(request)
        token = _bearer(request)
        now = time.time()
        limit = faults.rate_limit
        if self._roll(faults.error_rate):
            remaining, reset = self._limiter.peek(token or "", now, limit, faults.rate_window)
            response = _error(500, "internal server error")
            response.headers["X-Sandbox-Fault"] = "error"
        elif self._roll(faults.throttle_rate):
            remaining, reset = 0, math.ceil(now + 1)
            response = _error(429, "too many requests")
            response.headers["X-Sandbox-Fault"] = "throttle"
        elif not token or (self.config.api_key is not None and token != self.config.api_key):
            remaining, reset = self._limiter.peek(token or "", now, limit, faults.rate_window)
            response = _error(401, "authorization required")
        else:
            allowed, remaining, reset = self._limiter.hit(token, now, limit, faults.rate_window)
            if not allowed:
                response = _error(429, "too many requests")
            else:
                try:
                    response = self._dispatch(request, found)
                except Exception:
                    log.exception("%s %s failed inside the sandbox", request.method, request.path)
                    response = _error(500, "internal sandbox error")
        response.headers.update(_rate_headers(limit, remaining, reset))
        if self._roll(faults.lose_rate):
            self._count(key, "lost")
            self._drop(request, outcome="lost")
        self._count(key, str(response.status_code))
        return response

    def _drop(self, request: Request, outcome: str = "dropped") -> None:
        """Read the request (discarding what is left of it), then close the connection without
        a byte of answer, so the client sees a connection error and not a response."""
        try:
            while request.stream.read(1 << 16):
                pass
        except RequestEntityTooLarge:
            pass  # werkzeug drains the rest after the app returns
        sock = request.environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise DroppedConnection(outcome)

    def _dispatch(self, request: Request, found: tuple[_Route, tuple[str, ...]] | None) -> Response:
        if found is None:
            return _error(404, "not found")
        route, params = found
        method = request.method.upper()
        if method not in route.methods:
            response = _error(405, "method not allowed")
            response.headers["Allow"] = ", ".join(sorted(route.methods))
            return response
        handler = _HANDLERS.get((method, route.template))
        if handler is None:
            return _error(501, f"{method} {route.template} is not implemented by the sandbox")
        try:
            # Checks Content-Length before reading, and stops reading at the cap.
            raw = request.get_data(cache=True)
        except RequestEntityTooLarge:
            return _error(413, f"request body must be at most {MAX_BODY_BYTES:,} bytes")
        body: Any = None
        if method in route.with_body:
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return _error(400, "invalid JSON body")
        status, problems = _spec_problems(route.openapi, request)
        if problems:
            return _errors(status, problems)
        call = _Call(request, params, body, request.host_url.rstrip("/"))
        return handler(self, call)

    # --- /v3 handlers --------------------------------------------------------------------------

    def _upsert_contacts(self, call: _Call) -> Response:
        contacts: list[dict[str, Any]] = call.body["contacts"]
        list_ids: list[str] = call.body.get("list_ids", [])
        known_fields = {f.id for f in self.store.custom_fields()}
        problems: list[Problem] = []
        for i, contact in enumerate(contacts):
            email = contact.get("email")
            if not email:
                problems.append((f"contacts[{i}].email", "is required"))
            elif not valid_email(email):
                problems.append((f"contacts[{i}].email", "must be a valid email address"))
            for j, alternate in enumerate(contact.get("alternate_emails") or ()):
                if not valid_email(alternate):
                    field = f"contacts[{i}].alternate_emails[{j}]"
                    problems.append((field, "must be a valid email address"))
            for field_id in contact.get("custom_fields") or {}:
                if field_id not in known_fields:
                    field = f"contacts[{i}].custom_fields.{field_id}"
                    problems.append((field, "is not the id of a custom field"))
            if len(problems) >= MAX_ERRORS:
                break
        for list_id in self.store.unknown_list_ids(list_ids):
            problems.append(("list_ids", f"list {list_id} does not exist"))
        if problems:
            return _errors(400, problems)
        due = time.monotonic() + self._faults.job_delay
        job_id = self.store.submit_upsert(contacts, list_ids, due)
        self._wake.set()
        return _json(202, {"job_id": job_id})

    def _get_import(self, call: _Call) -> Response:
        job = self.store.job(call.params[0])
        if job is None:
            return _error(404, "job not found")
        return _json(200, _job_view(job, call.base))

    def _search_emails(self, call: _Call) -> Response:
        emails: list[str] = call.body["emails"]
        if len(emails) > MAX_SEARCH_EMAILS:
            return _error(400, f"must have at most {MAX_SEARCH_EMAILS} items", "emails")
        problems: list[Problem] = [
            (f"emails[{i}]", "must be a valid email address")
            for i, email in enumerate(emails)
            if email.strip() and not valid_email(email.strip())
        ]
        if problems:
            return _errors(400, problems)
        found = self.store.search_emails(emails)
        if not any(found.values()):
            return _error(404, "No contacts found")
        result = {
            email: {"contact": _with_self(contact, call.base)}
            if contact is not None
            else {"error": "contact not found"}
            for email, contact in found.items()
        }
        return _json(200, {"result": result})

    def _contact_count(self, call: _Call) -> Response:
        count = self.store.contact_count()
        return _json(200, {"contact_count": count, "billable_count": count})

    def _get_contact(self, call: _Call) -> Response:
        contact = self.store.get_contact(call.params[0])
        if contact is None:
            return _error(404, "contact not found")
        return _json(200, _with_self(contact, call.base))

    def _get_lists(self, call: _Call) -> Response:
        args = call.request.args
        size = int(float(args.get("page_size", PAGE_SIZE_DEFAULT)))
        token = args.get("page_token") or ""
        offset = _page_offset(token)
        if offset is None:
            return _error(400, "is not a valid page token", "page_token")
        lists = self.store.lists()
        page = lists[offset : offset + size]
        link = f"{call.base}/v3/marketing/lists?page_size={size}"
        meta: dict[str, Any] = {"self": link + (f"&page_token={token}" if token else "")}
        if offset + size < len(lists):
            meta["next"] = f"{link}&page_token={_page_token(offset + size)}"
        if offset > 0:
            previous = max(0, offset - size)
            meta["prev"] = link + (f"&page_token={_page_token(previous)}" if previous else "")
        meta["count"] = len(lists)
        result = [_list_view(x.id, x.name, x.contact_count, call.base) for x in page]
        return _json(200, {"result": result, "_metadata": meta})

    def _create_list(self, call: _Call) -> Response:
        try:
            created = self.store.create_list(call.body["name"])
        except Conflict:
            return _error(400, "a list with this name already exists", "name")
        return _json(201, _list_view(created.id, created.name, 0, call.base))

    def _get_list(self, call: _Call) -> Response:
        found = self.store.get_list(call.params[0])
        if found is None:
            return _error(404, "list not found")
        view = _list_view(found.id, found.name, found.contact_count, call.base)
        if call.request.args.get("contact_sample", "").lower() == "true":
            try:
                sample = self.store.sample_member(found.id)
            except NotFound:
                return _error(404, "list not found")
            if sample is not None:
                view["contact_sample"] = _with_self(sample, call.base)
        return _json(200, view)

    def _list_contact_count(self, call: _Call) -> Response:
        found = self.store.get_list(call.params[0])
        if found is None:
            return _error(404, "list not found")
        count = found.contact_count
        return _json(200, {"contact_count": count, "billable_count": count})

    def _remove_from_list(self, call: _Call) -> Response:
        raw = call.request.args.get("contact_ids", "")
        ids = [x.strip() for x in raw.split(",") if x.strip()]
        if not ids:
            return _error(400, "must name at least one contact id", "contact_ids")
        if self.store.get_list(call.params[0]) is None:
            return _error(404, "list not found")
        try:
            self.store.remove_from_list(call.params[0], ids, lag=self._faults.list_lag)
        except NotFound as exc:
            return _error(404, str(exc), "contact_ids")
        return _json(202, {"job_id": str(uuid.uuid4())})

    def _delete_list(self, call: _Call) -> Response:
        delete_contacts = call.request.args.get("delete_contacts", "").lower() == "true"
        try:
            self.store.delete_list(call.params[0], delete_contacts=delete_contacts)
        except NotFound:
            return _error(404, "list not found")
        if delete_contacts:  # SendGrid deletes the contacts in a job; here they are gone
            return _json(200, {"job_id": str(uuid.uuid4())})
        return Response(status=204)

    def _start_export(self, call: _Call) -> Response:
        body: dict[str, Any] = call.body
        if body.get("segment_ids"):
            return _error(400, "segments do not exist in the sandbox", "segment_ids")
        max_file_size = int(body.get("max_file_size", 5000))
        if max_file_size < 1:
            return _error(400, "must be at least 1", "max_file_size")
        due = time.monotonic() + self._faults.export_delay
        try:
            export = self.store.submit_export(
                body.get("list_ids") or [],
                due=due,
                file_type="json" if body.get("file_type") == "json" else "csv",
                max_file_bytes=max_file_size * MB,
            )
        except NotFound as exc:
            return _error(404, str(exc), "list_ids")
        self._wake.set()
        meta = {"self": f"{call.base}/v3/marketing/contacts/exports/{export.id}"}
        return _json(202, {"id": export.id, "_metadata": meta})

    def _get_export(self, call: _Call) -> Response:
        export = self.store.export(call.params[0])
        if export is None:
            return _error(404, "export not found")
        return _json(200, _export_view(export, call.base))

    def _get_exports(self, call: _Call) -> Response:
        names = {x.id: x.name for x in self.store.lists()}
        result = []
        for export in self.store.exports():
            view = _export_view(export, call.base)
            view.pop("updated_at")
            view.pop("contact_count", None)
            view.pop("message", None)
            view["export_type"] = "list_export" if export.list_ids else "contacts_export"
            view["lists"] = [{"ID": x, "Name": names.get(x, "")} for x in export.list_ids]
            view["segments"] = []
            result.append(view)
        meta = {"self": f"{call.base}/v3/marketing/contacts/exports"}
        return _json(200, {"result": result, "_metadata": meta})

    def _get_field_definitions(self, call: _Call) -> Response:
        custom = [
            {"id": f.id, "name": f.name, "field_type": f.field_type}
            for f in self.store.custom_fields()
        ]
        reserved = [
            {"id": f"_rf{i}_{kind[0]}", "name": name, "field_type": kind}
            | ({"read_only": True} if read_only else {})
            for i, (name, kind, read_only) in enumerate(RESERVED_FIELDS)
        ]
        meta = {"self": f"{call.base}/v3/marketing/field_definitions"}
        return _json(200, {"custom_fields": custom, "reserved_fields": reserved, "_metadata": meta})

    def _create_field_definition(self, call: _Call) -> Response:
        name: str = call.body["name"]
        field_type = cast(FieldType, call.body["field_type"])
        if not _FIELD_NAME_RE.fullmatch(name):
            return _error(
                400,
                "must hold only letters A-Z, digits and underscores, and not start with a digit",
                "name",
            )
        try:
            created = self.store.create_custom_field(name, field_type, reserved=RESERVED_NAMES)
        except Conflict as exc:
            return _error(400, str(exc), "name")
        meta = {"self": f"{call.base}/v3/marketing/field_definitions/{created.id}"}
        return _json(
            200,
            {
                "id": created.id,
                "name": created.name,
                "field_type": created.field_type,
                "_metadata": meta,
            },
        )

    # --- control endpoints ---------------------------------------------------------------------

    def _control(self, request: Request) -> Response:
        """`/__sandbox/...`: state, faults, reset, list members, request counts, job errors,
        export files (signed URLs, no key)."""
        method, path = request.method.upper(), request.path
        parts = path.strip("/").split("/")[1:]
        routes: dict[tuple[str, ...], tuple[str, Callable[[], Response]]] = {
            ("state",): ("GET", lambda: _json(200, self._state())),
            ("faults",): ("POST", lambda: self._post_faults(request)),
            ("reset",): ("POST", self._post_reset),
            ("requests",): ("GET", lambda: _json(200, self._request_counts())),
        }
        if len(parts) == 3 and parts[0] == "lists" and parts[2] == "contacts":
            by_id = request.args.get("custom_fields") == "id"
            routes[tuple(parts)] = ("GET", lambda: self._members(parts[1], by_id))
        if len(parts) == 2 and parts[0] == "import-errors":
            routes[tuple(parts)] = ("GET", lambda: self._import_errors(parts[1]))
        if len(parts) == 3 and parts[0] == "export-files":
            routes[tuple(parts)] = ("GET", lambda: self._export_file(request, parts[1], parts[2]))
        found = routes.get(tuple(parts))
        if found is None:
            return _error(404, "not found")
        allowed, action = found
        if method != allowed:
            response = _error(405, "method not allowed")
            response.headers["Allow"] = allowed
            return response
        return action()

    def _state(self) -> dict[str, Any]:
        state = self.store.summary()
        state["faults"] = self._faults.as_dict()
        state["seed"] = self.config.seed
        state["api_key_required"] = self.config.api_key is not None
        return state

    def _post_faults(self, request: Request) -> Response:
        try:
            changes = json.loads(request.get_data() or b"{}")
        except ValueError:
            return _error(400, "invalid JSON body")
        if not isinstance(changes, dict):
            return _error(400, "must be a JSON object")
        try:
            faults = self.set_faults(changes)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return _json(200, faults.as_dict())

    def _post_reset(self) -> Response:
        self.reset()
        return _json(200, self._state())

    def _members(self, list_id: str, custom_by_id: bool = False) -> Response:
        """`?custom_fields=id` shows custom values keyed as stored (field ids), else by name."""
        try:
            return _json(200, self.store.list_members(list_id, custom_by_id=custom_by_id))
        except NotFound:
            return _error(404, "list not found")

    def _export_file(self, request: Request, export_id: str, number: str) -> Response:
        """An export file, as an S3 presigned URL serves it: the signature in the query is the
        only credential; gzip bytes as stored (no Content-Encoding: the client unpacks them)."""
        response = self._export_file_answer(request, export_id, number)
        self._count("GET /__sandbox/export-files/{id}/{n}", str(response.status_code))
        return response

    def _export_file_answer(self, request: Request, export_id: str, number: str) -> Response:
        if "Authorization" in request.headers:
            return _error(
                400,
                "only one auth mechanism allowed: the URL's signature, or an Authorization "
                "header, not both",
            )
        if not number.isdigit():
            return _error(404, "export file not found")
        try:
            data = self.store.export_file(export_id, int(number), request.args.get("sig", ""))
        except Forbidden:
            return _error(403, "the signature does not match")
        except Expired:
            return _error(404, "the export file has expired")
        except NotFound:
            return _error(404, "export file not found")
        return Response(data, status=200, mimetype="application/gzip")

    def _import_errors(self, job_id: str) -> Response:
        try:
            errors = self.store.job_errors(job_id)
        except NotFound:
            return _error(404, "job not found")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["email", "error"])
        writer.writerows(errors)
        return Response(out.getvalue(), mimetype="text/csv")

    def _request_counts(self) -> dict[str, int]:
        """{"PUT /v3/marketing/contacts 202": 3, ...}: flat, so a test can sum what it wants.
        /v3 requests and export file downloads; the status is "dropped" or "lost" for those
        answered with a closed connection."""
        with self._counts_lock:
            return {f"{key} {status}": n for (key, status), n in sorted(self._counts.items())}


_HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("PUT", "/v3/marketing/contacts"): SandboxApp._upsert_contacts,
    ("GET", "/v3/marketing/contacts/imports/{id}"): SandboxApp._get_import,
    ("POST", "/v3/marketing/contacts/search/emails"): SandboxApp._search_emails,
    ("GET", "/v3/marketing/contacts/count"): SandboxApp._contact_count,
    ("GET", "/v3/marketing/contacts/{id}"): SandboxApp._get_contact,
    ("GET", "/v3/marketing/lists"): SandboxApp._get_lists,
    ("POST", "/v3/marketing/lists"): SandboxApp._create_list,
    ("GET", "/v3/marketing/lists/{id}"): SandboxApp._get_list,
    ("GET", "/v3/marketing/lists/{id}/contacts/count"): SandboxApp._list_contact_count,
    ("DELETE", "/v3/marketing/lists/{id}"): SandboxApp._delete_list,
    ("DELETE", "/v3/marketing/lists/{id}/contacts"): SandboxApp._remove_from_list,
    ("POST", "/v3/marketing/contacts/exports"): SandboxApp._start_export,
    ("GET", "/v3/marketing/contacts/exports"): SandboxApp._get_exports,
    ("GET", "/v3/marketing/contacts/exports/{id}"): SandboxApp._get_export,
    ("GET", "/v3/marketing/field_definitions"): SandboxApp._get_field_definitions,
    ("POST", "/v3/marketing/field_definitions"): SandboxApp._create_field_definition,
}


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _with_self(contact: dict[str, Any], base: str) -> dict[str, Any]:
    return {**contact, "_metadata": {"self": f"{base}/v3/marketing/contacts/{contact['id']}"}}


def _list_view(list_id: str, name: str, count: int, base: str) -> dict[str, Any]:
    return {
        "id": list_id,
        "name": name,
        "contact_count": count,
        "_metadata": {"self": f"{base}/v3/marketing/lists/{list_id}"},
    }


def _job_view(job: JobInfo, base: str) -> dict[str, Any]:
    results: dict[str, Any] = {
        "requested_count": job.requested_count,
        "created_count": job.created_count,
        "updated_count": job.updated_count,
        "deleted_count": job.deleted_count,
        "errored_count": job.errored_count,
    }
    if job.errored_count:
        results["errors_url"] = f"{base}/__sandbox/import-errors/{job.id}"
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "job_type": job.job_type,
        "results": results,
        "started_at": iso_timestamp(job.started_at),
    }
    if job.finished_at is not None:
        view["finished_at"] = iso_timestamp(job.finished_at)
    return view


def _export_view(export: ExportInfo, base: str) -> dict[str, Any]:
    """The spec's `ContactExport`; file URLs carry the export's signature, like presigned URLs."""
    view: dict[str, Any] = {
        "id": export.id,
        "status": export.status,
        "created_at": iso_timestamp(export.created_at),
        "updated_at": iso_timestamp(export.updated_at),
        "expires_at": iso_timestamp(export.expires_at),
    }
    if export.completed_at is not None:
        view["completed_at"] = iso_timestamp(export.completed_at)
    if export.status == "ready":
        view["urls"] = [
            f"{base}/__sandbox/export-files/{export.id}/{n}?sig={export.token}"
            for n in range(1, export.file_count + 1)
        ]
        view["contact_count"] = export.contact_count
    if export.status == "failure":
        view["message"] = export.message
    view["_metadata"] = {"self": f"{base}/v3/marketing/contacts/exports/{export.id}"}
    return view


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _page_offset(token: str) -> int | None:
    """The offset an opaque page token stands for; 0 for none, None for a forged one."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, number = text.partition(":")
    if prefix != "offset" or not number.isdigit():
        return None
    return int(number)


def build_app(config: SandboxConfig | None = None) -> SandboxApp:
    """The WSGI app for in-process use (werkzeug's test Client, or any WSGI server); its job
    thread runs until `close()`."""
    return SandboxApp(config or SandboxConfig())


# --- server and CLI --------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """The app logs each request itself (no query strings); werkzeug's access line goes."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SandboxServer:
    """The sandbox on a threaded HTTP server; `url` is known once constructed (port 0 works)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.app = build_app(config)
        try:
            self._server: BaseWSGIServer = make_server(
                config.host, config.port, self.app, threaded=True, request_handler=_QuietHandler
            )
        except BaseException:
            self.app.close()
            raise
        self._thread: threading.Thread | None = None
        host = config.host
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self._server.server_port}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self) -> Self:
        """Serve on a background thread (for in-process use)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop serving (idempotent) and stop the job thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.app.close()


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"SANDBOX_{name}", default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.local.sandbox",
        description="A stateful SendGrid Marketing Campaigns API for local runs and tests. "
        "Every flag can also be set as SANDBOX_<FLAG> (for example SANDBOX_PORT).",
    )
    d = Faults()

    def flag(name: str, kind: Callable[[str], Any], default: Any, text: str) -> None:
        env = name.upper().replace("-", "_")
        fallback = None if default is None else str(default)
        parser.add_argument(f"--{name}", type=kind, default=_env(env, fallback), help=text)

    flag("host", str, "127.0.0.1", "address to listen on (default %(default)s)")
    flag("port", int, 3030, "port to listen on; 0 picks a free one (default %(default)s)")
    flag("api-key", str, None, "the one accepted bearer key (default: any non-empty key)")
    flag("job-delay", float, d.job_delay, "seconds an upsert job stays pending")
    flag("rate-limit", int, d.rate_limit, "requests per window and API key")
    flag("rate-window", float, d.rate_window, "rate-limit window in seconds")
    flag("error-rate", float, d.error_rate, "fraction of /v3 requests answered 500")
    flag("throttle-rate", float, d.throttle_rate, "fraction of /v3 requests answered 429")
    flag("latency-ms", float, d.latency_ms, "milliseconds added to every /v3 request")
    flag("drop-rate", float, d.drop_rate, "fraction of /v3 requests whose connection is dropped")
    flag("contact-error-rate", float, d.contact_error_rate, "fraction of upserted contacts errored")
    flag("job-fail-rate", float, d.job_fail_rate, "fraction of import jobs that end failed")
    flag("export-delay", float, d.export_delay, "seconds a contact export stays pending")
    flag("export-fail-rate", float, d.export_fail_rate, "fraction of exports that end failure")
    flag("list-lag", float, d.list_lag, "seconds before list membership changes are visible")
    flag("lose-rate", float, d.lose_rate, "fraction of /v3 requests handled but never answered")
    flag("seed", int, None, "seed for the fault dice, for reproducible runs")
    flag("log-level", str, "INFO", "DEBUG, INFO, WARNING or ERROR (default %(default)s)")
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> tuple[SandboxConfig, str]:
    """(config, log level) from flags and SANDBOX_* variables; flags win."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
            latency_ms=args.latency_ms,
            drop_rate=args.drop_rate,
            contact_error_rate=args.contact_error_rate,
            job_fail_rate=args.job_fail_rate,
            job_delay=args.job_delay,
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            export_delay=args.export_delay,
            export_fail_rate=args.export_fail_rate,
            list_lag=args.list_lag,
            lose_rate=args.lose_rate,
        )
    except ValueError as exc:
        parser.error(str(exc))
    config = SandboxConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        seed=args.seed,
        faults=faults,
    )
    return config, str(args.log_level).upper()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until SIGTERM or SIGINT; prints one `sandbox listening on URL` line."""
    config, level = config_from_args(argv)
    configure_logging(level)
    server = SandboxServer(config)
    serve_until_signal(server.start, server.shutdown, lambda: f"sandbox listening on {server.url}")
    log.info("sandbox stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
