"""Errors as types: a caller tells "this input is wrong" from "retry later" without parsing text.

Every message is meant for a person: it names the problem and where it is, and never carries an
email address or a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal


class ExporterError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(ExporterError):
    """The input (a file, a mapping, a setting) is wrong: retrying will not help, fixing it will."""


class SnapshotError(InputError):
    """A snapshot file cannot be read as a whole (the run fails with this message).

    `code` is stable and machine-readable; `line` (1-based) and `offset` (0-based byte offset,
    in the decompressed data for gzip files) say where, when known.
    """

    def __init__(
        self, code: str, message: str, *, line: int | None = None, offset: int | None = None
    ) -> None:
        where = []
        if line is not None:
            where.append(f"line {line:,}")
        if offset is not None:
            where.append(f"byte offset {offset:,}")
        text = f"{message} ({', '.join(where)})" if where else message
        super().__init__(text)
        self.code = code
        self.line = line
        self.offset = offset


class MappingError(InputError):
    """The field mapping does not fit the snapshot or names an unknown field."""


class ExportFormatError(ExporterError):
    """A SendGrid contact export file cannot be read: not gzip or UTF-8 CSV, truncated, without
    an EMAIL column, or past one of `exporter.core.list_export`'s bounds. The message says which,
    never which contact. Reading the same file again will not help; a new export may."""


UnreachableKind = Literal["refused", "dns", "tls", "timeout", "other"]
"""Why a service could not be reached: the connection was refused (nothing listens there), its
host name does not resolve, the TLS handshake failed (certificate, or https spoken to http), no
answer came in time, or the connection failed otherwise (reset, dropped)."""


UNREACHABLE_KINDS: Final[Mapping[UnreachableKind, str]] = {
    "refused": "connection refused",
    "dns": "DNS: host name not resolved",
    "tls": "TLS handshake failed",
    "timeout": "timed out",
    "other": "connection failed",
}


class Unreachable(ExporterError):
    """A service (storage, SendGrid, Key Vault) could not be reached: no answer came back.

    `service` names it as a person would, `endpoint` is where it was looked for (a URL without
    its query: never a SAS token), `kind` says why (`UnreachableKind`), `detail` adds what the
    network said (a TLS reason, the timeout), and `setting` names the app setting that points
    there. The adapters raise it (or a subclass that is also their port's retryable error), so
    a caller tells "unreachable" from "refused the key" without reading text.
    """

    def __init__(
        self,
        service: str,
        endpoint: str,
        kind: UnreachableKind,
        *,
        detail: str = "",
        setting: str = "",
        message: str | None = None,
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self.kind: UnreachableKind = kind
        self.detail = detail
        self.setting = setting
        super().__init__(message or self.summary)

    @property
    def reason(self) -> str:
        """`connection refused`, `TLS handshake failed: CERTIFICATE_VERIFY_FAILED`, ..."""
        text = UNREACHABLE_KINDS[self.kind]
        return f"{text}: {self.detail}" if self.detail else text

    @property
    def summary(self) -> str:
        """`storage is unreachable at http://127.0.0.1:10000/devstoreaccount1 (connection
        refused)`."""
        return f"{self.service} is unreachable at {self.endpoint} ({self.reason})"

    def advice(self, where: str = "") -> str:
        """What to check, by kind; `where` says where the setting lives (`in FILE`)."""
        setting = f"{self.setting}{f' {where}' if where else ''}" if self.setting else "its URL"
        return {
            "refused": f"nothing accepts connections there: check that it runs, and {setting}",
            "dns": f"check the host name in {setting}",
            "tls": f"check the server's certificate, and https:// or http:// in {setting}",
            "timeout": f"check the network (a firewall or proxy in the way?) and {setting}",
            "other": f"check that it runs, the network, and {setting}",
        }[self.kind]
