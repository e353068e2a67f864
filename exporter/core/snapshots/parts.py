"""A snapshot stored as several CSV files (`Parts`: a CDM entity's partitions, see
`exporter.core.cdm`), read in order as one: what the parts are, and how one part is read.

The columns are given up front (the entity's attributes): a headerless part takes them; a part
with a header row must name the same ones. Each part is opened only when the reader reaches it
(`snapshot.Snapshot` does, one part at a time), and its rows go through the same CSV reader as a
single file's (`csv_rows.CsvRows`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Final

from exporter.core.errors import SnapshotError
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.csv_rows import CsvRows, check_header_line
from exporter.core.snapshots.records import Record, too_many_columns
from exporter.core.snapshots.text_file import TextFile

_RAGGED: Final = "the entity has {} attributes"
"""Where a part's expected number of fields comes from, as a ragged row's message says."""


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


def check_columns(source: Parts) -> None:
    """Fail a snapshot in parts without columns, or with too many."""
    if not source.columns:
        raise SnapshotError("no_header", "a snapshot in parts needs its column names")
    if len(source.columns) > input_limits.MAX_COLUMNS:
        raise too_many_columns(len(source.columns), None, what="the entity has")


def part_records(
    file: TextFile, part: Part, columns: tuple[str, ...], indices: Sequence[int]
) -> Iterator[tuple[int, Record]]:
    """(line, record) for every row of one part, opened as `file` and read with the snapshot's
    `columns` (its values at `indices`); a header row, when the part has one, must name them."""
    lines: Iterable[str] = file.text
    skipped = 0
    if part.header:
        file.line = 0
        first = file.first_line()
        check_header_line(first, file.line)
        lines = itertools.chain([first], file.text)
        skipped = file.line - 1
    rows = CsvRows(file, lines, skipped=skipped, delimiter=part.delimiter, quoting=part.quoting)
    if part.header:
        header = rows.header()
        if [h.casefold() for h in header] != [c.casefold() for c in columns]:
            raise SnapshotError(
                "header_mismatch",
                f"its header row names {_shown(header)}, but the entity's attributes are "
                f"{_shown(columns)}, in that order",
                line=skipped + 1,
            )
    yield from rows.records(columns, indices, _RAGGED)


def _shown(columns: Sequence[str]) -> str:
    names = ", ".join(repr(c) for c in columns[:20]) or "none"
    return names + (f" and {len(columns) - 20} more" if len(columns) > 20 else "")
