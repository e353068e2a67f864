"""The reject report: one CSV line per rejected row, so a person can find and fix it at the source.

It names the row and line, a reason code and a message, and for a snapshot in parts (a CDM
entity) the partition the line is in; it never copies the row's values, so the report holds no
email address (the row number finds it in the snapshot).

People open it in a spreadsheet, and some of its text comes from outside (a partition's blob
name, a header or value quoted in a message): a cell that begins with `=`, `+`, `-`, `@`, a tab
or a line break would be run as a formula. So every text cell that does is written with a
single quote before it (`spreadsheet_safe`, as OWASP's CSV injection guidance recommends); the
row and line numbers stay numbers. A line break inside a text cell becomes a space.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Final, Protocol

from exporter.core.planning import RejectedRow


class TextWriter(Protocol):
    def write(self, text: str, /) -> int: ...


FORMULA_STARTS: Final = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
"""What a spreadsheet may read as the start of a formula: OWASP's `=`, `+`, `-`, `@`, tab and
carriage return, a line feed, and their full-width forms (which some spreadsheets accept)."""


def spreadsheet_safe(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs: a single quote before a cell that would start a
    formula. Idempotent (an escaped cell starts with the quote), and text that is safe stays as
    it is."""
    if text and text[0] in FORMULA_STARTS:
        return "'" + text
    return text


def _cell(text: str) -> str:
    """A text cell of the report: formula-safe, on one line (a line break inside a cell would
    make readers that split the report into lines see a row that is not there)."""
    return spreadsheet_safe(text).replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


MAX_REPORT_ROWS: Final = 100_000
"""Rejected rows listed in one report (about 10 MB); the rest are counted by reason in the run,
and one last line says the report stops there."""

REPORT_COLUMNS = ("row", "line", "reason", "message", "partition")
"""A fixed header, whatever the snapshot: `partition` is empty for a single file. It comes last so
the older columns keep their places for tools that read them by position."""


class RejectReport:
    """Writes rejected rows to a CSV file or text stream as they are found (streaming)."""

    def __init__(self, target: str | Path | TextWriter, *, max_rows: int = MAX_REPORT_ROWS) -> None:
        stream: TextWriter
        if isinstance(target, (str, Path)):
            # closed by close() / __exit__: the report outlives this constructor
            self._owned: IO[str] | None = Path(target).open(  # noqa: SIM115
                "w", newline="", encoding="utf-8"
            )
            stream = self._owned
        else:
            self._owned = None
            stream = target
        self._writer = csv.writer(stream, lineterminator="\n")
        self._writer.writerow(REPORT_COLUMNS)
        self.count = 0
        """Rejected rows seen (listed or not)."""
        self.max_rows = max_rows

    def __call__(self, rejected: RejectedRow) -> None:
        self.count += 1
        if self.count > self.max_rows:
            if self.count == self.max_rows + 1:
                self._writer.writerow(
                    (
                        rejected.row,
                        rejected.line,
                        "report_truncated",
                        f"this report lists the first {self.max_rows:,} rejected rows; the run "
                        "counts every rejected row by reason",
                        "",
                    )
                )
            return
        self._writer.writerow(
            (
                rejected.row,
                rejected.line,
                _cell(rejected.reason),
                _cell(rejected.message),
                _cell(rejected.partition),
            )
        )

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> RejectReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
