"""The CSV reader: a CSV file's header row and delimiter, then its rows as mapped values.

Rows are parsed by the C csv module from whole lines (`line_bounds` hands on nothing else); the
lines are looked at on their way in, so a row with far too many fields is never split into a
list of them, and a quote left open cannot swallow the rest of the file. A row the fast path
cannot clear (wrong number of fields, a cut line, a NUL, an oversized field) gets a careful
look (`_csv_problem`); clean files never pay for it. Each partition of a CDM entity is read
with it too (`parts.part_records`).
"""

from __future__ import annotations

import csv
import itertools
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Final

from exporter.core.errors import SnapshotError
from exporter.core.mapping import FieldMapping
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.line_bounds import CUT_TEXT, CountedBytes
from exporter.core.snapshots.records import (
    BLANK,
    Opened,
    Record,
    RowProblem,
    too_many_columns,
    too_many_fields,
)
from exporter.core.snapshots.text_file import TextFile

DELIMITERS: Final = (",", ";", "\t", "|")

# csv's own limit is process-wide; we raise it to LINE_CAP (FIELD_CAP is checked per row).
csv.field_size_limit(max(csv.field_size_limit(), input_limits.LINE_CAP))


def open_csv(file: TextFile, first: str, mapping: FieldMapping) -> Opened:
    """A CSV file whose first non-blank line, `first`, is its header row: its delimiter (the one
    that splits the header into the most columns), its columns, and its rows."""
    check_header_line(first, file.line)
    delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first], delimiter=d))))
    header_line = file.line
    rows = CsvRows(
        file, itertools.chain([first], file.text), skipped=header_line - 1, delimiter=delimiter
    )
    header = rows.header()
    for col in header:
        if "@" in col and "." in col.partition("@")[2]:
            raise SnapshotError(
                "no_header",
                "no header row: the first row holds an email address, so it looks like data; "
                "add a header row that names the columns",
                line=header_line,
            )
    columns = tuple(header)
    resolved = mapping.resolve(header)
    return Opened(columns, resolved, rows.records(columns, resolved.indices), delimiter)


def check_header_line(first: str, line: int) -> None:
    """Bound the header row (on `line`) before csv splits it: its bytes, and its columns when a
    count of delimiters is exact (no quotes)."""
    size = len(first.rstrip("\r\n").encode("utf-8", "surrogatepass"))  # as LINE_CAP
    if size > input_limits.HEADER_CAP:
        raise SnapshotError(
            "header_too_large",
            f"the header row is {size:,} bytes, over the limit of {input_limits.HEADER_CAP:,}",
            line=line,
        )
    if '"' not in first:
        columns = max(first.count(d) for d in DELIMITERS) + 1
        if columns > input_limits.MAX_COLUMNS:
            raise too_many_columns(columns, line)


class CsvRows:
    """The rows of one CSV file, parsed from `lines` (the file's text, or what is left of it
    with its first line put back) after `skipped` lines, as `_Feed` hands them on."""

    def __init__(
        self,
        file: TextFile,
        lines: Iterable[str],
        *,
        skipped: int,
        delimiter: str,
        quoting: bool = True,
    ) -> None:
        self._file = file
        self._counted = file.counted
        self._skipped = skipped
        self._feed = feed = _Feed(
            lines, file.counted, skipped=skipped, delimiter=delimiter, quoting=quoting
        )
        if quoting:
            self._reader = csv.reader(feed, delimiter=delimiter)
        else:
            self._reader = csv.reader(feed, delimiter=delimiter, quoting=csv.QUOTE_NONE)

    def header(self) -> list[str]:
        """The next row, as a header: its names stripped, its columns bounded."""
        try:
            header = [h.strip() for h in next(self._reader)]
        except csv.Error as exc:
            raise SnapshotError("malformed_csv", f"the header row is malformed: {exc}") from None
        except UnicodeDecodeError as exc:
            raise self._counted.decode_error(exc) from None
        if len(header) > input_limits.MAX_COLUMNS:
            raise too_many_columns(len(header), self._file.line)
        return header

    def records(
        self,
        columns: tuple[str, ...],
        indices: Sequence[int],
        ragged: str = "the header has {}",
    ) -> Iterator[tuple[int, Record]]:
        """(line, record) for every row left, the values at `indices` (email first) of rows of
        `columns`. `ragged` says where the expected number of fields comes from."""
        reader, feed, skipped = self._reader, self._feed, self._skipped
        ncols = len(columns)
        max_fields = feed.max_fields = max(2 * ncols, input_limits.FIELDS_CAP)
        get: Callable[[list[str]], tuple[str, ...]]
        if len(indices) == 1:
            only = indices[0]

            def get(row: list[str]) -> tuple[str, ...]:
                return (row[only],)
        else:
            get = itemgetter(*indices)
        prev = feed.done = reader.line_num
        counted = self._counted
        try:
            for row in reader:
                start = prev + 1 + skipped
                prev = feed.done = reader.line_num
                if len(row) != ncols or counted.suspicious:
                    yield (
                        start,
                        self._slow_row(
                            row,
                            start,
                            prev + skipped,
                            columns=columns,
                            get=get,
                            ragged=ragged,
                            max_fields=max_fields,
                        ),
                    )
                    continue
                values = get(row)
                if values[0] and not values[0].isspace():
                    yield start, values
                else:
                    yield start, _csv_problem(row, columns, get, ragged, max_fields)
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
            raise counted.decode_error(exc) from None

    def _slow_row(
        self,
        row: list[str],
        start: int,
        end: int,
        *,
        columns: tuple[str, ...],
        get: Callable[[list[str]], tuple[str, ...]],
        ragged: str,
        max_fields: int,
    ) -> Record:
        """The slow path: a line of this row (lines `start` to `end`) that was cut or flagged on
        its way in, else `_csv_problem`."""
        cut = _take_marks(self._counted.cut_lines, start, end)
        if cut is not None:
            which = "the line" if cut[0] == start else f"line {cut[0]:,} of the row"
            return RowProblem(
                "line_too_long", f"{which} is longer than {self._counted.line_cap:,} bytes"
            )
        flagged = _take_marks(self._feed.flagged, start, end)
        if flagged is not None:
            return too_many_fields(flagged[1], max_fields)
        return _csv_problem(row, columns, get, ragged, max_fields)


class _Feed:
    """The lines csv.reader parses, looked at on their way in (one generator step a line).

    - A row that spans lines (line breaks inside quotes) may hold LINE_CAP characters; past
      that the file fails: the quote's end cannot be trusted.
    - A line that starts a row, holds no quote character and more delimiters than the row may
      have fields is replaced by `CUT_TEXT` (and noted in `flagged`): csv never splits it into a
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
        counted: CountedBytes,
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
        cap = input_limits.LINE_CAP
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
                        yield CUT_TEXT
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
    width: str,
    max_fields: int,
) -> Record:
    """The careful look at a row that the fast path could not clear: too many fields, blank,
    ragged, too large, NUL; or, when none of those, its mapped values after all (as for a row
    without email). `width` says where the expected number of fields comes from."""
    if len(row) > max_fields:
        return too_many_fields(len(row), max_fields)
    joined = "".join(row)
    if not joined or joined.isspace():
        return BLANK
    if len(row) != len(columns):
        return RowProblem(
            "ragged_row", f"the row has {len(row)} fields, {width.format(len(columns))}"
        )
    field_cap = input_limits.FIELD_CAP
    for col, value in zip(columns, row, strict=True):
        if len(value) > field_cap:
            return RowProblem(
                "field_too_large", f"column {col!r} holds more than {field_cap:,} characters"
            )
        if "\x00" in value:
            return RowProblem("nul_byte", f"column {col!r} holds a NUL character")
    return get(row)
