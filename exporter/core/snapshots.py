"""Stream a segment snapshot (CSV or JSON Lines, optionally gzip-compressed) as mapped records.

Memory stays flat in the file's size: bytes flow through gzip, a counting layer and the C text
decoder in 64 KiB chunks, and records are yielded one at a time. The counting layer exists so a
file-level error can say exactly where it is (byte offset and line) without reading the file twice.

File-level problems raise `SnapshotError` (the whole run fails with that message); row-level
problems are yielded as `RowProblem` so the caller rejects that row and goes on.

A snapshot may also come in parts (`Parts`: a CDM entity's partition files, see
`exporter.core.cdm`): the parts are read one after another through the same pipeline, each
opened only when the reader reaches it, with the columns given up front (a headerless part takes
them; a part with a header row must name the same ones).

Every input has a bound (the constants below; the README's "Input limits" lists them): a file
built to cost memory or time costs at most about one line's worth (`LINE_CAP`) and is stopped in
bounded time. The counting layer hands the text decoder whole lines only: a line over
`LINE_CAP` bytes is never buffered; its bytes are dropped as they arrive until its line break,
and the line is replaced by a marker (a lone NUL) whose line number the row loop looks up, so
that row alone is rejected (`line_too_long`).
"""

from __future__ import annotations

import _csv
import csv
import gzip
import io
import itertools
import json
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import IO, Final, Literal, Protocol

from exporter.core.errors import SnapshotError
from exporter.core.mapping import FieldMapping, ResolvedMapping

# --- input limits (read when a file is opened, so tests may lower them) ---------------------

FIELD_CAP: Final = 64 * 1024
"""A field longer than this (in characters) rejects its row (`field_too_large`): no real profile
field is that long."""

LINE_CAP: Final = 1024 * 1024
"""Bytes of one physical line, without its line break. A longer line rejects its row
(`line_too_long`): its bytes are skipped up to the next line break without being kept. A line
that no line break ends before the end of the file fails the file. A CSV row that spans lines
(line breaks inside quotes) may hold at most this many characters: past that, a quote has been
open for a megabyte and the row's end cannot be trusted, so the file fails."""

HEADER_CAP: Final = 256 * 1024
"""Bytes of the header row (a longer first line fails the file)."""

MAX_COLUMNS: Final = 5_000
"""Columns of the header (keys of the first JSON Lines record, attributes of a CDM entity); more
fail the file. SendGrid takes at most a few hundred custom fields."""

FIELDS_CAP: Final = 1_000
"""A row with more than max(2 x the header's columns, this) fields is rejected
(`too_many_fields`; a row with fewer, but not as many as the header, is a `ragged_row`). A CSV
line without quotes is measured by counting its delimiters, before the csv module splits it."""

FILE_CAP: Final = 20 * 1024**3
"""Bytes of one file, after decompression (a gzip bomb stops here): more fail the file."""

MAX_ROWS: Final = 50_000_000
"""Rows of one snapshot (all of its parts); more fail it. Enforced by `planning.plan`."""

MAX_BLANK_RUN: Final = 1_000_000
"""Blank rows in a row (blank lines before the header too): more fail the file as not a segment
export. Enforced by `exporter.core.planning.plan` (rows) and here (lines before the header)."""

_CHUNK: Final = 64 * 1024
_CUT: Final = b"\x00\n"
"""What the decoder gets instead of a line over LINE_CAP (or csv, instead of a line with too many
fields): a lone NUL, so no reader can take it for data, even if its line number were lost."""
_CUT_TEXT: Final = _CUT.decode()
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
    """The bytes the text decoder sees, counted, so an error can be placed exactly.

    Also turns gzip failures into SnapshotErrors, strips a UTF-8 byte-order mark, and bounds
    lines: it hands on whole lines only (a block of them per read), holding back the start of
    a line until its line break arrives. A line over LINE_CAP bytes is dropped as its bytes
    arrive (memory stays flat however long it is) and replaced by `_CUT`; `cut_lines` says
    which line that was. A file over FILE_CAP bytes fails.
    """

    def __init__(
        self,
        inner: _Readable,
        raw: _RawCounter,
        *,
        gzipped: bool,
        watch: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._raw = raw
        self._gzipped = gzipped
        self._watch = watch
        self.line_cap = LINE_CAP
        self.file_cap = FILE_CAP
        # A line inside one chunk is shorter than a chunk: chunks of at most LINE_CAP bytes
        # mean only lines that cross chunk boundaries need measuring.
        self._chunk = max(1, min(_CHUNK, self.line_cap))
        self.total = 0  # bytes of the file read so far (decompressed; a skipped BOM included)
        self.newlines = 0  # line breaks handed on (a cut line's marker counts as its line)
        self.last_start = 0  # file offset, line breaks before, and the latest block handed on
        self.last_newlines = 0
        self.last_len = 0
        self._last = b""
        self._pending = b""  # bytes read but not yet looked at, and their file offset
        self._pending_at = 0
        self._held: list[bytes] = []  # the start of a line whose line break has not come yet
        self._held_len = 0
        self._held_at = 0
        self._skipping = False
        self._skip_at = 0
        self.cut_lines: deque[tuple[int, int]] = deque(maxlen=1024)
        """(line, byte offset) of each line replaced by `_CUT`, oldest first; the CSV reader
        takes them off as its rows pass them (a few are pending at most: one is over a MiB)."""
        self.suspicious = False
        """Set once a NUL byte is handed on or a line longer than FIELD_CAP bytes ends: from then
        on, rows get the full (slower) per-field checks. Clean files never pay for them."""

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
        self.total = len(head)
        skipped = 0
        for signature, problem in _SIGNATURES:
            if head.startswith(signature):
                if problem is None:
                    skipped = len(signature)
                    head = head[skipped:]
                    break
                raise SnapshotError("binary_file", f"the file is {problem}", offset=0)
        self._pending, self._pending_at = head, skipped
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
        """The next block of whole lines (b"" at the end). It may be longer than `size`: the C
        text decoder takes what it gets, and a line is never split across two blocks."""
        while True:
            if self._pending:
                # At most a chunk at a time (the file's head may be longer than a tiny line
                # cap): only a line that crosses a chunk boundary needs measuring.
                data, at = self._pending[: self._chunk], self._pending_at
                self._pending = self._pending[self._chunk :]
                self._pending_at += len(data)
            else:
                at = self.total
                data = self._pull(self._chunk)
                self.total += len(data)
                if self.total > self.file_cap:
                    raise self._too_large()
                if self._watch is not None:
                    self._watch()
                if not data:
                    return self._end()
            block = self._take(data, at)
            if block is not None:
                return block

    def _take(self, data: bytes, at: int) -> bytes | None:
        """Look at `data` (read from file offset `at`): a block to hand on, or None for more."""
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return None  # still inside the long line: dropped
            self._skipping = False
            self._pending, self._pending_at = data[end + 1 :] + self._pending, at + end + 1
            return self._cut()
        first = data.find(b"\n")
        if first < 0:
            if not self._held:
                self._held_at = at
            self._held.append(data)
            self._held_len += len(data)
            if self._held_len > self.line_cap:
                self._skip_at = self._held_at
                self._held, self._held_len, self._skipping = [], 0, True
            return None
        length = self._held_len + first  # of the line that ends in this chunk
        if length > self.line_cap:
            self._skip_at = self._held_at if self._held else at
            self._held, self._held_len = [], 0
            self._pending, self._pending_at = data[first + 1 :] + self._pending, at + first + 1
            return self._cut()
        if length > FIELD_CAP:
            self.suspicious = True
        last = data.rfind(b"\n") + 1
        if self._held:
            start = self._held_at
            self._held.append(data[:last])
            block = b"".join(self._held)
        else:
            start = at
            block = data if last == len(data) else data[:last]
        rest = data[last:]
        self._held, self._held_len, self._held_at = ([rest] if rest else []), len(rest), at + last
        return self._hand_on(block, start)

    def _cut(self) -> bytes:
        """The marker for the line just skipped, handed on in a block of its own."""
        self.cut_lines.append((self.newlines + 1, self._skip_at))
        self.suspicious = True
        return self._hand_on(_CUT, self._skip_at)

    def _hand_on(self, block: bytes, start: int) -> bytes:
        self.last_start = start
        self.last_newlines = self.newlines
        self.last_len = len(block)
        self._last = block
        self.newlines += block.count(b"\n")
        if b"\x00" in block:
            self.suspicious = True
        return block

    def _end(self) -> bytes:
        if self._skipping:
            line = self.newlines + 1
            raise SnapshotError(
                "line_too_long",
                f"line {line:,} is longer than {self.line_cap:,} bytes and no line break (LF) "
                "ends it before the end of the file: this is not a CSV or JSON Lines file",
                line=line,
                offset=self._skip_at,
            )
        if not self._held:
            return b""
        block = b"".join(self._held)  # the last line, without a line break
        start = self._held_at
        self._held, self._held_len = [], 0
        if len(block) > FIELD_CAP:
            self.suspicious = True
        return self._hand_on(block, start)

    def _too_large(self) -> SnapshotError:
        what = "decompresses to" if self._gzipped else "is"
        return SnapshotError(
            "file_too_large",
            f"the file {what} more than {self.file_cap:,} bytes, the limit for one snapshot "
            "file" + (" (a gzip bomb?)" if self._gzipped else ""),
            offset=self.file_cap,
        )

    def read(self, size: int | None = -1, /) -> bytes:
        if size is not None and size >= 0:
            return self.read1(size)
        parts = []
        while chunk := self.read1(_CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def line_offset(self, line: int) -> int | None:
        """The byte offset where `line` starts, if it is in the latest block (where the reader
        is: blocks end with a line break, so the decoder never reads ahead of one)."""
        skip = line - self.last_newlines - 1
        if skip < 0 or skip > self._last.count(b"\n"):
            return None
        pos = 0
        for _ in range(skip):
            pos = self._last.index(b"\n", pos) + 1
        return self.last_start + pos

    def decode_error(self, exc: UnicodeDecodeError) -> SnapshotError:
        """Place a decode error: the decoder's object is its pending bytes + the latest block."""
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


class _Feed:
    """The lines csv.reader parses, looked at on their way in (one generator step a line).

    - A row that spans lines (line breaks inside quotes) may hold LINE_CAP characters; past
      that the file fails: the quote's end cannot be trusted.
    - A line that starts a row, holds no quote character and more delimiters than the row may
      have fields is replaced by `_CUT` (and noted in `flagged`): csv never splits it into a
      list of up to a million fields.

    `done` is the reader's `line_num` after its latest complete row: the row loop sets it, so
    a line fetched when `done` equals the lines fetched so far starts a new row.
    """

    __slots__ = (
        "_counted",
        "_delimiter",
        "_lines",
        "_quote",
        "_skipped",
        "done",
        "flagged",
        "max_fields",
    )

    def __init__(
        self,
        lines: Iterable[str],
        counted: _Counted,
        *,
        skipped: int,
        delimiter: str,
        quoting: bool,
    ) -> None:
        self._lines = lines
        self._counted = counted
        self._skipped = skipped
        self._delimiter = delimiter
        self._quote = '"' if quoting else ""
        self.done = 0
        # Fields a row may have: set once the columns are known (a header is checked on its own).
        self.max_fields = sys.maxsize
        # (line, fields) of each line replaced because of its fields, oldest first.
        self.flagged: deque[tuple[int, int]] = deque(maxlen=1024)

    def __iter__(self) -> Iterator[str]:
        cap = LINE_CAP
        delimiter, quote, skipped = self._delimiter, self._quote, self._skipped
        size = opened = 0
        for fetched, line in enumerate(self._lines):
            if self.done == fetched:  # this line starts a row
                size = len(line)
                opened = fetched + 1
                if size >= self.max_fields and (not quote or quote not in line):
                    fields = line.count(delimiter) + 1
                    if fields > self.max_fields:
                        self.flagged.append((opened + skipped, fields))
                        self._counted.suspicious = True
                        yield _CUT_TEXT
                        continue
            else:
                size += len(line)
                if size > cap:
                    line_no = fetched + 1 + skipped
                    raise SnapshotError(
                        "malformed_csv",
                        f"the row that starts on line {opened + skipped:,} is still inside a "
                        f"quoted field after {cap:,} characters: most likely a quote that is "
                        "never closed",
                        line=line_no,
                        offset=self._counted.line_offset(line_no),
                    )
            yield line


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
    watch: Callable[[], None] | None = None
    """Called for every 64 KiB the reader reads (`planning.plan` sets its deadline check here), so
    even a line that takes long to skip is watched. It may raise."""

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
        self._where: str | None = None  # the part being read, as errors name it
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
        self._bytes = _Counted(inner, counter, gzipped=self.compressed, watch=self._tick)
        head = self._bytes.start()
        if not head:
            if empty_ok:
                return False
            what = "decompresses to 0 bytes" if self.compressed else "holds only a byte-order mark"
            raise SnapshotError("empty_file", f"the file is empty: it {what}")
        self._text = io.TextIOWrapper(self._bytes, encoding="utf-8", errors="strict", newline="")
        self._text._CHUNK_SIZE = _CHUNK  # type: ignore[attr-defined]  # fewer, larger decodes
        return True

    def _tick(self) -> None:
        if self.watch is not None:
            self.watch()

    def error(self, code: str, message: str, *, line: int | None = None) -> SnapshotError:
        """A file-level error found while its rows are read (by the planner, say): placed at
        `line` of the part being read, with the byte offset when the reader can still tell."""
        counted: _Counted | None = getattr(self, "_bytes", None)  # None before any part opened
        offset = None if line is None or counted is None else counted.line_offset(line)
        exc = SnapshotError(code, message, line=line, offset=offset)
        return exc if self._where is None else _located(exc, self._where)

    def _guard(self, fn: Callable[[], str]) -> str:
        try:
            return fn()
        except UnicodeDecodeError as exc:
            raise self._bytes.decode_error(exc) from None

    def _first_line(self) -> str:
        """The first non-blank line (the header, or the first JSON record)."""
        blank_cap = MAX_BLANK_RUN
        while True:
            line = self._guard(self._text.readline)  # at most LINE_CAP bytes: see _Counted
            if not line:
                raise SnapshotError(
                    "no_header", "the file holds only blank lines: no header row", line=self._line
                )
            self._line += 1
            if line == _CUT_TEXT and self._bytes.cut_lines:
                _, offset = self._bytes.cut_lines[-1]
                raise SnapshotError(
                    "line_too_long",
                    f"the first line is longer than {self._bytes.line_cap:,} bytes: no header "
                    "row or JSON record is that long; this is not a segment export",
                    line=self._line,
                    offset=offset,
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
            if self._line > blank_cap:
                raise SnapshotError(
                    "blank_rows",
                    f"the file starts with more than {blank_cap:,} blank lines: "
                    "this is not a segment export",
                    line=self._line,
                    offset=self._bytes.line_offset(self._line),
                )

    # --- CSV -------------------------------------------------------------------------------

    def _check_header_line(self, first: str) -> None:
        """Bound the header row before csv splits it: its bytes, and its columns when a count
        of delimiters is exact (no quotes)."""
        size = len(first.rstrip("\r\n").encode("utf-8", "surrogatepass"))  # as LINE_CAP
        if size > HEADER_CAP:
            raise SnapshotError(
                "header_too_large",
                f"the header row is {size:,} bytes, over the limit of {HEADER_CAP:,}",
                line=self._line,
            )
        if '"' not in first:
            columns = max(first.count(d) for d in DELIMITERS) + 1
            if columns > MAX_COLUMNS:
                raise _too_many_columns(columns, self._line)

    def _open_csv(self, first: str, mapping: FieldMapping) -> Iterator[tuple[int, Record]]:
        self._check_header_line(first)
        self.delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first], delimiter=d))))
        header_line = self._line
        feed = _Feed(
            itertools.chain([first], self._text),
            self._bytes,
            skipped=header_line - 1,
            delimiter=self.delimiter,
            quoting=True,
        )
        reader = csv.reader(feed, delimiter=self.delimiter)
        header = self._header(reader)
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
        return self._csv_records(reader, feed, header_line - 1)

    def _header(self, reader: _csv.Reader) -> list[str]:
        try:
            header = [h.strip() for h in next(reader)]
        except csv.Error as exc:
            raise SnapshotError("malformed_csv", f"the header row is malformed: {exc}") from None
        except UnicodeDecodeError as exc:
            raise self._bytes.decode_error(exc) from None
        if len(header) > MAX_COLUMNS:
            raise _too_many_columns(len(header), self._line)
        return header

    def _csv_records(
        self, reader: _csv.Reader, feed: _Feed, skipped: int
    ) -> Iterator[tuple[int, Record]]:
        columns = self.columns
        ncols = len(columns)
        max_fields = feed.max_fields = max(2 * ncols, FIELDS_CAP)
        indices = self.mapping.indices
        get: Callable[[list[str]], tuple[str, ...]]
        if len(indices) == 1:
            only = indices[0]

            def get(row: list[str]) -> tuple[str, ...]:
                return (row[only],)
        else:
            get = itemgetter(*indices)
        prev = feed.done = reader.line_num
        counted = self._bytes
        try:
            for row in reader:
                start = prev + 1 + skipped
                prev = feed.done = reader.line_num
                if len(row) != ncols or counted.suspicious:
                    yield (
                        start,
                        self._slow_row(
                            row, start, prev + skipped, feed=feed, get=get, max_fields=max_fields
                        ),
                    )
                    continue
                values = get(row)
                if values[0] and not values[0].isspace():
                    yield start, values
                else:
                    yield start, _csv_problem(row, columns, get, self._ragged, max_fields)
        except csv.Error as exc:
            line = reader.line_num + skipped
            if "field larger than field limit" in str(exc):
                raise SnapshotError(
                    "malformed_csv",
                    f"a field runs past the csv module's limit of {csv.field_size_limit():,} "
                    "characters",
                    line=line,
                ) from None
            raise SnapshotError(
                "malformed_csv", f"the CSV is malformed: {exc}", line=line
            ) from None
        except UnicodeDecodeError as exc:
            raise self._bytes.decode_error(exc) from None

    def _slow_row(
        self,
        row: list[str],
        start: int,
        end: int,
        *,
        feed: _Feed,
        get: Callable[[list[str]], tuple[str, ...]],
        max_fields: int,
    ) -> Record:
        """The slow path: a line of this row (lines `start` to `end`) that was cut or flagged on
        its way in, else `_csv_problem`."""
        cut = _take_marks(self._bytes.cut_lines, start, end)
        if cut is not None:
            which = "the line" if cut[0] == start else f"line {cut[0]:,} of the row"
            return RowProblem(
                "line_too_long", f"{which} is longer than {self._bytes.line_cap:,} bytes"
            )
        flagged = _take_marks(feed.flagged, start, end)
        if flagged is not None:
            return _too_many_fields(flagged[1], max_fields)
        return _csv_problem(row, self.columns, get, self._ragged, max_fields)

    # --- CSV in parts (a CDM entity's partitions) ---------------------------------------------

    def _open_parts(self, source: Parts, mapping: FieldMapping) -> None:
        if not source.columns:
            raise SnapshotError("no_header", "a snapshot in parts needs its column names")
        if len(source.columns) > MAX_COLUMNS:
            raise _too_many_columns(len(source.columns), None, what="the entity has")
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
            self._where = where = f"partition {index} of {len(parts)} ({part.name})"
            try:
                yield from self._part_records(part)
            except SnapshotError as exc:
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
            first = self._first_line()
            self._check_header_line(first)
            lines = itertools.chain([first], self._text)
            skipped = self._line - 1
        feed = _Feed(
            lines, self._bytes, skipped=skipped, delimiter=part.delimiter, quoting=part.quoting
        )
        if part.quoting:
            reader = csv.reader(feed, delimiter=part.delimiter)
        else:
            reader = csv.reader(feed, delimiter=part.delimiter, quoting=csv.QUOTE_NONE)
        if part.header:
            header = self._header(reader)
            if [h.casefold() for h in header] != [c.casefold() for c in self.columns]:
                raise SnapshotError(
                    "header_mismatch",
                    f"its header row names {_shown(header)}, but the entity's attributes are "
                    f"{_shown(self.columns)}, in that order",
                    line=skipped + 1,
                )
        yield from self._csv_records(reader, feed, skipped)

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
        except (ValueError, RecursionError) as exc:
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
        if len(obj) > MAX_COLUMNS:
            raise _too_many_columns(len(obj), self._line, what="the first record has")
        self.columns = tuple(str(k) for k in obj)
        self.mapping = mapping.resolve(self.columns)
        return self._jsonl_records(first)

    def _jsonl_records(self, first: str) -> Iterator[tuple[int, Record]]:
        keys = self.mapping.columns
        loads = json.loads
        max_fields = max(2 * len(self.columns), FIELDS_CAP)
        line_no = self._line
        yield line_no, _json_record(first, keys, loads, max_fields)
        try:
            for line in self._text:  # each at most LINE_CAP bytes: see _Counted
                line_no += 1
                yield line_no, _json_record(line, keys, loads, max_fields)
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


def _too_many_columns(count: int, line: int | None, what: str = "the header has") -> SnapshotError:
    return SnapshotError(
        "too_many_columns",
        f"{what} {count:,} columns, over the limit of {MAX_COLUMNS:,}",
        line=line,
    )


def _too_many_fields(fields: int, max_fields: int) -> RowProblem:
    return RowProblem(
        "too_many_fields", f"the row has {fields:,} fields, more than the {max_fields:,} allowed"
    )


def _take_marks(marks: deque[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """The first of `marks` (line, detail; in line order) on lines `start` to `end`, taking off
    every mark up to `end` (older ones belong to rows rejected for something else)."""
    found = None
    while marks and marks[0][0] <= end:
        mark = marks.popleft()
        if found is None and mark[0] >= start:
            found = mark
    return found


def _csv_problem(
    row: list[str],
    columns: Sequence[str],
    get: Callable[[list[str]], tuple[str, ...]],
    width: str = "the header has {}",
    max_fields: int = FIELDS_CAP,
) -> Record:
    """The careful look at a row that the fast path could not clear: too many fields, blank,
    ragged, too large, NUL; or, when none of those, its mapped values after all (as for a row
    without email). `width` says where the expected number of fields comes from."""
    if len(row) > max_fields:
        return _too_many_fields(len(row), max_fields)
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


def _json_record(
    line: str, keys: Sequence[str], loads: Callable[[str], object], max_fields: int = FIELDS_CAP
) -> Record:
    if not line.strip():
        return BLANK
    try:
        obj = loads(line)
    except (ValueError, RecursionError) as exc:
        if line == _CUT_TEXT:  # what _Counted hands on for a line over LINE_CAP
            return RowProblem("line_too_long", f"the line is longer than {LINE_CAP:,} bytes")
        return RowProblem("invalid_json", f"the line is not valid JSON: {_json_message(exc)}")
    if type(obj) is not dict:
        return RowProblem("not_json_object", f"the line is a JSON {_json_type(obj)}, not an object")
    # Each key takes at least 5 characters ("k":0,), so only a long line can hold too many.
    if len(line) > 4 * max_fields and len(obj) > max_fields:
        return _too_many_fields(len(obj), max_fields)
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


def _json_message(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
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
