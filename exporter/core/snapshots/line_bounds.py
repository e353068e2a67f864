"""The byte layer under a snapshot's text decoder: it counts and it bounds.

It counts bytes and line breaks as they pass, so a file-level error can say exactly where it is
(byte offset and line) without reading the file twice. It bounds lines: the decoder gets whole
lines only, and a line over `input_limits.LINE_CAP` bytes is never buffered: its bytes are
dropped as they arrive until its line break, and the line is replaced by `CUT` (a lone NUL) whose
line number the row readers look up, so that row alone is rejected (`line_too_long`). A file
over `input_limits.FILE_CAP` bytes (a gzip bomb) fails. It also turns gzip failures into
`SnapshotError`s and skips a UTF-8 byte-order mark (`formats.check_signature`).
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from exporter.core.errors import SnapshotError
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.formats import check_signature

CHUNK: Final = 64 * 1024
"""Bytes read from the file at a time (and handed to the decoder at a time, about)."""
CUT: Final = b"\x00\n"
"""What the decoder gets instead of a line over LINE_CAP (or csv, instead of a line with too many
fields): a lone NUL, so no reader can take it for data, even if its line number were lost."""
CUT_TEXT: Final = CUT.decode()


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class RawCounter:
    """Counts the bytes read from the file itself (for gzip errors) and replays a peeked head."""

    def __init__(self, raw: Readable, head: bytes) -> None:
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


class CountedBytes(io.BufferedIOBase):
    """The bytes the text decoder sees, counted, so an error can be placed exactly.

    Also turns gzip failures into SnapshotErrors, strips a UTF-8 byte-order mark, and bounds
    lines: it hands on whole lines only (a block of them per read), holding back the start of
    a line until its line break arrives. A line over LINE_CAP bytes is dropped as its bytes
    arrive (memory stays flat however long it is) and replaced by `CUT`; `cut_lines` says
    which line that was. A file over FILE_CAP bytes fails.
    """

    def __init__(
        self,
        inner: Readable,
        raw: RawCounter,
        *,
        gzipped: bool,
        watch: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._raw = raw
        self._gzipped = gzipped
        self._watch = watch
        self.line_cap = input_limits.LINE_CAP
        self.file_cap = input_limits.FILE_CAP
        # A line inside one chunk is shorter than a chunk: chunks of at most LINE_CAP bytes
        # mean only lines that cross chunk boundaries need measuring.
        self._chunk = max(1, min(CHUNK, self.line_cap))
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
        """(line, byte offset) of each line replaced by `CUT`, oldest first; the CSV reader
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
        skipped = check_signature(head)
        head = head[skipped:]
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
        if length > input_limits.FIELD_CAP:
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
        return self._hand_on(CUT, self._skip_at)

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
        if len(block) > input_limits.FIELD_CAP:
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
        while chunk := self.read1(CHUNK):
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
