"""Stream a segment snapshot (CSV or JSON Lines, optionally gzip-compressed) as mapped records.

Memory stays flat in the file's size: bytes flow through gzip, a counting layer and the C text
decoder in 64 KiB chunks, and records are yielded one at a time. The counting layer exists so a
file-level error can say exactly where it is (byte offset and line) without reading the file twice.

File-level problems raise `SnapshotError` (the whole run fails with that message); row-level
problems are yielded as `RowProblem` so the caller rejects that row and goes on.

A snapshot may also come in parts (`Parts`: a CDM entity's partition files, see `exporter.cdm`):
the parts are read one after another through the same pipeline, each opened only when the reader
reaches it, with the columns given up front (a headerless part takes them; a part with a header
row must name the same ones).
"""

from __future__ import annotations

import _csv
import csv
import gzip
import io
import itertools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import IO, Final, Literal, Protocol

from exporter.errors import SnapshotError
from exporter.mapping import FieldMapping, ResolvedMapping

FIELD_CAP: Final = 64 * 1024
"""A field longer than this (in characters) rejects its row: no real profile field is that long."""

LINE_CAP: Final = 1024 * 1024
"""A JSON line or CSV field longer than this is not a profile: beyond it, the file is unreadable."""

_CHUNK: Final = 64 * 1024
DELIMITERS: Final = (",", ";", "\t", "|")
Format = Literal["csv", "jsonl"]

_CSV_SUFFIXES: Final = {".csv", ".tsv", ".txt", ".psv"}
_JSONL_SUFFIXES: Final = {".jsonl", ".ndjson", ".json"}

# Leading bytes of files people export by mistake, and what to tell them.
_SIGNATURES: Final = (
    (b"\xef\xbb\xbf", None),  # UTF-8 byte-order mark: fine, skipped
    (b"\xff\xfe", "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"),
    (b"PK\x03\x04", "a ZIP archive or an Excel workbook; export the segment as CSV or JSON Lines"),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook; export the segment as CSV or JSON Lines"),
    (b"%PDF", "a PDF document, not a CSV or JSON Lines file"),
    (b"PAR1", "a Parquet file; export the segment as CSV or JSON Lines"),
    (b"\x89PNG", "a PNG image, not a CSV or JSON Lines file"),
    (b"\xff\xd8\xff", "a JPEG image, not a CSV or JSON Lines file"),
)

# csv's own limit is process-wide; we raise it to LINE_CAP (FIELD_CAP is checked per row).
csv.field_size_limit(max(csv.field_size_limit(), LINE_CAP))


class _Blank:
    """The type of BLANK: a row whose every field is empty."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BLANK"


BLANK: Final = _Blank()


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that cannot be read; it is rejected with this reason code and message."""

    reason: str
    message: str


Record = tuple[str, ...] | RowProblem | _Blank
"""Mapped values in `ResolvedMapping.fields` order (email first), a problem, or BLANK."""


@dataclass(frozen=True, slots=True)
class Part:
    """One CSV file of a snapshot in parts, opened only when the reader reaches it (so one part
    is open at a time), and closed when it has been read."""

    name: str
    """Where a person finds the file (a blob name): file-level errors name it."""
    open: Callable[[], IO[bytes]]
    header: bool = False
    """Whether the first line is a header row (checked against the columns) or already data."""
    delimiter: str = ","
    quoting: bool = True
    """False: quote characters are ordinary characters (CDM's `QuoteStyle.None`)."""


@dataclass(frozen=True, slots=True)
class Parts:
    """A CSV snapshot stored as several files, read in order as one (a CDM entity's partitions).

    Line numbers restart in each part (a person opens that file to find the row); `Snapshot.part`
    says which part the latest record came from.
    """

    columns: tuple[str, ...]
    parts: tuple[Part, ...]


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _RawCounter:
    """Counts the bytes read from the file itself (for gzip errors) and replays a peeked head."""

    def __init__(self, raw: _Readable, head: bytes) -> None:
        self._raw = raw
        self._head = head
        self.consumed = len(head)

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        data = self._raw.read(size)
        self.consumed += len(data)
        return data

    def seek(self, offset: int, /) -> int:
        raise io.UnsupportedOperation("a snapshot is read once, front to back")


class _Counted(io.BufferedIOBase):
    """The bytes the text decoder sees, counted, so a decode error can be placed exactly.

    Also turns gzip failures into SnapshotErrors and strips a UTF-8 byte-order mark.
    """

    def __init__(self, inner: _Readable, raw: _RawCounter, *, gzipped: bool) -> None:
        super().__init__()
        self._inner = inner
        self._raw = raw
        self._gzipped = gzipped
        self.total = 0  # bytes returned so far (plus a skipped BOM)
        self.newlines = 0
        self.last_start = 0  # offset and line count where the most recent chunk began
        self.last_newlines = 0
        self.last_len = 0
        self._pending = b""
        self.suspicious = False
        """Set once a chunk holds a NUL byte or a line longer than FIELD_CAP bytes ends: from then
        on, rows get the full (slower) per-field checks. Clean files never pay for them."""
        self._run = 0  # bytes since the last line break, across chunks

    @property
    def name(self) -> str:
        return "snapshot"

    def readable(self) -> bool:
        return True

    def start(self) -> bytes:
        """Read the first bytes, fail on known non-text formats, skip a BOM; return the head."""
        head = b""
        while len(head) < 8:
            data = self._pull(8 - len(head))
            if not data:
                break
            head += data
        for signature, problem in _SIGNATURES:
            if head.startswith(signature):
                if problem is None:
                    self.total = len(signature)
                    head = head[len(signature) :]
                    break
                raise SnapshotError("binary_file", f"the file is {problem}", offset=0)
        self._pending = head
        return head

    def _pull(self, size: int) -> bytes:
        try:
            return self._inner.read(size)
        except EOFError:
            raise SnapshotError(
                "truncated_gzip",
                "the gzip data is truncated: the compressed stream ends before its end marker "
                f"after {self._raw.consumed:,} compressed bytes; upload the complete file",
            ) from None
        except (zlib.error, gzip.BadGzipFile, OSError) as exc:
            if not self._gzipped:
                raise
            raise SnapshotError(
                "corrupt_gzip",
                f"the gzip data is corrupt ({exc}) near compressed byte {self._raw.consumed:,}",
            ) from None

    def read1(self, size: int | None = -1, /) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
        else:
            data = self._pull(min(size, _CHUNK) if size and size > 0 else _CHUNK)
        self.last_start = self.total
        self.last_newlines = self.newlines
        self.last_len = len(data)
        self.total += len(data)
        newlines = data.count(b"\n")
        self.newlines += newlines
        # A line inside one chunk (at most _CHUNK <= FIELD_CAP bytes) cannot hold a field over
        # FIELD_CAP characters; only lines that cross chunk boundaries need measuring.
        if newlines:
            if self._run + data.index(b"\n") > FIELD_CAP:
                self.suspicious = True
            self._run = len(data) - data.rindex(b"\n") - 1
        else:
            self._run += len(data)
            if self._run > FIELD_CAP:
                self.suspicious = True
        if b"\x00" in data:
            self.suspicious = True
        return data

    def read(self, size: int | None = -1, /) -> bytes:
        if size is not None and size >= 0:
            return self.read1(size)
        parts = []
        while chunk := self.read1(_CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def decode_error(self, exc: UnicodeDecodeError) -> SnapshotError:
        """Place a decode error: the decoder's object is its pending bytes + the latest chunk."""
        pending = len(exc.object) - self.last_len
        offset = self.last_start - pending + exc.start
        line = self.last_newlines + exc.object[: exc.start].count(b"\n") + 1
        if exc.reason == "unexpected end of data":
            what = "it ends with an incomplete character"
        else:
            bad = exc.object[exc.start : exc.start + 1].hex().upper()
            what = f"byte 0x{bad} cannot be decoded"
        return SnapshotError(
            "not_utf8",
            f"the file is not UTF-8 text: {what}; save it as UTF-8",
            line=line,
            offset=offset,
        )


def detect_format(name: str) -> Format | None:
    """The format a file name announces (`.csv`, `.jsonl`, with or without `.gz`), if any."""
    suffixes = [s.lower() for s in Path(name).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in _CSV_SUFFIXES:
        return "csv"
    if suffixes and suffixes[-1] in _JSONL_SUFFIXES:
        return "jsonl"
    return None


class Snapshot:
    """An open snapshot: its format, its columns, the mapping fitted to them, and its records.

    Use as a context manager; iterate `records()` once. Each record comes with the 1-based line
    on which it starts.
    """

    format: Format
    delimiter: str | None
    columns: tuple[str, ...]
    mapping: ResolvedMapping
    part: Part | None = None
    """The part being read (None for a single file)."""

    def __init__(
        self,
        source: str | Path | IO[bytes] | Parts,
        *,
        name: str | None = None,
        mapping: FieldMapping | None = None,
        format: Format | None = None,
    ) -> None:
        self._owned: IO[bytes] | None = None
        self._part_file: IO[bytes] | None = None
        self._ragged = "the header has {}"
        raw: IO[bytes]
        if isinstance(source, Parts):
            if format not in (None, "csv"):
                raise SnapshotError("unreadable", "a snapshot in parts is read as CSV only")
            self._open_parts(source, mapping or FieldMapping())
            return
        if isinstance(source, (str, Path)):
            path = Path(source)
            name = name or path.name
            try:
                if path.is_dir():
                    raise SnapshotError("unreadable", f"{path} is a folder, not a file")
                self._owned = raw = path.open("rb")
            except OSError as exc:
                raise SnapshotError("unreadable", f"cannot open {path}: {exc.strerror}") from None
        else:
            raw = source
        try:
            self._open(raw, name or "", mapping or FieldMapping(), format)
        except BaseException:
            self.close()
            raise

    def _open(
        self, raw: IO[bytes], name: str, mapping: FieldMapping, format: Format | None
    ) -> None:
        self._start_text(raw, empty_ok=False)
        fmt = format or detect_format(name)
        self._line = 0  # lines consumed before the first record
        first = self._first_line()
        if fmt is None:
            fmt = "jsonl" if first.lstrip().startswith("{") else "csv"
        self.format = fmt
        self._records: Iterator[tuple[int, Record]]
        if fmt == "csv":
            self._records = self._open_csv(first, mapping)
        else:
            self._records = self._open_jsonl(first, mapping)

    def _start_text(self, raw: _Readable, *, empty_ok: bool) -> bool:
        """Set up bytes -> gzip (by magic) -> counting -> UTF-8 text for one file. False when it
        is empty and `empty_ok` (an empty part holds no rows); else an empty file raises."""
        magic = raw.read(2)
        if not magic:
            if empty_ok:
                return False
            raise SnapshotError("empty_file", "the file is empty (0 bytes)")
        counter = _RawCounter(raw, magic)
        self.compressed = magic == b"\x1f\x8b"
        inner: _Readable = gzip.GzipFile(fileobj=counter, mode="rb") if self.compressed else counter
        self._bytes = _Counted(inner, counter, gzipped=self.compressed)
        head = self._bytes.start()
        if not head:
            if empty_ok:
                return False
            what = "decompresses to 0 bytes" if self.compressed else "holds only a byte-order mark"
            raise SnapshotError("empty_file", f"the file is empty: it {what}")
        self._text = io.TextIOWrapper(self._bytes, encoding="utf-8", errors="strict", newline="")
        self._text._CHUNK_SIZE = _CHUNK  # type: ignore[attr-defined]  # fewer, larger decodes
        return True

    def _guard(self, fn: Callable[[], str]) -> str:
        try:
            return fn()
        except UnicodeDecodeError as exc:
            raise self._bytes.decode_error(exc) from None

    def _first_line(self) -> str:
        """The first non-blank line (the header, or the first JSON record)."""
        while True:
            line = self._guard(lambda: self._text.readline(LINE_CAP + 1))
            if not line:
                raise SnapshotError(
                    "no_header", "the file holds only blank lines: no header row", line=self._line
                )
            self._line += 1
            if len(line) > LINE_CAP and not line.endswith(("\n", "\r")):
                raise SnapshotError(
                    "no_header",
                    f"no line break in the first {LINE_CAP:,} characters: "
                    "this is not a CSV or JSON Lines file",
                    line=self._line,
                )
            if "\x00" in line:
                raise SnapshotError(
                    "binary_file",
                    "the first line holds NUL bytes: this is binary data or UTF-16 text, "
                    "not a UTF-8 CSV or JSON Lines file",
                    line=self._line,
                )
            if line.strip():
                return line

    # --- CSV -------------------------------------------------------------------------------

    def _open_csv(self, first: str, mapping: FieldMapping) -> Iterator[tuple[int, Record]]:
        self.delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first], delimiter=d))))
        reader = csv.reader(itertools.chain([first], self._text), delimiter=self.delimiter)
        header = self._header(reader)
        header_line = self._line
        for col in header:
            if "@" in col and "." in col.partition("@")[2]:
                raise SnapshotError(
                    "no_header",
                    "no header row: the first row holds an email address, so it looks like data; "
                    "add a header row that names the columns",
                    line=header_line,
                )
        self.columns = tuple(header)
        self.mapping = mapping.resolve(header)
        return self._csv_records(reader, header_line - 1)

    def _header(self, reader: _csv.Reader) -> list[str]:
        try:
            return [h.strip() for h in next(reader)]
        except csv.Error as exc:
            raise SnapshotError("malformed_csv", f"the header row is malformed: {exc}") from None
        except UnicodeDecodeError as exc:
            raise self._bytes.decode_error(exc) from None

    def _csv_records(self, reader: _csv.Reader, skipped: int) -> Iterator[tuple[int, Record]]:
        columns = self.columns
        ncols = len(columns)
        indices = self.mapping.indices
        get: Callable[[list[str]], tuple[str, ...]]
        if len(indices) == 1:
            only = indices[0]

            def get(row: list[str]) -> tuple[str, ...]:
                return (row[only],)
        else:
            get = itemgetter(*indices)
        prev = reader.line_num
        counted = self._bytes
        try:
            for row in reader:
                start = prev + 1 + skipped
                prev = reader.line_num
                if len(row) != ncols or counted.suspicious:
                    yield start, _csv_problem(row, columns, get, self._ragged)
                    continue
                values = get(row)
                if values[0] and not values[0].isspace():
                    yield start, values
                else:
                    yield start, _csv_problem(row, columns, get, self._ragged)
        except csv.Error as exc:
            line = reader.line_num + skipped
            if "field larger than field limit" in str(exc):
                raise SnapshotError(
                    "malformed_csv",
                    f"a field that starts at or before this line runs past {LINE_CAP:,} "
                    "characters: most likely a quote that is never closed",
                    line=line,
                ) from None
            raise SnapshotError(
                "malformed_csv", f"the CSV is malformed: {exc}", line=line
            ) from None
        except UnicodeDecodeError as exc:
            raise self._bytes.decode_error(exc) from None

    # --- CSV in parts (a CDM entity's partitions) ---------------------------------------------

    def _open_parts(self, source: Parts, mapping: FieldMapping) -> None:
        if not source.columns:
            raise SnapshotError("no_header", "a snapshot in parts needs its column names")
        self.format = "csv"
        self.compressed = False
        self.delimiter = source.parts[0].delimiter if source.parts else ","
        self.columns = tuple(source.columns)
        self.mapping = mapping.resolve(self.columns)
        self._ragged = "the entity has {} attributes"
        self._records = self._parts_records(source.parts)

    def _parts_records(self, parts: Sequence[Part]) -> Iterator[tuple[int, Record]]:
        for index, part in enumerate(parts, start=1):
            self.part = part
            try:
                yield from self._part_records(part)
            except SnapshotError as exc:
                where = f"partition {index} of {len(parts)} ({part.name})"
                raise _located(exc, where) from None
            finally:
                self._close_part()

    def _part_records(self, part: Part) -> Iterator[tuple[int, Record]]:
        self._part_file = part.open()
        if not self._start_text(self._part_file, empty_ok=True):
            return  # an empty partition: no rows
        lines: Iterable[str] = self._text
        skipped = 0
        if part.header:
            self._line = 0
            lines = itertools.chain([self._first_line()], self._text)
            skipped = self._line - 1
        if part.quoting:
            reader = csv.reader(lines, delimiter=part.delimiter)
        else:
            reader = csv.reader(lines, delimiter=part.delimiter, quoting=csv.QUOTE_NONE)
        if part.header:
            header = self._header(reader)
            if [h.casefold() for h in header] != [c.casefold() for c in self.columns]:
                raise SnapshotError(
                    "header_mismatch",
                    f"its header row names {_shown(header)}, but the entity's attributes are "
                    f"{_shown(self.columns)}, in that order",
                    line=skipped + 1,
                )
        yield from self._csv_records(reader, skipped)

    def _close_part(self) -> None:
        file, self._part_file = self._part_file, None
        close = getattr(file, "close", None)  # a blob downloader has nothing to close
        if close is not None:
            close()

    # --- JSON Lines --------------------------------------------------------------------------

    def _open_jsonl(self, first: str, mapping: FieldMapping) -> Iterator[tuple[int, Record]]:
        self.delimiter = None
        stripped = first.strip()
        try:
            obj = json.loads(stripped)
        except ValueError as exc:
            hint = " (a JSON array: one object per line is expected)" if stripped[:1] == "[" else ""
            raise SnapshotError(
                "not_jsonl",
                f"the first record is not valid JSON{hint}: {_json_message(exc)}; "
                "a JSON Lines file holds one JSON object per line",
                line=self._line,
            ) from None
        if not isinstance(obj, dict):
            raise SnapshotError(
                "not_jsonl",
                f"the first record is a JSON {_json_type(obj)}, not an object; "
                "a JSON Lines file holds one JSON object per line",
                line=self._line,
            )
        self.columns = tuple(str(k) for k in obj)
        self.mapping = mapping.resolve(self.columns)
        return self._jsonl_records(first)

    def _jsonl_records(self, first: str) -> Iterator[tuple[int, Record]]:
        keys = self.mapping.columns
        loads = json.loads
        line_no = self._line
        yield line_no, _json_record(first, keys, loads)
        readline = self._text.readline
        try:
            while line := readline(LINE_CAP + 1):
                line_no += 1
                if len(line) > LINE_CAP and not line.endswith(("\n", "\r")):
                    while (rest := readline(LINE_CAP)) and not rest.endswith(("\n", "\r")):
                        pass
                    yield (
                        line_no,
                        RowProblem(
                            "line_too_long", f"the line is longer than {LINE_CAP:,} characters"
                        ),
                    )
                else:
                    yield line_no, _json_record(line, keys, loads)
        except UnicodeDecodeError as exc:
            raise self._bytes.decode_error(exc) from None

    # --- lifecycle -------------------------------------------------------------------------

    def records(self) -> Iterator[tuple[int, Record]]:
        """(line, record) for every row after the header, in file order."""
        return self._records

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
        self._close_part()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_problem(
    row: list[str],
    columns: Sequence[str],
    get: Callable[[list[str]], tuple[str, ...]],
    width: str = "the header has {}",
) -> Record:
    """The careful look at a row that the fast path could not clear: blank, ragged, too large,
    NUL; or, when none of those, its mapped values after all (as for a row without email).
    `width` says where the expected number of fields comes from."""
    joined = "".join(row)
    if not joined or joined.isspace():
        return BLANK
    if len(row) != len(columns):
        return RowProblem(
            "ragged_row", f"the row has {len(row)} fields, {width.format(len(columns))}"
        )
    for col, value in zip(columns, row, strict=True):
        if len(value) > FIELD_CAP:
            return RowProblem(
                "field_too_large", f"column {col!r} holds more than {FIELD_CAP:,} characters"
            )
        if "\x00" in value:
            return RowProblem("nul_byte", f"column {col!r} holds a NUL character")
    return get(row)


def _shown(columns: Sequence[str]) -> str:
    names = ", ".join(repr(c) for c in columns[:20]) or "none"
    return names + (f" and {len(columns) - 20} more" if len(columns) > 20 else "")


def _located(exc: SnapshotError, where: str) -> SnapshotError:
    """The same error, its message prefixed with which part of the snapshot it is in."""
    located = SnapshotError(exc.code, f"{where}: {exc}")
    located.line, located.offset = exc.line, exc.offset
    return located


def _json_record(line: str, keys: Sequence[str], loads: Callable[[str], object]) -> Record:
    if not line.strip():
        return BLANK
    try:
        obj = loads(line)
    except ValueError as exc:
        return RowProblem("invalid_json", f"the line is not valid JSON: {_json_message(exc)}")
    if type(obj) is not dict:
        return RowProblem("not_json_object", f"the line is a JSON {_json_type(obj)}, not an object")
    values = tuple(map(obj.get, keys))
    if all(type(v) is str for v in values):
        out: tuple[str, ...] = values  # type: ignore[assignment]
    else:
        converted = []
        for key, value in zip(keys, values, strict=True):
            text = _json_value(value)
            if text is None:
                return RowProblem(
                    "bad_value", f"key {key!r} holds a JSON {_json_type(value)}, not a value"
                )
            converted.append(text)
        out = tuple(converted)
    # Mapped keys always; all keys when the raw line is long enough or holds an escaped NUL.
    pairs: Iterable[tuple[object, object]] = zip(keys, out, strict=True)
    if len(line) > FIELD_CAP or "\\u0000" in line:
        pairs = itertools.chain(pairs, obj.items())
    for name, item in pairs:
        if isinstance(item, str):
            if len(item) > FIELD_CAP:
                return RowProblem(
                    "field_too_large", f"key {name!r} holds more than {FIELD_CAP:,} characters"
                )
            if "\x00" in item:
                return RowProblem("nul_byte", f"key {name!r} holds a NUL character")
    if not "".join(out).strip() and all(_is_blank(v) for v in obj.values()):
        return BLANK
    return out


def _json_value(value: object) -> str | None:
    """A JSON scalar as text; a list of scalars joined by commas; None for anything else."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    return None


def _is_blank(value: object) -> bool:
    text = _json_value(value)
    return text is not None and not text.strip()


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _json_message(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc)


def open_snapshot(
    source: str | Path | IO[bytes] | Parts,
    *,
    name: str | None = None,
    mapping: FieldMapping | None = None,
    format: Format | None = None,
) -> Snapshot:
    """Open a snapshot from a path, a binary stream or `Parts`; see `Snapshot`."""
    return Snapshot(source, name=name, mapping=mapping, format=format)
