"""Every bound on a snapshot's input, in one place (the README's "Input limits" lists them).

A file built to cost memory or time costs at most about one line's worth (`LINE_CAP`) and is
stopped in bounded time. The readers look each limit up here when they use it
(`input_limits.LINE_CAP`, never a copy taken at import), so a test lowers a limit for every
reader at once by patching this module.
"""

from __future__ import annotations

from typing import Final

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
export. Enforced by `exporter.core.planning.plan` (rows) and by `text_file.TextFile.first_line`
(lines before the header)."""
