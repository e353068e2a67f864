"""What a snapshot's readers hand on, whatever the format: each row as mapped values, `BLANK`
or a `RowProblem` (that row alone is rejected; reading goes on), and the problems every format
reports alike. File-level problems are `SnapshotError`s (`exporter.core.errors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from exporter.core.errors import SnapshotError
from exporter.core.mapping import ResolvedMapping
from exporter.core.snapshots import input_limits


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
class Opened:
    """A file as a format's reader opened it: its columns, the mapping fitted to them, and its
    records, (line, record) in file order, read only as they are iterated."""

    columns: tuple[str, ...]
    mapping: ResolvedMapping
    records: Iterator[tuple[int, Record]]
    delimiter: str | None = None


def too_many_columns(count: int, line: int | None, what: str = "the header has") -> SnapshotError:
    return SnapshotError(
        "too_many_columns",
        f"{what} {count:,} columns, over the limit of {input_limits.MAX_COLUMNS:,}",
        line=line,
    )


def too_many_fields(fields: int, max_fields: int) -> RowProblem:
    return RowProblem(
        "too_many_fields", f"the row has {fields:,} fields, more than the {max_fields:,} allowed"
    )
