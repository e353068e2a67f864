"""The reject report: one CSV line per rejected row, so a person can find and fix it at the source.

It names the row and line, a reason code and a message, and for a snapshot in parts (a CDM
entity) the partition the line is in; it never copies the row's values, so the report holds no
email address (the row number finds it in the snapshot).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Protocol

from exporter.planning import RejectedRow


class TextWriter(Protocol):
    def write(self, text: str, /) -> int: ...


REPORT_COLUMNS = ("row", "line", "reason", "message", "partition")
"""A fixed header, whatever the snapshot: `partition` is empty for a single file. It comes last so
the older columns keep their places for tools that read them by position."""


class RejectReport:
    """Writes rejected rows to a CSV file or text stream as they are found (streaming)."""

    def __init__(self, target: str | Path | TextWriter) -> None:
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

    def __call__(self, rejected: RejectedRow) -> None:
        self._writer.writerow(
            (rejected.row, rejected.line, rejected.reason, rejected.message, rejected.partition)
        )
        self.count += 1

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> RejectReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
