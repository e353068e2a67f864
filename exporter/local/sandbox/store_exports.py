"""The store's contact exports: queued, then written once from the membership visible when they
fall due, and kept while they are among the latest.

`submit_export` queues one; `finish_export` (the job thread, once it is due) takes the membership
visible at that moment and writes the files once, gzip-compressed in memory, split so that no
file holds more than `max_file_bytes` uncompressed (at least one row each). Only the files of the
latest `KEPT_EXPORTS` exports are kept; older ones have expired. Rows are written in chunks,
each under the lock (about 30 ms), so a million-member export does not stall the API and takes
the compressed files plus a chunk of rows, never one giant string. See `EXPORT_CSV_COLUMNS` for
the CSV format.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import secrets
import uuid
import zlib
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from exporter.local.sandbox.store_model import (
    CustomField,
    Expired,
    ExportFileType,
    ExportInfo,
    ExportStatusName,
    Forbidden,
    NotFound,
    iso_timestamp,
)
from exporter.local.sandbox.store_state import FIELDS_DECODER, StoreState, decode_fields

MB: Final = 1_000_000
"""What `max_file_size` counts in (SendGrid says MB; the sandbox takes 10**6 bytes)."""
KEPT_EXPORTS: Final = 20
"""The files of this many latest exports are kept; older export URLs answer "expired"."""
EXPORT_LIFETIME: Final = 72 * 3600
"""Seconds from completion to an export's `expires_at` (the sandbox's choice: SendGrid does not
say). The files are not removed at that time, only when `KEPT_EXPORTS` newer ones exist."""
_EXPORT_CHUNK_ROWS: Final = 5_000
"""Rows written (and compressed) per hold of the lock while an export's files are built: about
30 ms each."""
_FLUSH_BYTES: Final = 256 * 1024

EXPORT_CSV_COLUMNS: Final[tuple[str, ...]] = (
    "EMAIL",
    "FIRST_NAME",
    "LAST_NAME",
    "ADDRESS_LINE_1",
    "ADDRESS_LINE_2",
    "CITY",
    "STATE_PROVINCE_REGION",
    "POSTAL_CODE",
    "COUNTRY",
    "ALTERNATE_EMAILS",
    "PHONE_NUMBER",
    "WHATSAPP",
    "LINE",
    "FACEBOOK",
    "UNIQUE_NAME",
    "PHONE_NUMBER_ID",
    "EXTERNAL_ID",
    "ANONYMOUS_ID",
    "CREATED_AT",
    "UPDATED_AT",
    "CONTACT_ID",
)
"""The reserved columns of a CSV export, in order; one column per custom field definition
follows, headed by the field's name as defined (in definition order).

This is our best knowledge of SendGrid's real CSV export, not a documented format: a header row,
then one row per member, RFC 4180 (comma, CRLF, quotes only where needed, doubled inside).
Values as stored: "" when unset; ALTERNATE_EMAILS joined with ","; timestamps ISO 8601 (UTC, Z);
custom Number values as JSON writes the stored number (12, 12.5), Date and Text as stored.
A JSON export (file_type json) is JSON Lines: one object per member with the lower-case names
(`contact_id`, `email`, the reserved fields, `alternate_emails` as an array, `custom_fields` as
{name: value}, `created_at`, `updated_at`)."""

# Reserved text fields between ALTERNATE_EMAILS and CREATED_AT, and before it (after EMAIL).
_EXPORT_TEXT_BEFORE: Final = tuple(c.lower() for c in EXPORT_CSV_COLUMNS[1:9])
_EXPORT_TEXT_AFTER: Final = tuple(c.lower() for c in EXPORT_CSV_COLUMNS[10:18])


@dataclass(slots=True)
class _Export:
    id: str
    list_ids: tuple[str, ...]
    file_type: ExportFileType
    max_file_bytes: int
    due: float
    created_at: float
    updated_at: float
    token: str
    status: ExportStatusName = "pending"
    completed_at: float | None = None
    contact_count: int | None = None
    message: str = ""
    files: list[bytes] | None = None
    file_count: int = 0

    def info(self) -> ExportInfo:
        return ExportInfo(
            id=self.id,
            status=self.status,
            list_ids=self.list_ids,
            file_type=self.file_type,
            created_at=self.created_at,
            updated_at=self.updated_at,
            completed_at=self.completed_at,
            expires_at=(self.completed_at or self.created_at) + EXPORT_LIFETIME,
            contact_count=self.contact_count,
            message=self.message,
            file_count=self.file_count,
            token=self.token,
            expired=self.status == "ready" and self.files is None,
        )


class ExportsPart(StoreState):
    """The contact exports' methods of `SandboxStore`."""

    def _init_state(self) -> None:
        super()._init_state()
        self._exports: dict[str, _Export] = {}
        self._kept: deque[str] = deque()  # exports whose files are kept, oldest first

    def submit_export(
        self,
        list_ids: Sequence[str],
        *,
        due: float,
        file_type: ExportFileType = "csv",
        max_file_bytes: int = 5000 * MB,
    ) -> ExportInfo:
        """Queue an export of the members of `list_ids` (every contact when empty) that
        `finish_export` writes once `due` (the monotonic clock) has passed. An unknown list is
        `NotFound` (its id in the message)."""
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
        with self._lock:
            ids = tuple(dict.fromkeys(list_ids))
            for list_id in ids:
                if list_id not in self._lists:
                    raise NotFound(f"list {list_id} does not exist")
            now = self._clock()
            export = _Export(
                id=str(uuid.uuid4()),
                list_ids=ids,
                file_type=file_type,
                max_file_bytes=max_file_bytes,
                due=due,
                created_at=now,
                updated_at=now,
                token=secrets.token_urlsafe(24),
            )
            self._exports[export.id] = export
            return export.info()

    def due_exports(self, now: float) -> list[str]:
        """Pending exports whose time has come, oldest first."""
        with self._lock:
            return [e.id for e in self._exports.values() if e.status == "pending" and e.due <= now]

    def export(self, export_id: str) -> ExportInfo | None:
        with self._lock:
            found = self._exports.get(export_id)
            return None if found is None else found.info()

    def exports(self) -> list[ExportInfo]:
        """Every export, oldest first."""
        with self._lock:
            return [e.info() for e in self._exports.values()]

    def finish_export(
        self, export_id: str, *, fail: bool = False, message: str = "the export failed"
    ) -> ExportInfo:
        """Write a pending export's files from the membership visible now and make it `ready`
        (or end it `failure` with `message` when `fail`, or when one of its lists was deleted
        in the meantime). A settled export is left as it is. A `reset()` while the files are
        being written abandons them (`NotFound`)."""
        with self._lock:
            export = self._exports.get(export_id)
            if export is None:
                raise NotFound("export not found")
            if export.status != "pending":
                return export.info()
            gone = [x for x in export.list_ids if x not in self._lists]
            if fail or gone:
                export.status = "failure"
                export.message = message if fail else f"list {gone[0]} was deleted"
                export.completed_at = export.updated_at = self._clock()
                return export.info()
            self._apply_due_changes()
            slots = self._export_slots(export.list_ids)
            custom = list(self._custom_fields.values())
        try:
            files, count = self._write_export(export, slots, custom)
        except NotFound:
            raise
        except BaseException:  # a bug or no memory: end it, never leave it pending forever
            with self._lock:
                export.status = "failure"
                export.message = "the sandbox failed to write the export"
                export.completed_at = export.updated_at = self._clock()
            raise
        with self._lock:
            if self._exports.get(export_id) is not export:
                raise NotFound("the sandbox was reset while the export was written")
            export.files = files
            export.file_count = len(files)
            export.contact_count = count
            export.status = "ready"
            export.completed_at = export.updated_at = self._clock()
            self._kept.append(export.id)
            while len(self._kept) > KEPT_EXPORTS:
                old = self._exports.get(self._kept.popleft())
                if old is not None:
                    old.files = None
            return export.info()

    def export_file(self, export_id: str, number: int, signature: str) -> bytes:
        """The gzip-compressed bytes of file `number` (1-based) of a ready export. An unknown
        export or file is `NotFound`, a wrong signature `Forbidden`, files no longer kept
        `Expired`."""
        with self._lock:
            export = self._exports.get(export_id)
            if export is None or export.status != "ready":
                raise NotFound("export file not found")
            if not hmac.compare_digest(signature.encode(), export.token.encode()):
                raise Forbidden("the signature does not match")
            if export.files is None:
                raise Expired("the export file has expired")
            if not 1 <= number <= len(export.files):
                raise NotFound("export file not found")
            return export.files[number - 1]

    def _export_slots(self, list_ids: Sequence[str]) -> array[int]:
        """The members' slots, oldest contact first; every live contact when no list is named."""
        if not list_ids:
            emails = self._emails
            return array("q", (s for s in range(len(emails)) if emails[s]))
        if len(list_ids) == 1:
            return array("q", sorted(self._lists[list_ids[0]].members))
        return array("q", sorted(set().union(*(self._lists[x].members for x in list_ids))))

    def _write_export(
        self, export: _Export, slots: array[int], custom: Sequence[CustomField]
    ) -> tuple[list[bytes], int]:
        """(gzip files, rows written): chunks of rows, each chunk under the lock."""
        stamps: dict[int, str] = {}
        if export.file_type == "csv":
            header = _csv_line([*EXPORT_CSV_COLUMNS, *(f.name for f in custom)])
            files = _GzipFiles(header.encode(), export.max_file_bytes)
            custom_ids = [f.id for f in custom]

            def line(slot: int, email: str) -> str:
                return _csv_line(self._export_csv_row(slot, email, custom_ids, stamps))
        else:
            files = _GzipFiles(b"", export.max_file_bytes)
            names = {f.id: f.name for f in custom}

            def line(slot: int, email: str) -> str:
                row = self._export_json_row(slot, email, names, stamps)
                return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"

        count = 0
        for start in range(0, len(slots), _EXPORT_CHUNK_ROWS):
            with self._lock:
                if self._exports.get(export.id) is not export:
                    raise NotFound("the sandbox was reset while the export was written")
                emails = self._emails
                for slot in slots[start : start + _EXPORT_CHUNK_ROWS]:
                    email = emails[slot]
                    if email:  # else deleted since the membership was taken
                        files.add(line(slot, email).encode())
                        count += 1
        return files.finish(), count

    def _stamp(self, ms: int, cache: dict[int, str]) -> str:
        second = ms // 1000
        text = cache.get(second)
        if text is None:
            if len(cache) > 10_000:
                cache.clear()
            text = cache[second] = iso_timestamp(second)
        return text

    def _export_csv_row(
        self, slot: int, email: str, custom_ids: Sequence[str], stamps: dict[int, str]
    ) -> list[str]:
        raw = self._fields[slot]
        fields: dict[str, Any] = {} if raw is None else FIELDS_DECODER.decode(raw.decode())
        get = fields.get
        row = [email]
        row += [get(k, "") for k in _EXPORT_TEXT_BEFORE]  # reserved values are text (the spec)
        row.append(",".join(get("alternate_emails") or ()))
        row += [get(k, "") for k in _EXPORT_TEXT_AFTER]
        row.append(self._stamp(self._created_ms[slot], stamps))
        row.append(self._stamp(self._updated_ms[slot], stamps))
        row.append(self._contact_id(slot))
        if custom_ids:
            custom = get("custom_fields") or {}
            row += [_cell(custom.get(i)) for i in custom_ids]
        return row

    def _export_json_row(
        self, slot: int, email: str, names: Mapping[str, str], stamps: dict[int, str]
    ) -> dict[str, Any]:
        fields = decode_fields(self._fields[slot])
        row: dict[str, Any] = {"contact_id": self._contact_id(slot), "email": email}
        row.update((k, fields.get(k, "")) for k in _EXPORT_TEXT_BEFORE)
        row["alternate_emails"] = list(fields.get("alternate_emails") or ())
        row.update((k, fields.get(k, "")) for k in _EXPORT_TEXT_AFTER)
        custom = fields.get("custom_fields") or {}
        row["custom_fields"] = {names[k]: v for k, v in custom.items() if k in names}
        row["created_at"] = self._stamp(self._created_ms[slot], stamps)
        row["updated_at"] = self._stamp(self._updated_ms[slot], stamps)
        return row


class _Echo:
    """A csv writer's file that hands each written line back: `writerow` returns it."""

    __slots__ = ()

    def write(self, text: str) -> str:
        return text


_LINE_WRITER: Final = csv.writer(_Echo(), lineterminator="\r\n")


def _csv_line(row: Iterable[str]) -> str:
    """One RFC 4180 line (quoted where needed, CRLF)."""
    line: str = _LINE_WRITER.writerow(row)
    return line


def _cell(value: Any) -> str:
    """A stored value as the CSV export writes it: "" for none, numbers as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


class _GzipFiles:
    """Lines into gzip-compressed files held in memory, a new file whenever the next line would
    take the current one past `max_bytes` uncompressed (each file has at least one row after its
    `header`). Compression level 1: fast, and about 4:1 on contact rows."""

    def __init__(self, header: bytes, max_bytes: int) -> None:
        self._header = header
        self._max = max_bytes
        self._files: list[bytes] = []
        self._out: io.BytesIO | None = None
        self._zip = zlib.compressobj(1, zlib.DEFLATED, 31)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._size = 0
        self._rows = 0

    def add(self, line: bytes) -> None:
        if self._out is None:
            self._open()
        elif self._rows and self._size + len(line) > self._max:
            self._close()
            self._open()
        self._pending.append(line)
        self._pending_bytes += len(line)
        self._size += len(line)
        self._rows += 1
        if self._pending_bytes >= _FLUSH_BYTES:
            self._flush()

    def finish(self) -> list[bytes]:
        """The files (one, holding only the header, when there was no line)."""
        if self._out is None:
            self._open()
        self._close()
        return self._files

    def _open(self) -> None:
        self._out = io.BytesIO()
        self._zip = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: the gzip container
        self._pending = [self._header] if self._header else []
        self._pending_bytes = self._size = len(self._header)
        self._rows = 0

    def _flush(self) -> None:
        if self._out is not None and self._pending:
            self._out.write(self._zip.compress(b"".join(self._pending)))
        self._pending = []
        self._pending_bytes = 0

    def _close(self) -> None:
        self._flush()
        if self._out is not None:
            self._out.write(self._zip.flush())
            self._files.append(self._out.getvalue())
        self._out = None
