"""Open a segment snapshot (a path, a binary stream or `Parts`) as a `Snapshot`: its format, its
columns, the mapping fitted to them, and its records, streamed one at a time.

This is where a snapshot's pieces meet: each file is opened as text (`text_file`), its format
told by name or by its first line (`formats`), and its rows read by the format's reader
(`csv_rows`, `jsonl_rows`; a snapshot in parts, part by part: `parts`). File-level problems
raise `SnapshotError` (the whole run fails with that message), placed at their line and byte
offset, and in which part; row-level problems come as `records.RowProblem`s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Literal, overload

from exporter.core.errors import SnapshotError
from exporter.core.mapping import FieldMapping, ResolvedMapping
from exporter.core.snapshots.csv_rows import open_csv
from exporter.core.snapshots.formats import Format, detect_format
from exporter.core.snapshots.jsonl_rows import open_jsonl
from exporter.core.snapshots.line_bounds import Readable
from exporter.core.snapshots.parts import Part, Parts, check_columns, part_records
from exporter.core.snapshots.records import Record
from exporter.core.snapshots.text_file import TextFile


class Snapshot:
    """An open snapshot: its format, its columns, the mapping fitted to them, and its records.

    Use as a context manager; iterate `records()` once. Each record comes with the 1-based line
    on which it starts.
    """

    format: Format
    delimiter: str | None
    columns: tuple[str, ...]
    mapping: ResolvedMapping
    compressed: bool
    """Whether the file (for a snapshot in parts: the latest part opened) is gzip-compressed."""
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
        self._file: TextFile | None = None  # the file being read (None before any part opened)
        self._where: str | None = None  # the part being read, as errors name it
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
        file = self._open_text(raw, empty_ok=False)
        fmt = format or detect_format(name)
        first = file.first_line()
        if fmt is None:
            fmt = "jsonl" if first.lstrip().startswith("{") else "csv"
        self.format = fmt
        if fmt == "csv":
            opened = open_csv(file, first, mapping)
        else:
            opened = open_jsonl(file, first, mapping)
        self.delimiter = opened.delimiter
        self.columns = opened.columns
        self.mapping = opened.mapping
        self._records = opened.records

    @overload
    def _open_text(self, raw: Readable, *, empty_ok: Literal[False]) -> TextFile: ...
    @overload
    def _open_text(self, raw: Readable, *, empty_ok: Literal[True]) -> TextFile | None: ...
    def _open_text(self, raw: Readable, *, empty_ok: bool) -> TextFile | None:
        """Open one file as text (see `TextFile`). None when it is empty and `empty_ok` (an empty
        part holds no rows); else an empty file raises."""
        magic = raw.read(2)
        if not magic:
            if empty_ok:
                return None
            raise SnapshotError("empty_file", "the file is empty (0 bytes)")
        self._file = file = TextFile(raw, magic, watch=self._tick)
        self.compressed = file.compressed
        return file if file.start(empty_ok=empty_ok) else None

    def _tick(self) -> None:
        if self.watch is not None:
            self.watch()

    def error(self, code: str, message: str, *, line: int | None = None) -> SnapshotError:
        """A file-level error found while its rows are read (by the planner, say): placed at
        `line` of the part being read, with the byte offset when the reader can still tell."""
        file = self._file
        offset = None if line is None or file is None else file.counted.line_offset(line)
        exc = SnapshotError(code, message, line=line, offset=offset)
        return exc if self._where is None else _located(exc, self._where)

    # --- in parts (a CDM entity's partitions) -----------------------------------------------

    def _open_parts(self, source: Parts, mapping: FieldMapping) -> None:
        check_columns(source)
        self.format = "csv"
        self.compressed = False
        self.delimiter = source.parts[0].delimiter if source.parts else ","
        self.columns = tuple(source.columns)
        self.mapping = mapping.resolve(self.columns)
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
        file = self._open_text(self._part_file, empty_ok=True)
        if file is None:
            return  # an empty partition: no rows
        yield from part_records(file, part, self.columns, self.mapping.indices)

    def _close_part(self) -> None:
        file, self._part_file = self._part_file, None
        close = getattr(file, "close", None)  # a blob downloader has nothing to close
        if close is not None:
            close()

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


def _located(exc: SnapshotError, where: str) -> SnapshotError:
    """The same error, its message prefixed with which part of the snapshot it is in."""
    located = SnapshotError(exc.code, f"{where}: {exc}")
    located.line, located.offset = exc.line, exc.offset
    return located


def open_snapshot(
    source: str | Path | IO[bytes] | Parts,
    *,
    name: str | None = None,
    mapping: FieldMapping | None = None,
    format: Format | None = None,
) -> Snapshot:
    """Open a snapshot from a path, a binary stream or `Parts`; see `Snapshot`."""
    return Snapshot(source, name=name, mapping=mapping, format=format)
