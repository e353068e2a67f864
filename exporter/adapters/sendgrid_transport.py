"""One request to SendGrid's API (`SendGridClient`'s transport): the API key, one pooled
keep-alive connection per host, a timeout on every call, no retries (queues retry, with the
delays SendGrid asks for), and SendGrid's answers as the errors of `exporter.ports.sendgrid`.

Rate limits are remembered per endpoint: `X-RateLimit-Remaining: 0` is honoured without spending
a request on a sure 429. The API key never appears in an exception, a repr or a log line; ids
never appear in a log line (endpoints are logged as templates).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3

from exporter.adapters.connectivity import classify, detail, origin
from exporter.adapters.settings import SendGridSettings
from exporter.core.errors import UNREACHABLE_KINDS, Unreachable, UnreachableKind
from exporter.core.redact import mask_emails
from exporter.ports.sendgrid import (
    ApiError,
    NotFound,
    RateLimited,
    Rejected,
    TransientError,
    Unauthorized,
)

log = logging.getLogger("exporter.adapters.sendgrid")


class SendGridUnreachable(Unreachable, TransientError):
    """No answer from SendGrid (refused, DNS, TLS, timeout, a dropped connection): a
    `TransientError` for the flow (the same message again later), `Unreachable` for the CLI and
    the connection test (not the key's fault)."""

    def __init__(self, base_url: str, call: str, exc: BaseException) -> None:
        kind: UnreachableKind = classify(exc)
        said = detail(exc, kind)
        reason = f"{UNREACHABLE_KINDS[kind]}: {said}" if said else UNREACHABLE_KINDS[kind]
        where = origin(base_url)
        message = (
            f"SendGrid did not answer {call} within the timeout ({where})"
            if kind == "timeout"
            else f"cannot reach SendGrid at {where} for {call} ({reason})"
        )
        super().__init__(
            "SendGrid",
            where,
            kind,
            detail=said,
            setting="SENDGRID_API_BASE_URL",
            message=message,
        )


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What `X-RateLimit-*` said on the latest answer; `reset_at` is epoch seconds."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None


class Transport:
    """One API key against one SendGrid base URL. Thread-safe (urllib3's pool is)."""

    def __init__(
        self,
        api_key: str,
        settings: SendGridSettings,
        *,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        if not api_key or not api_key.strip():
            raise Unauthorized("no SendGrid API key was given")
        self.settings = settings
        self.base = settings.base_url
        self._headers = {
            "Authorization": f"Bearer {api_key.strip()}",
            "Accept": "application/json",
            "User-Agent": "segment-sendgrid-exporter",
        }
        self.timeout = urllib3.Timeout(
            connect=settings.connect_timeout_seconds, read=settings.timeout_seconds
        )
        self._owns_pool = pool is None
        self.pool = pool or urllib3.PoolManager(num_pools=4, maxsize=8, retries=False)
        self._limits: dict[str, RateLimit] = {}

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base!r}, api_key=<hidden>)"

    @property
    def user_agent(self) -> str:
        return self._headers["User-Agent"]

    def close(self) -> None:
        """Let go of the keep-alive connections of the pool it made (a pool passed in belongs
        to the caller and is left alone); later calls work on new connections. See
        `SendGridClient.close`."""
        if self._owns_pool:
            self.pool.clear()

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | Iterator[bytes] | None = None,
        length: int | None = None,
    ) -> dict[str, Any]:
        """One request. A body given as chunks needs its `length` (sent as Content-Length, so
        the body is not chunk-encoded and streams straight through)."""
        endpoint = f"{method} {_template(path)}"
        self._respect_known_limit(endpoint)
        url = self.base + path + (f"?{urlencode(query, safe=',')}" if query else "")
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
            if not isinstance(body, bytes):
                if length is None:
                    raise ValueError("a body given as chunks needs its length")
                headers["Content-Length"] = str(length)
        started = time.monotonic()
        try:
            response = self.pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=self.timeout,
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise SendGridUnreachable(self.base, endpoint, exc) from None
        status = response.status
        limit = _rate_limit(response.headers)
        self._limits[endpoint] = limit
        log.debug(
            "sendgrid %s -> %s in %.0f ms (rate limit remaining %s)",
            endpoint,
            status,
            (time.monotonic() - started) * 1000,
            limit.remaining,
        )
        if 200 <= status < 300:
            return _decode(response.data)
        errors = _errors(response.data)
        if status == 429:
            raise RateLimited(
                f"SendGrid rate limit reached for {endpoint}",
                retry_after=_retry_after(response.headers, limit),
            )
        if status in (401, 403):
            raise Unauthorized(
                f"SendGrid refused the API key for {endpoint} (HTTP {status}); check that the "
                "key is current and has the Marketing Campaigns scopes",
                status=status,
                errors=errors,
            )
        if status == 404:
            raise NotFound(f"SendGrid: not found ({endpoint})", status=status, errors=errors)
        if status >= 500:
            raise TransientError(
                f"SendGrid failed on {endpoint} (HTTP {status})", status=status, errors=errors
            )
        raise Rejected(
            f"SendGrid rejected {endpoint} (HTTP {status})", status=status, errors=errors
        )

    def _respect_known_limit(self, endpoint: str) -> None:
        """Honour `X-RateLimit-Remaining: 0` without spending a request on a sure 429."""
        limit = self._limits.get(endpoint)
        if limit is None or limit.remaining != 0 or limit.reset_at is None:
            return
        wait = limit.reset_at - time.time()
        if wait > 0:
            raise RateLimited(
                f"SendGrid rate limit for {endpoint} is used up until its reset",
                retry_after=max(1.0, wait),
                status=None,
            )


def _template(path: str) -> str:
    """`/v3/marketing/lists/<id>/contacts` for logs and rate-limit keys (ids are not logged)."""
    parts = path.split("/")
    known = {"v3", "marketing", "contacts", "lists", "imports", "search", "emails", "count"}
    known |= {"field_definitions", "exports"}
    return "/".join(p if p in known or not p else "{id}" for p in parts)


def _decode(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        raise TransientError("SendGrid answered with a body that is not JSON") from None
    return value if isinstance(value, dict) else {"result": value}


def _errors(data: bytes) -> list[ApiError]:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        text = data[:200].decode("utf-8", "replace").strip()
        return [ApiError(mask_emails(text))] if text else []
    items = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    return [
        ApiError(
            mask_emails(str(item.get("message", ""))),
            mask_emails(str(item["field"])) if item.get("field") else None,
        )
        for item in items
        if isinstance(item, dict)
    ]


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _rate_limit(headers: Mapping[str, str]) -> RateLimit:
    reset = _int(headers.get("X-RateLimit-Reset"))
    return RateLimit(
        limit=_int(headers.get("X-RateLimit-Limit")),
        remaining=_int(headers.get("X-RateLimit-Remaining")),
        reset_at=float(reset) if reset is not None else None,
    )


def _retry_after(headers: Mapping[str, str], limit: RateLimit) -> float:
    """Seconds until SendGrid will take requests again. The reset time is SendGrid's clock,
    so it is measured against the answer's `Date` header, not ours."""
    retry = headers.get("Retry-After")
    if retry is not None:
        seconds = _int(retry)
        if seconds is None:
            try:
                seconds = int(email.utils.parsedate_to_datetime(retry).timestamp() - time.time())
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return float(max(1, seconds))
    if limit.reset_at is not None:
        now = time.time()
        date = headers.get("Date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                now = email.utils.parsedate_to_datetime(date).timestamp()
        return max(1.0, limit.reset_at - now)
    return 1.0
