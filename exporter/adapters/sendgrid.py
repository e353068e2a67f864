"""SendGrid Marketing Campaigns client: the calls an export makes, with errors a caller can act on.

Built on urllib3 rather than the official `sendgrid` package, whose transport
(`python_http_client` on urllib) does not fit us:
- it re-serialises every body with `json.dumps` (ASCII-escaped), so a body we packed and measured
  at 5.9 MB of UTF-8 could grow past SendGrid's 6 MB limit, and bytes cannot be sent as they are;
- it logs request headers at DEBUG, which include the API key, and response bodies, which
  include email addresses;
- it opens a new connection (TLS handshake) for every request, and timeouts or connection
  errors surface as raw urllib exceptions.

Here: one pooled keep-alive connection per host, a timeout on every call, no retries inside the
client (queues retry, with the delays SendGrid asks for), and errors as the types of
`exporter.ports.sendgrid`. The API key never appears in an exception, a repr or a log line.

A list's full membership comes from a contact export (`start_export`, `export_status`, then
`open_export_file` per URL; `exporter.core.list_export` reads the files). Export files live
behind presigned URLs on another host (S3): they are fetched without the API key, only over
https (or from the configured base URL itself, for the local sandbox), streamed and capped at
`MAX_EXPORT_FILE_BYTES`; their URLs (whose query is a credential) are never logged.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import urllib3

from exporter.adapters.settings import SendGridSettings
from exporter.core.batching import ContactStream, upsert_body, upsert_body_stream
from exporter.core.redact import mask_emails
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
    TransientError,
    Unauthorized,
)

log = logging.getLogger(__name__)


LIST_PAGE_SIZE: Final = 1000


MAX_EXPORT_FILE_BYTES: Final = 4 * 1024**3
"""At most this many bytes of one export file are read (as sent: gzip-compressed). SendGrid
splits an export by `max_file_size` (1,000 MB by default here), and gzip shrinks contact rows
about 4:1, so a real file stays far below; beyond it the download fails as `Rejected`."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What `X-RateLimit-*` said on the latest answer; `reset_at` is epoch seconds."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None


class SendGridClient:
    """One API key against one SendGrid base URL. Thread-safe (urllib3's pool is)."""

    def __init__(
        self,
        api_key: str,
        settings: SendGridSettings | None = None,
        *,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        if not api_key or not api_key.strip():
            raise Unauthorized("no SendGrid API key was given")
        self.settings = settings or SendGridSettings()
        self._base = self.settings.base_url
        self._headers = {
            "Authorization": f"Bearer {api_key.strip()}",
            "Accept": "application/json",
            "User-Agent": "segment-sendgrid-exporter",
        }
        self._timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout_seconds, read=self.settings.timeout_seconds
        )
        self._owns_pool = pool is None
        self._pool = pool or urllib3.PoolManager(num_pools=4, maxsize=8, retries=False)
        self._limits: dict[str, RateLimit] = {}

    def __repr__(self) -> str:
        return f"SendGridClient(base_url={self._base!r}, api_key=<hidden>)"

    def close(self) -> None:
        """Let go of the keep-alive connections of the pool this client made (a pool passed in
        belongs to the caller and is left alone). Safe to call more than once.

        Calls after close still work, on new connections, rather than fail: a client replaced on
        key rotation may still be sending a batch on another thread. urllib3 drops its host pools
        without closing them under a request in flight; each pool's idle connections are closed
        as soon as no request holds it (at once when none does).
        """
        if self._owns_pool:
            self._pool.clear()

    # --- the calls an export makes -----------------------------------------------------------

    def upsert(self, list_ids: Sequence[str], contacts: str | bytes | ContactStream) -> str:
        """Queue an upsert of a JSON array of contacts into `list_ids`; returns the job id.

        A `ContactStream` (a batch blob being read) is sent as it is read, never held whole.
        202 means queued, not imported: follow the job with `import_status`.
        """
        if isinstance(contacts, ContactStream):
            length, chunks = upsert_body_stream(list_ids, contacts)
            answer = self._call("PUT", "/v3/marketing/contacts", body=chunks, length=length)
        else:
            body = upsert_body(list_ids, contacts)
            answer = self._call("PUT", "/v3/marketing/contacts", body=body)
        return str(_require(answer, "job_id"))

    def import_status(self, job_id: str) -> ImportJob:
        answer = self._call("GET", f"/v3/marketing/contacts/imports/{quote(job_id, safe='')}")
        results = answer.get("results") or {}
        return ImportJob(
            id=str(answer.get("id", job_id)),
            status=str(_require(answer, "status")),
            requested=int(results.get("requested_count") or 0),
            created=int(results.get("created_count") or 0),
            updated=int(results.get("updated_count") or 0),
            errored=int(results.get("errored_count") or 0),
            errors_url=results.get("errors_url") or None,
        )

    def field_definitions(self) -> FieldDefinitions:
        answer = self._call("GET", "/v3/marketing/field_definitions")
        return FieldDefinitions(
            custom={d.name: d for d in map(_field, answer.get("custom_fields") or [])},
            reserved={d.name: d for d in map(_field, answer.get("reserved_fields") or [])},
        )

    def create_field(self, name: str, field_type: str) -> FieldDefinition:
        answer = self._call(
            "POST",
            "/v3/marketing/field_definitions",
            body=_json({"name": name, "field_type": field_type}),
        )
        return _field(answer)

    def get_list(self, list_id: str) -> ContactList:
        return _list(self._call("GET", f"/v3/marketing/lists/{quote(list_id, safe='')}"))

    def lists(self) -> Iterator[ContactList]:
        """Every list of the account, page by page."""
        query: dict[str, str] = {"page_size": str(LIST_PAGE_SIZE)}
        while True:
            answer = self._call("GET", "/v3/marketing/lists", query=query)
            for item in answer.get("result") or []:
                yield _list(item)
            # Follow only the page token, never the absolute `next` URL: it names a host, and
            # our key must go nowhere but the configured base URL.
            token = _page_token((answer.get("_metadata") or {}).get("next"))
            if not token or token == query.get("page_token"):
                return
            query["page_token"] = token

    def find_list(self, name: str) -> ContactList | None:
        return next((lst for lst in self.lists() if lst.name == name), None)

    def create_list(self, name: str) -> ContactList:
        return _list(self._call("POST", "/v3/marketing/lists", body=_json({"name": name})))

    def list_count(self, list_id: str) -> int:
        path = f"/v3/marketing/lists/{quote(list_id, safe='')}/contacts/count"
        return int(_require(self._call("GET", path), "contact_count"))

    def search_emails(self, emails: Iterable[str]) -> dict[str, str]:
        """Contact ids of those emails that exist (lower-cased email -> id), 100 per call."""
        found: dict[str, str] = {}
        for chunk in _chunks(emails, SEARCH_CHUNK):
            try:
                answer = self._call(
                    "POST", "/v3/marketing/contacts/search/emails", body=_json({"emails": chunk})
                )
            except NotFound:  # SendGrid answers 404 when none of the chunk exists
                continue
            for address, entry in (answer.get("result") or {}).items():
                contact = (entry or {}).get("contact") or {}
                if contact.get("id"):
                    found[str(address).lower()] = str(contact["id"])
        return found

    def remove_from_list(self, list_id: str, contact_ids: Iterable[str]) -> list[str]:
        """Remove contacts from one list (never from the account); returns the job ids."""
        path = f"/v3/marketing/lists/{quote(list_id, safe='')}/contacts"
        jobs = []
        for chunk in _chunks(contact_ids, REMOVE_CHUNK):
            answer = self._call("DELETE", path, query={"contact_ids": ",".join(chunk)})
            jobs.append(str(answer.get("job_id") or ""))
        return jobs

    def delete_list(self, list_id: str, *, delete_contacts: bool = False) -> None:
        """Delete a list; with `delete_contacts` also its contacts from the account (which
        counts against the monthly contact allotment when they come back: tests and tooling)."""
        self._call(
            "DELETE",
            f"/v3/marketing/lists/{quote(list_id, safe='')}",
            query={"delete_contacts": "true" if delete_contacts else "false"},
        )

    # --- the list's real membership: contact exports ----------------------------------------

    def start_export(self, list_id: str, *, max_file_size_mb: int = 1000) -> str:
        """Start a CSV export of one list's members (no notification email); returns its id.
        Follow it with `export_status`."""
        body = _json(
            {
                "list_ids": [list_id],
                "file_type": "csv",
                "max_file_size": max_file_size_mb,
                "notifications": {"email": False},
            }
        )
        return str(_require(self._call("POST", "/v3/marketing/contacts/exports", body=body), "id"))

    def export_status(self, export_id: str) -> ContactExport:
        answer = self._call("GET", f"/v3/marketing/contacts/exports/{quote(export_id, safe='')}")
        urls = answer.get("urls")
        count = answer.get("contact_count")
        return ContactExport(
            id=str(answer.get("id", export_id)),
            status=str(_require(answer, "status")),
            urls=tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
            contact_count=(
                int(count)
                if isinstance(count, int | float) and not isinstance(count, bool)
                else None
            ),
            message=mask_emails(str(answer.get("message") or "")),
        )

    def open_export_file(self, url: str) -> IO[bytes]:
        """Stream one export file (its bytes as sent: gzip) without the API key; the caller
        closes it. Only https:// URLs, or URLs on the configured base URL's own scheme, host
        and port (the local sandbox over http), are fetched; others are `Rejected`.

        A 403/404/410 is `ExportFileGone` (expired or gone: start a new export); 5xx, timeouts
        and connection errors (also mid-file) are `TransientError`; more than
        `MAX_EXPORT_FILE_BYTES` is `Rejected`. SendGrid's rate limits do not apply here.
        """
        where = _export_url_origin(url, self._base)
        try:
            response = self._pool.request(
                "GET",
                url,
                headers={"Accept": "*/*", "User-Agent": self._headers["User-Agent"]},
                timeout=self._timeout,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
        except urllib3.exceptions.TimeoutError:
            raise TransientError(
                f"the export file server {where} did not answer within the timeout"
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(
                f"cannot reach the export file server {where} ({type(exc).__name__})"
            ) from None
        status = response.status
        log.debug("sendgrid export file from %s -> %s", where, status)
        if status != 200:
            _discard(response)
            if status in (403, 404, 410):
                raise ExportFileGone(
                    f"the export file has expired or is gone (HTTP {status} from {where}); "
                    "start a new export",
                    status=status,
                )
            if status == 429:
                raise RateLimited(
                    f"the export file server {where} asks to slow down",
                    retry_after=_retry_after(response.headers, RateLimit()),
                )
            if status >= 500:
                raise TransientError(
                    f"the export file server {where} failed (HTTP {status})", status=status
                )
            raise Rejected(
                f"the export file server {where} refused the download (HTTP {status})",
                status=status,
            )
        length = _int(response.headers.get("Content-Length"))
        if length is not None and length > MAX_EXPORT_FILE_BYTES:
            _discard(response)
            raise Rejected(
                f"the export file is {length:,} bytes, more than the "
                f"{MAX_EXPORT_FILE_BYTES:,} this client reads"
            )
        return io.BufferedReader(_ExportFile(response, where), buffer_size=1 << 16)

    # --- transport -------------------------------------------------------------------------

    def _call(
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
        url = self._base + path + (f"?{urlencode(query, safe=',')}" if query else "")
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
            if not isinstance(body, bytes):
                if length is None:
                    raise ValueError("a body given as chunks needs its length")
                headers["Content-Length"] = str(length)
        started = time.monotonic()
        try:
            response = self._pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.TimeoutError:
            raise TransientError(f"SendGrid did not answer {endpoint} within the timeout") from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(
                f"cannot reach SendGrid for {endpoint} ({type(exc).__name__})"
            ) from None
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


def _export_url_origin(url: str, base: str) -> str:
    """`scheme://host[:port]` of an export file URL we may fetch, else `Rejected`: https, or
    exactly the base URL's scheme, host and port. Never a path, query or credentials (in the
    message either: a presigned URL's query is a credential)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        base_parts = urlsplit(base)
        base_port = base_parts.port
    except (TypeError, ValueError):
        raise Rejected("the export file URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host or scheme not in ("http", "https"):
        shown = f"a {scheme}: URL" if scheme else "a URL without a scheme"
        raise Rejected(
            f"refusing to fetch an export file from {shown}: only https:// URLs (or the "
            "configured SendGrid base URL) are allowed"
        )
    defaults = {"http": 80, "https": 443}
    where = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    if parts.username is not None or parts.password is not None:
        raise Rejected(f"refusing to fetch an export file from a URL with credentials ({where})")
    same_origin = (
        scheme == base_parts.scheme.lower()
        and host == (base_parts.hostname or "").lower()
        and (port or defaults[scheme]) == (base_port or defaults.get(scheme))
    )
    if scheme != "https" and not same_origin:
        raise Rejected(
            f"refusing to fetch an export file over plain http from {where}: only https:// URLs "
            "(or the configured SendGrid base URL) are allowed"
        )
    return where


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Let go of an answer whose body we do not want: its connection is closed, not reused."""
    response.close()
    response.release_conn()


class _ExportFile(io.RawIOBase):
    """An export file's body as it arrives, capped at MAX_EXPORT_FILE_BYTES, with transport
    errors as `TransientError`s. Closing it closes the connection unless the body was read."""

    def __init__(self, response: urllib3.BaseHTTPResponse, where: str) -> None:
        super().__init__()
        self._response = response
        self._where = where
        self._read = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), MAX_EXPORT_FILE_BYTES + 1 - self._read)
        try:
            data = self._response.read(max(want, 1))
        except urllib3.exceptions.TimeoutError:
            raise TransientError(
                f"the export file server {self._where} stopped sending within the timeout"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(
                f"the export file download from {self._where} broke off ({type(exc).__name__})"
            ) from None
        if not data:
            self._done = True
            return 0
        self._read += len(data)
        if self._read > MAX_EXPORT_FILE_BYTES:
            raise Rejected(
                f"the export file is larger than the {MAX_EXPORT_FILE_BYTES:,} bytes this "
                "client reads"
            )
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            if not self._done:
                self._response.close()
            self._response.release_conn()
        super().close()


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _decode(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        raise TransientError("SendGrid answered with a body that is not JSON") from None
    return value if isinstance(value, dict) else {"result": value}


def _require(answer: Mapping[str, Any], key: str) -> Any:
    if key not in answer:
        raise TransientError(f"SendGrid's answer lacks {key!r}")
    return answer[key]


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


def _page_token(next_url: object) -> str | None:
    if not isinstance(next_url, str) or not next_url:
        return None
    tokens = parse_qs(urlsplit(next_url).query).get("page_token")
    return tokens[0] if tokens else None


def _field(item: Mapping[str, Any]) -> FieldDefinition:
    return FieldDefinition(
        id=str(item["id"]), name=str(item["name"]), field_type=str(item["field_type"])
    )


def _list(item: Mapping[str, Any]) -> ContactList:
    return ContactList(
        id=str(item["id"]),
        name=str(item.get("name", "")),
        contact_count=int(item.get("contact_count") or 0),
    )


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
