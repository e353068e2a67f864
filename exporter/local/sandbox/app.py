"""The sandbox as a WSGI application: `/v3` requests through faults, auth, the rate limit and the
spec to their handlers (`api_*`), `/__sandbox/` to the control endpoints (`control`).

A /v3 request meets, in order: latency, a dropped connection, an injected 500, an injected 429,
bearer-key auth (401: no key, or not a key it accepts, see `keys`), the rate limit (429), the
route (404; 405 with `Allow`; 501 for the spec's endpoints the sandbox does not implement), the
body cap (413 over 6,000,000 bytes: no request body is read further), validation against the
spec (400), its handler (500 if it fails), and then maybe a lost answer. Logs carry method,
path, status and duration, never a body, a query string (export signatures) or the API key.
With a state file (`persist`), every request but a GET, a reset and every job or export the
job thread finishes lead to a save a little later (`saver`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Self

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from exporter.local.sandbox import api_contacts, api_exports, api_fields, api_lists
from exporter.local.sandbox.answers import (
    Call,
    Handler,
    error_response,
    errors_response,
)
from exporter.local.sandbox.api_contacts import MAX_UPSERT_BYTES
from exporter.local.sandbox.config import SandboxConfig
from exporter.local.sandbox.control import control
from exporter.local.sandbox.faults import Dice, DroppedConnection, Faults, drop_connection
from exporter.local.sandbox.jobs import JobRunner
from exporter.local.sandbox.keys import AcceptedKeys
from exporter.local.sandbox.persist import load
from exporter.local.sandbox.rate_limit import RateLimiter, rate_headers
from exporter.local.sandbox.saver import Saver
from exporter.local.sandbox.spec import Route, find_route, routes, spec_problems
from exporter.local.sandbox.store import SandboxStore

if TYPE_CHECKING:  # the WSGI protocol types live in typeshed only
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("exporter.local.sandbox")

MAX_BODY_BYTES: Final = MAX_UPSERT_BYTES
"""No request body may be larger; the sandbox never reads more than this into memory."""

HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("PUT", "/v3/marketing/contacts"): api_contacts.upsert_contacts,
    ("GET", "/v3/marketing/contacts/imports/{id}"): api_contacts.get_import,
    ("POST", "/v3/marketing/contacts/search/emails"): api_contacts.search_emails,
    ("GET", "/v3/marketing/contacts/count"): api_contacts.contact_count,
    ("GET", "/v3/marketing/contacts/{id}"): api_contacts.get_contact,
    ("GET", "/v3/marketing/lists"): api_lists.get_lists,
    ("POST", "/v3/marketing/lists"): api_lists.create_list,
    ("GET", "/v3/marketing/lists/{id}"): api_lists.get_list,
    ("GET", "/v3/marketing/lists/{id}/contacts/count"): api_lists.list_contact_count,
    ("DELETE", "/v3/marketing/lists/{id}"): api_lists.delete_list,
    ("DELETE", "/v3/marketing/lists/{id}/contacts"): api_lists.remove_from_list,
    ("POST", "/v3/marketing/contacts/exports"): api_exports.start_export,
    ("GET", "/v3/marketing/contacts/exports"): api_exports.get_exports,
    ("GET", "/v3/marketing/contacts/exports/{id}"): api_exports.get_export,
    ("GET", "/v3/marketing/field_definitions"): api_fields.get_field_definitions,
    ("POST", "/v3/marketing/field_definitions"): api_fields.create_field_definition,
}
"""The handler of each implemented (method, path of the spec)."""


class _BodyRequest(Request):
    max_content_length = MAX_BODY_BYTES


class SandboxApp:
    """The WSGI application, with its store, the thread that finishes import jobs, and (with a
    state file) the thread that saves the store.

    Use `close()` (or `with`) to stop the threads (and save the state) when used in-process.
    Raises `SettingsFileError` (the keys' file) or `StateFileError` when they cannot be read.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.keys = AcceptedKeys(config.api_key, config.keys_from)
        self.store = SandboxStore()
        self._saver: Saver | None = None
        if config.state_file is not None:
            loaded = load(self.store, config.state_file)
            if loaded is None:
                log.info("no sandbox state at %s yet: starting empty", config.state_file)
            else:
                log.info(
                    "sandbox state loaded from %s: %d contacts, %d lists, %d import jobs",
                    config.state_file,
                    loaded["contacts"],
                    loaded["lists"],
                    loaded["jobs"],
                )
            self._saver = Saver(self.store, config.state_file, config.save_interval)
            self._saver.start()
        self._faults = config.faults
        self._dice = Dice(config.seed)
        self._limiter = RateLimiter()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._counts_lock = threading.Lock()
        routes()  # load the specs before the first request, not during it
        self._jobs = JobRunner(self.store, lambda: self._faults, self._dice, self.changed)
        self._jobs.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the job thread; with a state file, save what changed since the last save."""
        self._jobs.close()
        if self._saver is not None:
            self._saver.close()
            self._saver = None

    def changed(self) -> None:
        """The store changed (or may have): save it soon, when it is kept in a file."""
        if self._saver is not None:
            self._saver.changed()

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, changes: Mapping[str, Any]) -> Faults:
        self._faults = self._faults.updated(changes)
        self._jobs.wake()
        return self._faults

    def reset(self) -> None:
        """All state, counters and rate windows cleared; faults and randomness as at startup."""
        self.store.reset()
        self._limiter.clear()
        with self._counts_lock:
            self._counts.clear()
        self._dice.reseed()
        self._faults = self.config.faults
        self.changed()

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
            response = control(self, request)
            level = logging.DEBUG
        else:
            response = error_response(404, "not found")
        ms = (time.perf_counter() - started) * 1000
        log.log(level, "%s %s %s %.1fms", request.method, request.path, response.status_code, ms)
        return response(environ, start_response)

    def count(self, key: str, status: str) -> None:
        with self._counts_lock:
            self._counts[(key, status)] += 1

    def _v3(self, request: Request) -> Response:
        """Latency, drop, injected 500, injected 429, auth, rate limit, validation, handler,
        then maybe a lost answer."""
        faults = self._faults
        found = find_route(request.path)
        key = f"{request.method} {found[0].template if found else '(unknown path)'}"
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000)
        if self._dice.roll(faults.drop_rate):
            self.count(key, "dropped")
            drop_connection(request)
        token = _bearer(request)
        now = time.time()
        limit = faults.rate_limit
        if self._dice.roll(faults.error_rate):
            remaining, reset = self._limiter.peek(token or "", now, limit, faults.rate_window)
            response = error_response(500, "internal server error")
            response.headers["X-Sandbox-Fault"] = "error"
        elif self._dice.roll(faults.throttle_rate):
            remaining, reset = 0, math.ceil(now + 1)
            response = error_response(429, "too many requests")
            response.headers["X-Sandbox-Fault"] = "throttle"
        elif token is None or not self.keys.accepts(token):
            remaining, reset = self._limiter.peek(token or "", now, limit, faults.rate_window)
            response = error_response(401, "authorization required")
        else:
            allowed, remaining, reset = self._limiter.hit(token, now, limit, faults.rate_window)
            if not allowed:
                response = error_response(429, "too many requests")
            else:
                try:
                    response = self._dispatch(request, found)
                except Exception:
                    log.exception("%s %s failed inside the sandbox", request.method, request.path)
                    response = error_response(500, "internal sandbox error")
                if request.method.upper() != "GET":
                    self.changed()
        response.headers.update(rate_headers(limit, remaining, reset))
        if self._dice.roll(faults.lose_rate):
            self.count(key, "lost")
            drop_connection(request, outcome="lost")
        self.count(key, str(response.status_code))
        return response

    def _dispatch(self, request: Request, found: tuple[Route, tuple[str, ...]] | None) -> Response:
        if found is None:
            return error_response(404, "not found")
        route, params = found
        method = request.method.upper()
        if method not in route.methods:
            response = error_response(405, "method not allowed")
            response.headers["Allow"] = ", ".join(sorted(route.methods))
            return response
        handler = HANDLERS.get((method, route.template))
        if handler is None:
            return error_response(
                501, f"{method} {route.template} is not implemented by the sandbox"
            )
        try:
            # Checks Content-Length before reading, and stops reading at the cap.
            raw = request.get_data(cache=True)
        except RequestEntityTooLarge:
            return error_response(413, f"request body must be at most {MAX_BODY_BYTES:,} bytes")
        except ClientDisconnected:
            # The client gave up mid-body (a worker stopped, a removed destination's upload cut
            # short): nothing was applied; one line, not a 500 with a traceback.
            log.info("%s %s: the client went away before its body arrived", method, route.template)
            return error_response(400, "the request body ended before its Content-Length")
        body: Any = None
        if method in route.with_body:
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return error_response(400, "invalid JSON body")
        status, problems = spec_problems(route.openapi, request)
        if problems:
            return errors_response(status, problems)
        call = Call(
            request,
            params,
            body,
            request.host_url.rstrip("/"),
            store=self.store,
            faults=self._faults,
            wake=self._jobs.wake,
        )
        return handler(call)

    def request_counts(self) -> dict[str, int]:
        """{"PUT /v3/marketing/contacts 202": 3, ...}: flat, so a test can sum what it wants.
        /v3 requests and export file downloads; the status is "dropped" or "lost" for those
        answered with a closed connection."""
        with self._counts_lock:
            return {f"{key} {status}": n for (key, status), n in sorted(self._counts.items())}


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def build_app(config: SandboxConfig | None = None) -> SandboxApp:
    """The WSGI app for in-process use (werkzeug's test Client, or any WSGI server); its job
    thread runs until `close()`."""
    return SandboxApp(config or SandboxConfig())
