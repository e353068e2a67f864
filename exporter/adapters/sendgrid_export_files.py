"""Downloading a contact export's files: they live behind presigned URLs on another host (S3),
so they are fetched without the API key, only over https (or from the configured base URL
itself, for the local sandbox), streamed and capped at `MAX_EXPORT_FILE_BYTES`; their URLs
(whose query is a credential) are never logged. `exporter.core.list_export` reads them.
"""

from __future__ import annotations

import io
import logging
from typing import IO, Any, Final
from urllib.parse import urlsplit

import urllib3

from exporter.adapters.sendgrid_transport import RateLimit, Transport, _int, _retry_after
from exporter.ports.sendgrid import ExportFileGone, RateLimited, Rejected, TransientError

log = logging.getLogger("exporter.adapters.sendgrid")


MAX_EXPORT_FILE_BYTES: Final = 4 * 1024**3
"""At most this many bytes of one export file are read (as sent: gzip-compressed). SendGrid
splits an export by `max_file_size` (1,000 MB by default here), and gzip shrinks contact rows
about 4:1, so a real file stays far below; beyond it the download fails as `Rejected`."""


def open_export_file(http: Transport, url: str) -> IO[bytes]:
    """Stream one export file (its bytes as sent: gzip) without the API key; the caller
    closes it. Only https:// URLs, or URLs on the configured base URL's own scheme, host
    and port (the local sandbox over http), are fetched; others are `Rejected`.

    A 403/404/410 is `ExportFileGone` (expired or gone: start a new export); 5xx, timeouts
    and connection errors (also mid-file) are `TransientError`; more than
    `MAX_EXPORT_FILE_BYTES` is `Rejected`. SendGrid's rate limits do not apply here.
    """
    where = _export_url_origin(url, http.base)
    try:
        response = http.pool.request(
            "GET",
            url,
            headers={"Accept": "*/*", "User-Agent": http.user_agent},
            timeout=http.timeout,
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
