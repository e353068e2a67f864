"""The JSON Lines reader: one JSON object per line; the keys of the first name the columns, and
each line's values at the mapped keys are its record. Scalars become text (a list of scalars,
comma-joined); anything else, or a line that is not a JSON object, rejects that row alone.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence

from exporter.core.errors import SnapshotError
from exporter.core.mapping import FieldMapping
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.line_bounds import CUT_TEXT
from exporter.core.snapshots.records import (
    BLANK,
    Opened,
    Record,
    RowProblem,
    too_many_columns,
    too_many_fields,
)
from exporter.core.snapshots.text_file import TextFile


def open_jsonl(file: TextFile, first: str, mapping: FieldMapping) -> Opened:
    """A JSON Lines file whose first non-blank line is `first`: its columns (the first record's
    keys) and its records, the first one included."""
    stripped = first.strip()
    try:
        obj = json.loads(stripped)
    except (ValueError, RecursionError) as exc:
        hint = " (a JSON array: one object per line is expected)" if stripped[:1] == "[" else ""
        raise SnapshotError(
            "not_jsonl",
            f"the first record is not valid JSON{hint}: {_json_message(exc)}; "
            "a JSON Lines file holds one JSON object per line",
            line=file.line,
        ) from None
    if not isinstance(obj, dict):
        raise SnapshotError(
            "not_jsonl",
            f"the first record is a JSON {_json_type(obj)}, not an object; "
            "a JSON Lines file holds one JSON object per line",
            line=file.line,
        )
    if len(obj) > input_limits.MAX_COLUMNS:
        raise too_many_columns(len(obj), file.line, what="the first record has")
    columns = tuple(str(k) for k in obj)
    resolved = mapping.resolve(columns)
    return Opened(columns, resolved, _jsonl_records(file, first, resolved.columns, len(columns)))


def _jsonl_records(
    file: TextFile, first: str, keys: Sequence[str], ncols: int
) -> Iterator[tuple[int, Record]]:
    loads = json.loads
    max_fields = max(2 * ncols, input_limits.FIELDS_CAP)
    line_no = file.line
    yield line_no, _json_record(first, keys, loads, max_fields)
    try:
        for line in file.text:  # each at most LINE_CAP bytes: see CountedBytes
            line_no += 1
            yield line_no, _json_record(line, keys, loads, max_fields)
    except UnicodeDecodeError as exc:
        raise file.counted.decode_error(exc) from None


def _json_record(
    line: str, keys: Sequence[str], loads: Callable[[str], object], max_fields: int
) -> Record:
    if not line.strip():
        return BLANK
    try:
        obj = loads(line)
    except (ValueError, RecursionError) as exc:
        if line == CUT_TEXT:  # what CountedBytes hands on for a line over LINE_CAP
            return RowProblem(
                "line_too_long", f"the line is longer than {input_limits.LINE_CAP:,} bytes"
            )
        return RowProblem("invalid_json", f"the line is not valid JSON: {_json_message(exc)}")
    if type(obj) is not dict:
        return RowProblem("not_json_object", f"the line is a JSON {_json_type(obj)}, not an object")
    # Each key takes at least 5 characters ("k":0,), so only a long line can hold too many.
    if len(line) > 4 * max_fields and len(obj) > max_fields:
        return too_many_fields(len(obj), max_fields)
    values = tuple(map(obj.get, keys))
    if all(type(v) is str for v in values):
        out: tuple[str, ...] = values  # type: ignore[assignment]
    else:
        converted = []
        for key, value in zip(keys, values, strict=True):
            text = _json_value(value)
            if text is None:
                return RowProblem(
                    "bad_value", f"key {key!r} holds a JSON {_json_type(value)}, not a value"
                )
            converted.append(text)
        out = tuple(converted)
    # Mapped keys always; all keys when the raw line is long enough or holds an escaped NUL.
    pairs: Iterable[tuple[object, object]] = zip(keys, out, strict=True)
    field_cap = input_limits.FIELD_CAP
    if len(line) > field_cap or "\\u0000" in line:
        pairs = itertools.chain(pairs, obj.items())
    for name, item in pairs:
        if isinstance(item, str):
            if len(item) > field_cap:
                return RowProblem(
                    "field_too_large", f"key {name!r} holds more than {field_cap:,} characters"
                )
            if "\x00" in item:
                return RowProblem("nul_byte", f"key {name!r} holds a NUL character")
    if not "".join(out).strip() and all(_is_blank(v) for v in obj.values()):
        return BLANK
    return out


def _json_value(value: object) -> str | None:
    """A JSON scalar as text; a list of scalars joined by commas; None for anything else."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    return None


def _is_blank(value: object) -> bool:
    text = _json_value(value)
    return text is not None and not text.strip()


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _json_message(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return str(exc)
