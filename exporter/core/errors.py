"""Errors as types: a caller tells "this input is wrong" from "retry later" without parsing text.

Every message is meant for a person: it names the problem and where it is, and never carries an
email address or a secret.
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(ExporterError):
    """The input (a file, a mapping, a setting) is wrong: retrying will not help, fixing it will."""


class SnapshotError(InputError):
    """A snapshot file cannot be read as a whole (the run fails with this message).

    `code` is stable and machine-readable; `line` (1-based) and `offset` (0-based byte offset,
    in the decompressed data for gzip files) say where, when known.
    """

    def __init__(
        self, code: str, message: str, *, line: int | None = None, offset: int | None = None
    ) -> None:
        where = []
        if line is not None:
            where.append(f"line {line:,}")
        if offset is not None:
            where.append(f"byte offset {offset:,}")
        text = f"{message} ({', '.join(where)})" if where else message
        super().__init__(text)
        self.code = code
        self.line = line
        self.offset = offset


class MappingError(InputError):
    """The field mapping does not fit the snapshot or names an unknown field."""


class ExportFormatError(ExporterError):
    """A SendGrid contact export file cannot be read: not gzip or UTF-8 CSV, truncated, without
    an EMAIL column, or past one of `exporter.core.list_export`'s bounds. The message says which,
    never which contact. Reading the same file again will not help; a new export may."""
