"""Read a SendGrid contact export file: who is on the list, with the fields we map.

Pure: no network, no Azure. `read_export(stream, fields)` takes one export file as bytes (as
SendGrid serves it: gzip-compressed CSV; plain CSV works too, told apart by gzip's magic bytes),
reads its header at once and then yields `(email, values)` per member: the email stripped and
lower-cased, `values` the export's text for each of `fields` in order ("" where the export has
no such column). Rows with a blank email are skipped and counted.

The CSV layout is our best knowledge of SendGrid's export (see
`exporter.local.sandbox.store_exports.EXPORT_CSV_COLUMNS`): `EMAIL`, the reserved fields in
upper case (`FIRST_NAME`, ...), then one column per custom field headed by its name. So a
reserved field name (`first_name`) matches its column case-insensitively (`FIRST_NAME`), and
`custom:NAME` matches the column named NAME, case-insensitively as SendGrid's field names are
unique regardless of case. Unknown columns are ignored.

Every input has a bound; passing one is an `ExportFormatError`, as is a file that is not gzip or
UTF-8 CSV, a truncated or corrupt gzip stream, or a file without an EMAIL column:
- `MAX_ROW_BYTES` (1 MiB): one row, counted in decompressed bytes from the end of the previous
  row, line breaks inside quoted fields included (so also one line, and one field);
- `MAX_COLUMNS` (2,000): columns of the header, and fields of any row;
- `MAX_DECOMPRESSED_BYTES` (8 GiB): the decompressed bytes of one file;
- `csv.field_size_limit` is process-wide in Python and cannot be set per reader: this module
  raises it (never lowers it) to `MAX_ROW_BYTES` when imported, as
  `exporter.core.snapshots.csv_rows` does for its own cap; no field can be longer than a row
  anyway.
Memory stays flat: bytes flow through gzip, a counting layer and the C text decoder in 64 KiB
chunks, and `csv.reader` yields one row at a time. Messages never hold contact data.

Row bounds are tracked by quote parity at the byte level: a line break ends a row when an even
number of `"` precede it, which holds for RFC 4180 CSV (a field holding a quote is quoted, and
its quotes doubled), as SendGrid writes it.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import IO, Final, Protocol

from exporter.core.errors import ExportFormatError

__all__ = [
    "EMAIL_COLUMN",
    "MAX_COLUMNS",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_ROW_BYTES",
    "ExportFormatError",
    "ExportReader",
    "read_export",
]

MAX_ROW_BYTES: Final = 1024 * 1024
"""One row (or line, or field) of an export, in decompressed bytes."""
MAX_COLUMNS: Final = 2_000
"""Columns of an export: 21 reserved fields plus at most a few hundred custom fields."""
MAX_DECOMPRESSED_BYTES: Final = 8 * 1024**3
"""Decompressed bytes of one export file (SendGrid splits exports by `max_file_size`)."""
EMAIL_COLUMN: Final = "EMAIL"

_CHUNK: Final = 64 * 1024
_GZIP_MAGIC: Final = b"\x1f\x8b"
_BOM: Final = b"\xef\xbb\xbf"
_CUSTOM_PREFIX: Final = "custom:"

# csv's limit is process-wide (see the module docstring); only ever raised here.
csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _Bytes(io.RawIOBase):
    """The decompressed bytes the text decoder sees: gzip errors become ExportFormatErrors,
    a UTF-8 byte-order mark is skipped, and the bounds on bytes and rows are enforced."""

    def __init__(self, head: bytes, source: IO[bytes]) -> None:
        super().__init__()
        self.compressed = head.startswith(_GZIP_MAGIC)
        self._raw = _Prefixed(head, source)
        self._inner: _Readable = (
            gzip.GzipFile(fileobj=self._raw, mode="rb") if self.compressed else self._raw
        )
        self.total = 0
        self._run = 0  # bytes since the end of the last complete row
        self._quoted = False  # inside a quoted field at the end of the bytes so far
        start = b""
        while len(start) < len(_BOM) and (more := self._pull(len(_BOM) - len(start))):
            start += more
        self._pending = start[len(_BOM) :] if start.startswith(_BOM) else start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._pending:
            data, self._pending = self._pending[: len(view)], self._pending[len(view) :]
        else:
            data = self._pull(min(len(view), _CHUNK))
        if not data:
            return 0
        self.total += len(data)
        if self.total > MAX_DECOMPRESSED_BYTES:
            raise ExportFormatError(
                f"the export file decompresses to more than {MAX_DECOMPRESSED_BYTES:,} bytes"
            )
        self._track_rows(data)
        view[: len(data)] = data
        return len(data)

    def _pull(self, size: int) -> bytes:
        try:
            return self._inner.read(size)
        except EOFError:
            raise ExportFormatError(
                "the export file's gzip data is truncated: it ends before its end marker; "
                "download it again"
            ) from None
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise ExportFormatError(f"the export file's gzip data is corrupt ({exc})") from None

    def _track_rows(self, data: bytes) -> None:
        """Bytes since the last row boundary (a line break outside quotes); a row that would
        pass MAX_ROW_BYTES is refused before the text decoder or csv ever hold it."""
        quoted_at_end = self._quoted ^ bool(data.count(b'"') & 1)
        if self._run + len(data) > MAX_ROW_BYTES:
            first = _first_boundary(data, self._quoted)
            if first is None or self._run + first > MAX_ROW_BYTES:
                raise ExportFormatError(
                    f"a row of the export file is longer than {MAX_ROW_BYTES:,} bytes "
                    "(or a quote is never closed): this is not a contact export"
                )
        end = len(data)
        newline = data.rfind(b"\n")
        quotes_after = 0
        while newline != -1:
            quotes_after += data.count(b'"', newline, end)
            if not quoted_at_end ^ bool(quotes_after & 1):  # outside quotes there: a row ends
                self._run = len(data) - newline - 1
                break
            end = newline
            newline = data.rfind(b"\n", 0, newline)
        else:
            self._run += len(data)
        self._quoted = quoted_at_end


class _Prefixed(io.RawIOBase):
    """`head` (already read to sniff the format), then the rest of `source`."""

    def __init__(self, head: bytes, source: IO[bytes]) -> None:
        super().__init__()
        self._head = head
        self._source = source

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self._head:
            if size is None or size < 0 or size >= len(self._head):
                data, self._head = self._head, b""
            else:
                data, self._head = self._head[:size], self._head[size:]
            return data
        return self._source.read(-1 if size is None else size)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class ExportReader:
    """One export file being read. `missing` is known at once; iterate once for the members."""

    def __init__(self, stream: IO[bytes], fields: Sequence[str]) -> None:
        self._fields = tuple(fields)
        head = b""
        while len(head) < len(_GZIP_MAGIC) and (more := stream.read(len(_GZIP_MAGIC) - len(head))):
            head += more
        if not head:
            raise ExportFormatError("the export file is empty: it has no header row")
        self._bytes = _Bytes(head, stream)
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._bytes, buffer_size=_CHUNK),
            encoding="utf-8",
            errors="strict",
            newline="",
        )
        self._text._CHUNK_SIZE = _CHUNK  # type: ignore[attr-defined]  # fewer, larger decodes
        self._reader = csv.reader(self._text)
        header = self._header()
        self._width = len(header)
        folded = [h.strip().casefold() for h in header]
        email = _first(folded, EMAIL_COLUMN.casefold())
        if email is None:
            what = "the gzip data" if self._bytes.compressed else "the file"
            raise ExportFormatError(
                f"the export file has no {EMAIL_COLUMN} column in its header row ({len(header)} "
                f"columns): {what} is not a SendGrid CSV contact export"
            )
        indices: list[int] = []
        missing: list[str] = []
        for name in self._fields:
            wanted = name[len(_CUSTOM_PREFIX) :] if name.startswith(_CUSTOM_PREFIX) else name
            index = _first(folded, wanted.strip().casefold())
            if index is None:
                missing.append(name)
                index = self._width  # the "" appended to every row
            indices.append(index)
        self.missing: tuple[str, ...] = tuple(missing)
        """The fields the export has no column for, in `fields` order."""
        self.rows_without_email = 0
        """Rows skipped because their email is blank (counted as they are read)."""
        self.members = 0
        """Rows yielded so far."""
        self._email_index = email
        self._indices = indices
        self._rows = self._iterate()

    def _header(self) -> list[str]:
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            raise ExportFormatError(
                f"the export file's header row is not valid CSV ({exc})"
            ) from None
        except UnicodeDecodeError:
            raise ExportFormatError(
                "the export file is not UTF-8 text (gzip-compressed or plain CSV expected)"
            ) from None
        if not header:
            raise ExportFormatError("the export file is empty: it has no header row")
        if len(header) > MAX_COLUMNS:
            raise ExportFormatError(
                f"the export file's header has {len(header):,} columns, more than the "
                f"{MAX_COLUMNS:,} a contact export can have"
            )
        return header

    def __iter__(self) -> Iterator[tuple[str, list[str]]]:
        return self._rows

    def _iterate(self) -> Iterator[tuple[str, list[str]]]:
        width = self._width
        email_index = self._email_index
        count = len(self._indices)
        pick = itemgetter(*self._indices) if count else None
        padded = count > 0 and width in self._indices
        reader = self._reader
        try:
            for row in reader:
                if len(row) != width:
                    if not row:  # a blank line
                        continue
                    raise ExportFormatError(
                        f"row {reader.line_num:,} of the export file has {len(row):,} fields, "
                        f"its header has {width:,}"
                    )
                email = row[email_index].strip()
                if not email:
                    self.rows_without_email += 1
                    continue
                if padded:
                    row.append("")
                if pick is None:
                    values: list[str] = []
                elif count == 1:
                    values = [pick(row)]
                else:
                    values = list(pick(row))
                self.members += 1
                yield email.lower(), values
        except csv.Error as exc:
            raise ExportFormatError(
                f"the export file is not valid CSV near line {reader.line_num:,} ({exc})"
            ) from None
        except UnicodeDecodeError:
            raise ExportFormatError(
                f"the export file is not UTF-8 text (near line {reader.line_num:,})"
            ) from None


def read_export(stream: IO[bytes], fields: Sequence[str]) -> ExportReader:
    """Open one export file (gzip or plain UTF-8 CSV) and read its header; iterate the result
    for `(email, values)` per member. `fields` are SendGrid reserved field names and
    `custom:NAME`s, in the order `values` follow. The stream is read once, front to back, and
    not closed here. Raises `ExportFormatError` (see the module docstring)."""
    return ExportReader(stream, fields)


def _first_boundary(data: bytes, quoted: bool) -> int | None:
    """Where the first row that `data` ends ends (just past its line break), or None; `quoted`
    says whether `data` starts inside a quoted field."""
    start = 0
    newline = data.find(b"\n")
    while newline != -1:
        quoted ^= bool(data.count(b'"', start, newline) & 1)
        if not quoted:
            return newline + 1
        start = newline
        newline = data.find(b"\n", newline + 1)
    return None


def _first(names: Sequence[str], wanted: str) -> int | None:
    for index, name in enumerate(names):
        if name == wanted:
            return index
    return None
