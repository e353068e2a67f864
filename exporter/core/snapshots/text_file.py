"""One file of a snapshot opened as text, memory flat in its size: bytes flow through gzip (when
the file starts with gzip's magic), the counting and line-bounding layer (`line_bounds`) and the
C UTF-8 decoder in 64 KiB chunks. Also finds the file's first non-blank line (the header row or
the first JSON record), the one line every format starts from.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from typing import Final

from exporter.core.errors import SnapshotError
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.line_bounds import CHUNK, CUT_TEXT, CountedBytes, RawCounter, Readable

GZIP_MAGIC: Final = b"\x1f\x8b"


class TextFile:
    """Bytes -> gzip (by magic) -> `CountedBytes` -> UTF-8 text, for one file.

    `magic` is the file's first two bytes, already read from `raw` (they are replayed). Call
    `start` before reading `text`. `line` counts the lines `first_line` has consumed.
    """

    text: io.TextIOWrapper

    def __init__(self, raw: Readable, magic: bytes, *, watch: Callable[[], None]) -> None:
        counter = RawCounter(raw, magic)
        self.compressed = magic == GZIP_MAGIC
        inner: Readable = gzip.GzipFile(fileobj=counter, mode="rb") if self.compressed else counter
        self.counted = CountedBytes(inner, counter, gzipped=self.compressed, watch=watch)
        self.line = 0

    def start(self, *, empty_ok: bool) -> bool:
        """Read the file's head (see `CountedBytes.start`) and set up `text`. False when there is
        no text at all and `empty_ok` (an empty part holds no rows); else that raises."""
        if not self.counted.start():
            if empty_ok:
                return False
            what = "decompresses to 0 bytes" if self.compressed else "holds only a byte-order mark"
            raise SnapshotError("empty_file", f"the file is empty: it {what}")
        self.text = io.TextIOWrapper(self.counted, encoding="utf-8", errors="strict", newline="")
        self.text._CHUNK_SIZE = CHUNK  # type: ignore[attr-defined]  # fewer, larger decodes
        return True

    def first_line(self) -> str:
        """The first non-blank line (the header, or the first JSON record)."""
        counted = self.counted
        blank_cap = input_limits.MAX_BLANK_RUN
        while True:
            try:
                line = self.text.readline()  # at most LINE_CAP bytes: see CountedBytes
            except UnicodeDecodeError as exc:
                raise counted.decode_error(exc) from None
            if not line:
                raise SnapshotError(
                    "no_header", "the file holds only blank lines: no header row", line=self.line
                )
            self.line += 1
            if line == CUT_TEXT and counted.cut_lines:
                _, offset = counted.cut_lines[-1]
                raise SnapshotError(
                    "line_too_long",
                    f"the first line is longer than {counted.line_cap:,} bytes: no header "
                    "row or JSON record is that long; this is not a segment export",
                    line=self.line,
                    offset=offset,
                )
            if "\x00" in line:
                raise SnapshotError(
                    "binary_file",
                    "the first line holds NUL bytes: this is binary data or UTF-16 text, "
                    "not a UTF-8 CSV or JSON Lines file",
                    line=self.line,
                )
            if line.strip():
                return line
            if self.line > blank_cap:
                raise SnapshotError(
                    "blank_rows",
                    f"the file starts with more than {blank_cap:,} blank lines: "
                    "this is not a segment export",
                    line=self.line,
                    offset=counted.line_offset(self.line),
                )
