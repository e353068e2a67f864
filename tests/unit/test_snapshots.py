"""The snapshot reader's contract: which files fail as a whole (and where), which rows are
rejected (and why), and that reading always goes on after a row-level problem.

Every input is crafted small in `tmp_path`; the few larger ones (a bad byte past the first
64 KiB chunk, a line over 1 MiB) are built from repeated rows so their exact offsets are known.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import struct
import zipfile
import zlib
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.errors import MappingError, SnapshotError
from exporter.core.mapping import FieldMapping
from exporter.core.planning import PlanStats, RejectedRow, plan_file
from exporter.core.snapshots import input_limits, line_bounds
from exporter.core.snapshots.input_limits import FIELD_CAP, LINE_CAP
from exporter.core.snapshots.parts import Part, Parts
from exporter.core.snapshots.records import BLANK, Record, RowProblem
from exporter.core.snapshots.snapshot import Snapshot, open_snapshot

BOM = b"\xef\xbb\xbf"
CHUNK = 64 * 1024
HEADER = b"email,first_name,city\n"
GOOD_ROW = b"ok@example.com,Olga,Oslo\n"
GOOD = ("ok@example.com", "Olga", "Oslo")


# --- helpers -------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def jsonl(*objects: object) -> bytes:
    return b"".join(json.dumps(o).encode("utf-8") + b"\n" for o in objects)


def read(path: Path, **kwargs: object) -> tuple[Snapshot, list[tuple[int, Record]]]:
    """Open a snapshot and read all of its records."""
    with open_snapshot(path, **kwargs) as snapshot:  # type: ignore[arg-type]
        return snapshot, list(snapshot.records())


def records(path: Path, **kwargs: object) -> list[tuple[int, Record]]:
    return read(path, **kwargs)[1]


def fails(path: Path, code: str, *words: str, **kwargs: object) -> SnapshotError:
    """Reading `path` raises SnapshotError `code` whose message holds each of `words`."""
    with pytest.raises(SnapshotError) as info:
        read(path, **kwargs)
    err = info.value
    assert err.code == code, f"{err.code}: {err}"
    for word in words:
        assert word.lower() in str(err).lower(), f"{word!r} not in {str(err)!r}"
    return err


def problem(record: Record, reason: str, *words: str) -> None:
    """`record` is a RowProblem with `reason` whose message holds each of `words`."""
    assert isinstance(record, RowProblem), record
    assert record.reason == reason, record
    for word in words:
        assert word.lower() in record.message.lower(), record


def padded(offset: int, tail: bytes, *, bom: bool = False) -> tuple[bytes, int]:
    """A CSV (header + rows) whose first `offset` bytes are valid, then `tail` at `offset`.

    Returns the bytes and the 1-based line on which `tail` starts.
    """
    prefix = (BOM if bom else b"") + HEADER
    filler = b"last@example.com,Lars,"
    i = 0
    while len(prefix) + 40 + len(filler) < offset:
        prefix += b"u%06d@example.com,Ann,Oslo\n" % i
        i += 1
    prefix += filler + b"x" * (offset - len(prefix) - len(filler))
    assert len(prefix) == offset
    return prefix + tail, prefix.count(b"\n") + 1


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def big_csv(rows: int = 3000) -> bytes:
    """A CSV whose gzip spans several deflate blocks' worth of varied data."""
    rng = random.Random(3)
    lines = [HEADER]
    for i in range(rows):
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))
        lines.append(
            f"user{i}.{name}@example.com,{name.title()},City{rng.randrange(999)}\n".encode()
        )
    return b"".join(lines)


def planned(path: Path, **kwargs: object) -> tuple[PlanStats, list[RejectedRow]]:
    rejected: list[RejectedRow] = []
    stats = plan_file(path, on_reject=rejected.append, **kwargs)  # type: ignore[arg-type]
    return stats, rejected


def assert_adds_up(stats: PlanStats) -> None:
    assert stats.rows == stats.valid + stats.rejected + stats.duplicates + stats.blank
    assert stats.rejected == sum(stats.reasons.values())


# --- empty files ---------------------------------------------------------------------------


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    fails(write(tmp_path, "s.csv", b""), "empty_file", "empty", "0 bytes")


def test_gzip_of_nothing_is_empty(tmp_path: Path) -> None:
    fails(write(tmp_path, "s.csv.gz", gzipped(b"")), "empty_file", "empty", "decompresses")


def test_file_of_only_a_bom_is_empty(tmp_path: Path) -> None:
    fails(write(tmp_path, "s.csv", BOM), "empty_file", "empty", "byte-order mark")


# --- not UTF-8 -----------------------------------------------------------------------------


def test_bad_byte_on_the_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"em\xe9il,name\nx@example.com,y\n")
    err = fails(path, "not_utf8", "not UTF-8", "0xE9")
    assert (err.line, err.offset) == (1, 2)


def test_bad_byte_on_a_later_line(tmp_path: Path) -> None:
    data = HEADER + b"a@example.com,Ann,Oslo\nb@example.com,J\xf6rg,Bonn\n" + GOOD_ROW
    err = fails(write(tmp_path, "s.csv", data), "not_utf8", "not UTF-8", "0xF6")
    assert (err.line, err.offset) == (3, data.index(b"\xf6"))


def test_bad_byte_in_jsonl_past_the_first_chunk(tmp_path: Path) -> None:
    good = jsonl({"email": "a@example.com", "first_name": "Ann"})
    head = good * (CHUNK // len(good) + 10)
    data = head + b'{"email": "b@example.com", "first_name": "J\xf6rg"}\n' + good
    err = fails(write(tmp_path, "s.jsonl", data), "not_utf8", "not UTF-8")
    assert (err.line, err.offset) == (head.count(b"\n") + 1, data.index(b"\xf6"))


# 65536 is the nominal chunk size; the reader's first read is its 8-byte sniffed head, so its
# real chunk boundaries fall at 8 + k * 65536. Both places are covered.
BOUNDARY_OFFSETS = (65535, 65536, 65537, 65543, 65544, 65545, 131079, 131080, 131081)


@pytest.mark.parametrize("offset", BOUNDARY_OFFSETS)
def test_bad_byte_around_the_chunk_boundary(tmp_path: Path, offset: int) -> None:
    data, line = padded(offset, b"\xff\n" + GOOD_ROW)
    err = fails(write(tmp_path, "s.csv", data), "not_utf8", "not UTF-8", "0xFF")
    assert (err.line, err.offset) == (line, offset)


@pytest.mark.parametrize("char", ["é", "€", "😀"])
@pytest.mark.parametrize("start", [65534, 65535, 65536, 65542, 65543])
def test_character_split_across_the_boundary_then_a_bad_byte(
    tmp_path: Path, char: str, start: int
) -> None:
    encoded = char.encode("utf-8")
    data, line = padded(start, encoded + b"\xfe\n" + GOOD_ROW)
    err = fails(write(tmp_path, "s.csv", data), "not_utf8", "not UTF-8", "0xFE")
    assert (err.line, err.offset) == (line, start + len(encoded))


@pytest.mark.parametrize("start", [65535, 65543])
def test_cut_character_across_the_boundary(tmp_path: Path, start: int) -> None:
    """The first two bytes of a three-byte character, then ASCII: the lead byte is the bad one."""
    data, line = padded(start, "€".encode()[:2] + b"A\n" + GOOD_ROW)
    err = fails(write(tmp_path, "s.csv", data), "not_utf8", "not UTF-8")
    assert (err.line, err.offset) == (line, start)


@pytest.mark.parametrize("size", [60, 70_000])
@pytest.mark.parametrize("name", ["s.csv", "s.csv.gz"])
def test_file_ending_in_an_incomplete_character(tmp_path: Path, size: int, name: str) -> None:
    data, line = padded(size, "€".encode()[:2])
    if name.endswith(".gz"):
        data = gzipped(data)
    err = fails(write(tmp_path, name, data), "not_utf8", "not UTF-8", "incomplete character")
    assert (err.line, err.offset) == (line, size)


@pytest.mark.parametrize("offset", [60, 65536, 65544, 200_000])
def test_bad_byte_in_gzip_counts_decompressed_bytes(tmp_path: Path, offset: int) -> None:
    data, line = padded(offset, b"\xff\n" + GOOD_ROW)
    err = fails(write(tmp_path, "s.csv.gz", gzipped(data)), "not_utf8", "not UTF-8", "0xFF")
    assert (err.line, err.offset) == (line, offset)


@pytest.mark.parametrize("offset", [60, 1000, 65536, 65544])
def test_offsets_count_the_bom(tmp_path: Path, offset: int) -> None:
    data, line = padded(offset, b"\xff\n" + GOOD_ROW, bom=True)
    assert data.startswith(BOM)
    err = fails(write(tmp_path, "s.csv", data), "not_utf8", "not UTF-8")
    assert (err.line, err.offset) == (line, offset)


# --- gzip ----------------------------------------------------------------------------------


def test_gzip_cut_in_half_is_truncated(tmp_path: Path) -> None:
    compressed = gzipped(big_csv())
    path = write(tmp_path, "s.csv.gz", compressed[: len(compressed) // 2])
    fails(path, "truncated_gzip", "truncated", "complete file")


def test_gzip_cut_inside_its_header_is_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv.gz", gzipped(big_csv(10))[:6])
    fails(path, "truncated_gzip", "truncated")


def test_gzip_with_flipped_bytes_is_corrupt(tmp_path: Path) -> None:
    damaged = bytearray(gzipped(big_csv()))
    middle = len(damaged) // 2
    for i in range(middle, middle + 16):
        damaged[i] ^= 0xFF
    fails(write(tmp_path, "s.csv.gz", bytes(damaged)), "corrupt_gzip", "corrupt")


def test_gzip_with_a_bad_crc_is_corrupt(tmp_path: Path) -> None:
    data = big_csv(200)
    damaged = bytearray(gzipped(data))
    damaged[-8:-4] = struct.pack("<I", zlib.crc32(data) ^ 0x5A5A5A5A)
    fails(write(tmp_path, "s.csv.gz", bytes(damaged)), "corrupt_gzip", "corrupt", "CRC")


# --- binary files --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = write(tmp_path, "s.csv", random.Random(seed).randbytes(4096))
    with pytest.raises(SnapshotError) as info:
        read(path)
    assert info.value.code in {"not_utf8", "binary_file"}, info.value
    assert re.search(r"not UTF-8|binary|NUL", str(info.value)), info.value


def _xlsx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("s.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40), "PNG"),
        ("s.csv", _xlsx(), "Excel"),
        ("s.csv", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        ("s.jsonl", b"%PDF-1.4\n", "PDF"),
    ],
    ids=["png", "xlsx", "pdf", "pdf-named-jsonl"],
)
def test_known_binary_signatures(tmp_path: Path, name: str, data: bytes, kind: str) -> None:
    err = fails(write(tmp_path, name, data), "binary_file", kind)
    assert err.offset == 0


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom"])
def test_utf16_with_bom(tmp_path: Path, encoding: str) -> None:
    text = "email,first_name\nann@example.com,Ann\n"
    data = text.encode("utf-16") if encoding == "utf-16" else b"\xfe\xff" + text.encode("utf-16-be")
    err = fails(write(tmp_path, "s.csv", data), "binary_file", "UTF-16", "UTF-8")
    assert err.offset == 0


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom(tmp_path: Path, encoding: str) -> None:
    data = "email,first_name\nann@example.com,Ann\n".encode(encoding)
    err = fails(write(tmp_path, "s.csv", data), "binary_file", "NUL", "UTF-16")
    assert err.line == 1


# --- no header, no email column, malformed -------------------------------------------------


def test_first_row_holding_an_email_is_not_a_header(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"ann@example.com,Ann\nbob@example.com,Bob\n")
    err = fails(path, "no_header", "no header", "email address")
    assert err.line == 1


def test_no_header_line_counts_leading_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"\n\r\nann@example.com,Ann\n")
    assert fails(path, "no_header", "no header").line == 3


def test_only_blank_lines(tmp_path: Path) -> None:
    fails(write(tmp_path, "s.csv", b"\n\n\r\n   \n"), "no_header", "blank lines", "no header")


def test_first_line_over_a_mib_without_a_line_break(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"a" * (LINE_CAP + 10))
    err = fails(path, "line_too_long", "line 1 ", "1,048,576 bytes", "no line break")
    assert (err.line, err.offset) == (1, 0)


def test_first_line_over_a_mib_then_more_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"a" * (LINE_CAP + 10) + b"\nemail\nann@example.com\n")
    err = fails(path, "line_too_long", "first line", "1,048,576 bytes")
    assert (err.line, err.offset) == (1, 0)


def test_no_column_mapped_to_email(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"id,given,town\n1,Ann,Oslo\n")
    with pytest.raises(MappingError) as info:
        read(path)
    message = str(info.value)
    assert "email" in message
    for column in ("'id'", "'given'", "'town'"):
        assert column in message


def test_unclosed_quote_before_a_mib_of_data(tmp_path: Path) -> None:
    rest = b"x@example.com,Xena,Paris\n" * (LINE_CAP // 25 + 100)
    data = HEADER + b'a@example.com,"Ann,Oslo\n' + rest
    err = fails(write(tmp_path, "s.csv", data), "malformed_csv", "quote", "never closed")
    assert err.line is not None
    assert err.line >= 2


# --- JSON Lines files that are not JSON Lines ----------------------------------------------


def test_jsonl_first_line_not_json(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", b"\nemail,first_name\n" + jsonl({"email": "a@example.com"}))
    err = fails(path, "not_jsonl", "not valid JSON", "one JSON object per line")
    assert err.line == 2


@pytest.mark.parametrize(
    "data",
    [b'[{"email": "a@example.com"}]\n', b'[\n{"email": "a@example.com"}\n]\n'],
    ids=["one-line", "pretty"],
)
def test_json_array_file(tmp_path: Path, data: bytes) -> None:
    err = fails(write(tmp_path, "s.jsonl", data), "not_jsonl", "array")
    assert err.line == 1


def test_jsonl_first_line_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", b'"a@example.com"\n' + jsonl({"email": "a@example.com"}))
    err = fails(path, "not_jsonl", "string", "not an object")
    assert err.line == 1


# --- valid files ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"email,first_name\n", b"email,first_name", b"email\r\n"])
def test_header_only_csv(tmp_path: Path, data: bytes) -> None:
    snapshot, rows = read(write(tmp_path, "s.csv", data))
    assert rows == []
    assert snapshot.columns[0] == "email"
    assert snapshot.format == "csv"


def test_bom_header_and_rows(tmp_path: Path) -> None:
    data = BOM + HEADER + b"ann@example.com,Ann,Oslo\n" + GOOD_ROW
    snapshot, rows = read(write(tmp_path, "s.csv", data))
    assert snapshot.columns == ("email", "first_name", "city")
    assert rows == [(2, ("ann@example.com", "Ann", "Oslo")), (3, GOOD)]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    lines = [["Email", "First Name", "City"], ["ann@example.com", "Ann", "Oslo, Norway"]]
    lines.append(["bob@example.com", "Bob", "Rome"])
    text = "".join(delimiter.join(line) + "\n" for line in lines)
    if delimiter == ",":
        text = text.replace("Oslo, Norway", '"Oslo, Norway"')
    snapshot, rows = read(write(tmp_path, "s.csv", text))
    assert snapshot.delimiter == delimiter
    assert snapshot.columns == ("Email", "First Name", "City")
    assert rows == [
        (2, ("ann@example.com", "Ann", "Oslo, Norway")),
        (3, ("bob@example.com", "Bob", "Rome")),
    ]


def test_quoted_newlines_and_crlf(tmp_path: Path) -> None:
    data = (
        b"email,first_name,city\r\n"
        b'ann@example.com,"Ann\r\nMarie",Oslo\r\n'
        b'bob@example.com,Bob,"Rio de\nJaneiro\nBrazil"\r\n'
        b'"cy@example.com","Cy ""The Guy""",Paris\r\n'
        b"dee@example.com,Dee,Lima\r\n"
    )
    assert records(write(tmp_path, "s.csv", data)) == [
        (2, ("ann@example.com", "Ann\r\nMarie", "Oslo")),
        (4, ("bob@example.com", "Bob", "Rio de\nJaneiro\nBrazil")),
        (7, ("cy@example.com", 'Cy "The Guy"', "Paris")),
        (8, ("dee@example.com", "Dee", "Lima")),
    ]


def test_leading_blank_lines_keep_physical_line_numbers(tmp_path: Path) -> None:
    data = b"\n\r\n   \n" + HEADER + b"\nann@example.com,Ann,Oslo\n" + b'b@example.com,"B\nB",X\n'
    data += GOOD_ROW
    snapshot, rows = read(write(tmp_path, "s.csv", data))
    assert snapshot.columns == ("email", "first_name", "city")
    assert rows == [
        (5, BLANK),
        (6, ("ann@example.com", "Ann", "Oslo")),
        (7, ("b@example.com", "B\nB", "X")),
        (9, GOOD),
    ]


def test_leading_blank_lines_in_jsonl(tmp_path: Path) -> None:
    data = b"\n\n" + jsonl({"email": "a@example.com"}, {"email": "b@example.com"})
    assert records(write(tmp_path, "s.jsonl", data)) == [
        (3, ("a@example.com",)),
        (4, ("b@example.com",)),
    ]


@pytest.mark.parametrize(
    "data",
    [
        HEADER + b"ann@example.com,Ann,Oslo\n\n" + GOOD_ROW,
        jsonl(
            {"email": "ann@example.com", "first_name": "Ann", "city": "Oslo"},
            {},
            dict(zip(("email", "first_name", "city"), GOOD, strict=True)),
        ),
    ],
    ids=["csv", "jsonl"],
)
def test_gzip_reads_like_the_plain_file(tmp_path: Path, data: bytes) -> None:
    kind = "csv" if data.startswith(b"email") else "jsonl"
    plain, plain_rows = read(write(tmp_path, f"s.{kind}", data))
    packed, packed_rows = read(write(tmp_path, f"s.{kind}.gz", gzipped(data)))
    assert packed_rows == plain_rows
    assert len(plain_rows) == 3
    assert (packed.format, packed.columns) == (plain.format, plain.columns) == (kind, plain.columns)
    assert packed.compressed
    assert not plain.compressed


@pytest.mark.parametrize(
    ("name", "data", "fmt"),
    [
        ("segment", jsonl({"email": "a@example.com"}), "jsonl"),
        ("segment.dat", b'  {"email": "a@example.com"}\n', "jsonl"),
        ("segment.gz", gzipped(jsonl({"email": "a@example.com"})), "jsonl"),
        ("segment", b"email\na@example.com\n", "csv"),
        ("segment.gz", gzipped(b"email\na@example.com\n"), "csv"),
    ],
)
def test_format_sniffed_without_a_known_suffix(
    tmp_path: Path, name: str, data: bytes, fmt: str
) -> None:
    snapshot, rows = read(write(tmp_path, name, data))
    assert snapshot.format == fmt
    assert [values for _, values in rows] == [("a@example.com",)]


def test_format_override(tmp_path: Path) -> None:
    as_jsonl = write(tmp_path, "s.csv", jsonl({"email": "a@example.com", "first_name": "Ann"}))
    snapshot, rows = read(as_jsonl, format="jsonl")
    assert snapshot.format == "jsonl"
    assert rows == [(1, ("a@example.com", "Ann"))]

    as_csv = write(tmp_path, "s.jsonl", b"email;first_name\na@example.com;Ann\n")
    snapshot, rows = read(as_csv, format="csv")
    assert (snapshot.format, snapshot.delimiter) == ("csv", ";")
    assert rows == [(2, ("a@example.com", "Ann"))]


def test_explicit_mapping_orders_values_email_first(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"Given,Mail\nAnn,ann@example.com\n")
    mapping = FieldMapping.parse(["email=Mail", "first_name=Given"])
    snapshot, rows = read(path, mapping=mapping)
    assert snapshot.mapping.columns == ("Mail", "Given")
    assert rows == [(2, ("ann@example.com", "Ann"))]


# --- row-level problems: CSV ---------------------------------------------------------------


def test_ragged_rows(tmp_path: Path) -> None:
    data = HEADER + b"a@example.com,Ann\n" + b"b@example.com,Bob,Rome,extra\n" + GOOD_ROW
    rows = records(write(tmp_path, "s.csv", data))
    assert [line for line, _ in rows] == [2, 3, 4]
    problem(rows[0][1], "ragged_row", "2 fields", "header has 3")
    problem(rows[1][1], "ragged_row", "4 fields", "header has 3")
    assert rows[2][1] == GOOD


@pytest.mark.parametrize("size", [FIELD_CAP + 1, 3 * FIELD_CAP])
def test_csv_field_too_large_in_an_unmapped_column(tmp_path: Path, size: int) -> None:
    data = b"email,first_name,notes\na@example.com,Ann," + b"x" * size + b"\n" + GOOD_ROW
    rows = records(write(tmp_path, "s.csv", data))
    assert [line for line, _ in rows] == [2, 3]
    problem(rows[0][1], "field_too_large", "notes", "65,536")
    assert rows[1][1] == ("ok@example.com", "Olga")  # notes is not mapped


@pytest.mark.parametrize("size", [FIELD_CAP + 1, 3 * FIELD_CAP])
@pytest.mark.parametrize(
    ("column", "mapping"),
    [
        ("first_name", None),
        ("postal_code", None),
        ("notes", ["custom:notes=notes"]),
        ("notes", None),  # unmapped
    ],
    ids=["first_name", "postal_code", "custom", "unmapped"],
)
def test_csv_field_too_large_is_rejected_by_plan(
    tmp_path: Path, size: int, column: str, mapping: list[str] | None
) -> None:
    columns = ["email", "first_name", "postal_code", "notes"]
    values = [b"a@example.com", b"Ann", b"0150", b"n"]
    values[columns.index(column)] = b"x" * size
    data = (",".join(columns) + "\n").encode() + b",".join(values) + b"\n"
    data += b"ok@example.com,Olga,0151,n\n"
    path = write(tmp_path, "s.csv", data)
    stats, rejected = planned(path, mapping=FieldMapping.parse(mapping) if mapping else None)
    assert [(r.row, r.line, r.reason) for r in rejected] == [(1, 2, "field_too_large")]
    assert "65,536" in rejected[0].message
    assert (stats.rows, stats.valid, stats.rejected) == (2, 1, 1)
    assert not stats.warnings


@pytest.mark.parametrize(
    ("column", "row"),
    [("first_name", b"a@example.com,A\x00nn,Oslo\n"), ("city", b"a@example.com,Ann,Os\x00lo\n")],
)
def test_nul_byte_in_a_field(tmp_path: Path, column: str, row: bytes) -> None:
    data = HEADER + row + GOOD_ROW
    rows = records(write(tmp_path, "s.csv", data))
    assert [line for line, _ in rows] == [2, 3]
    problem(rows[0][1], "nul_byte", column, "NUL")
    assert rows[1][1] == GOOD


def test_nul_byte_in_an_unmapped_column(tmp_path: Path) -> None:
    data = b"email,notes,first_name\na@example.com,n\x00,Ann\nok@example.com,n,Olga\n"
    rows = records(write(tmp_path, "s.csv", data))
    problem(rows[0][1], "nul_byte", "notes")
    assert rows[1] == (3, ("ok@example.com", "Olga"))


def test_blank_csv_rows(tmp_path: Path) -> None:
    data = HEADER + b",,\n\n  , ,\t\n\r\n" + GOOD_ROW
    rows = records(write(tmp_path, "s.csv", data))
    assert rows == [(2, BLANK), (3, BLANK), (4, BLANK), (5, BLANK), (6, GOOD)]


def test_row_without_email_is_not_blank(tmp_path: Path) -> None:
    rows = records(write(tmp_path, "s.csv", HEADER + b",Ann,Oslo\n" + GOOD_ROW))
    assert rows == [(2, ("", "Ann", "Oslo")), (3, GOOD)]


# --- row-level problems: JSON Lines --------------------------------------------------------

FIRST = {"email": "a@example.com", "first_name": "Ann", "notes": "n"}
LAST = {"email": "z@example.com", "first_name": "Zed"}


def middle_record(tmp_path: Path, line: bytes) -> Record:
    """The record read from `line` between two good JSON lines; checks both good ones."""
    rows = records(write(tmp_path, "s.jsonl", jsonl(FIRST) + line + jsonl(LAST)))
    assert [n for n, _ in rows] == [1, 2, 3]
    assert rows[0][1] == ("a@example.com", "Ann")
    assert rows[2][1] == ("z@example.com", "Zed"), "reading goes on after the line"
    return rows[1][1]


def test_jsonl_invalid_json(tmp_path: Path) -> None:
    problem(middle_record(tmp_path, b'{"email": "b@example.com",\n'), "invalid_json", "not valid")


@pytest.mark.parametrize(
    ("line", "kind"),
    [(b"[1, 2]\n", "array"), (b'"b@example.com"\n', "string"), (b"42\n", "number")],
)
def test_jsonl_not_an_object(tmp_path: Path, line: bytes, kind: str) -> None:
    problem(middle_record(tmp_path, line), "not_json_object", kind, "not an object")


@pytest.mark.parametrize("value", [{"x": 1}, [{"x": 1}]], ids=["object", "array-of-objects"])
def test_jsonl_nested_value_in_a_mapped_key(tmp_path: Path, value: object) -> None:
    line = jsonl({"email": "b@example.com", "first_name": value})
    problem(middle_record(tmp_path, line), "bad_value", "first_name")


def test_jsonl_line_over_a_mib(tmp_path: Path) -> None:
    line = jsonl({"email": "b@example.com", "notes": "x" * LINE_CAP})
    problem(middle_record(tmp_path, line), "line_too_long", "1,048,576")


@pytest.mark.parametrize("key", ["first_name", "notes"], ids=["mapped", "unmapped"])
def test_jsonl_field_too_large(tmp_path: Path, key: str) -> None:
    line = jsonl({"email": "b@example.com", "first_name": "Bea"} | {key: "x" * (FIELD_CAP + 1)})
    problem(middle_record(tmp_path, line), "field_too_large", key, "65,536")


def test_jsonl_nul_in_a_mapped_key(tmp_path: Path) -> None:
    line = jsonl({"email": "b@example.com", "first_name": "B\x00"})
    problem(middle_record(tmp_path, line), "nul_byte", "first_name", "NUL")


@pytest.mark.parametrize(
    "line",
    [b"\n", b"   \r\n", b"{}\n", b'{"email": "", "first_name": null, "notes": " "}\n'],
    ids=["empty", "spaces", "empty-object", "all-empty-values"],
)
def test_jsonl_blank(tmp_path: Path, line: bytes) -> None:
    assert middle_record(tmp_path, line) is BLANK


# --- through plan_file ---------------------------------------------------------------------


def test_csv_plan_counts_every_row_once(tmp_path: Path) -> None:
    data = (
        HEADER  # line 1
        + b"a@example.com,Ann,Oslo\n"  # row 1, line 2: valid
        + b" A@Example.COM,Ann,Oslo\n"  # row 2, line 3: duplicate
        + b"not-an-email,Bob,Rome\n"  # row 3, line 4: invalid_email
        + b",Cy,Lima\n"  # row 4, line 5: missing_email
        + b"\n"  # row 5, line 6: blank
        + b",,\n"  # row 6, line 7: blank
        + b"b@example.com,Bob\n"  # row 7, line 8: ragged_row
        + b"c@example.com,Cy,Paris,extra\n"  # row 8, line 9: ragged_row
        + b"d@example.com,D\x00,Rome\n"  # row 9, line 10: nul_byte
        + b'e@example.com,"Multi\nLine",Rome\n'  # row 10, lines 11-12: valid
        + b"f@example.com,Fay,"
        + b"x" * (3 * FIELD_CAP)
        + b"\n"  # row 11, line 13: field_too_large
        + b"g@example.com,Gus,Rome\n"  # row 12, line 14: valid
    )
    stats, rejected = planned(write(tmp_path, "s.csv", data))
    assert_adds_up(stats)
    assert (stats.rows, stats.valid, stats.rejected, stats.duplicates, stats.blank) == (
        12,
        3,
        6,
        1,
        2,
    )
    assert [(r.row, r.line, r.reason) for r in rejected] == [
        (3, 4, "invalid_email"),
        (4, 5, "missing_email"),
        (7, 8, "ragged_row"),
        (8, 9, "ragged_row"),
        (9, 10, "nul_byte"),
        (11, 13, "field_too_large"),
    ]
    assert stats.reasons == {
        "invalid_email": 1,
        "missing_email": 1,
        "ragged_row": 2,
        "nul_byte": 1,
        "field_too_large": 1,
    }
    assert stats.batches == 1


def test_jsonl_plan_counts_every_row_once(tmp_path: Path) -> None:
    data = (
        jsonl({"email": "a@example.com", "first_name": "Ann"})  # row 1: valid
        + jsonl({"email": " A@EXAMPLE.COM"})  # row 2: duplicate
        + b'{"email": "b@example.com",\n'  # row 3: invalid_json
        + b"[1, 2]\n"  # row 4: not_json_object
        + jsonl({"email": "c@example.com", "first_name": {"x": 1}})  # row 5: bad_value
        + b"\n"  # row 6: blank
        + jsonl({"email": "d@example.com", "notes": "x" * LINE_CAP})  # row 7: line_too_long
        + jsonl({"email": "e@example.com", "first_name": "x" * (FIELD_CAP + 1)})  # row 8
        + jsonl({"email": "f@example.com", "first_name": "F\x00"})  # row 9: nul_byte
        + jsonl({"email": "bad@"})  # row 10: invalid_email
        + jsonl({"email": "g@example.com"})  # row 11: valid
    )
    stats, rejected = planned(write(tmp_path, "s.jsonl.gz", gzipped(data)))
    assert_adds_up(stats)
    assert (stats.rows, stats.valid, stats.rejected, stats.duplicates, stats.blank) == (
        11,
        2,
        7,
        1,
        1,
    )
    assert [(r.row, r.line, r.reason) for r in rejected] == [
        (3, 3, "invalid_json"),
        (4, 4, "not_json_object"),
        (5, 5, "bad_value"),
        (7, 7, "line_too_long"),
        (8, 8, "field_too_large"),
        (9, 9, "nul_byte"),
        (10, 10, "invalid_email"),
    ]


def test_rows_after_leading_blank_lines_keep_their_lines_in_plan(tmp_path: Path) -> None:
    data = b"\n\n" + HEADER + b"bad,Ann,Oslo\n" + GOOD_ROW + b"ok@example.com,Dup,X\n"
    stats, rejected = planned(write(tmp_path, "s.csv", data))
    assert [(r.row, r.line, r.reason) for r in rejected] == [(1, 4, "invalid_email")]
    assert (stats.rows, stats.valid, stats.duplicates) == (3, 1, 1)
    assert_adds_up(stats)


# --- input limits --------------------------------------------------------------------------
# Each limit is lowered with monkeypatch (the reader reads them when a file is opened), so the
# inputs stay small; a few use the real limits where the input is cheap to build.


def lower(monkeypatch: pytest.MonkeyPatch, **limits: int) -> None:
    for name, value in limits.items():
        monkeypatch.setattr(input_limits, name, value)


def counted_blocks(data: bytes, *, gz: bool) -> tuple[list[bytes], line_bounds.CountedBytes]:
    """Every block the counting layer hands the text decoder, and the layer itself."""
    raw = io.BytesIO(gzipped(data) if gz else data)
    magic = raw.read(2)
    counter = line_bounds.RawCounter(raw, magic)
    inner = gzip.GzipFile(fileobj=counter, mode="rb") if gz else counter
    counted = line_bounds.CountedBytes(inner, counter, gzipped=gz)
    counted.start()
    blocks = []
    while block := counted.read1(CHUNK):
        blocks.append(block)
    return blocks, counted


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=30),
    cap=st.integers(1, 200),
    final_break=st.booleans(),
    gz=st.booleans(),
)
def test_the_counting_layer_hands_on_whole_lines_and_cuts_only_long_ones(
    lengths: list[int], cap: int, final_break: bool, gz: bool
) -> None:
    lines = [bytes([97 + i % 26]) * n for i, n in enumerate(lengths)]
    data = b"\n".join(lines) + (b"\n" if final_break else b"")
    expected, cuts, offset = [], [], 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if len(line) > cap:
            cuts.append((number, offset))
            expected.append(b"\x00\n")
        else:
            expected.append(line if last and not final_break else line + b"\n")
        offset += len(line) + 1
    with mock.patch.object(input_limits, "LINE_CAP", cap):
        if not final_break and len(lines[-1]) > cap:
            with pytest.raises(SnapshotError) as info:
                counted_blocks(data, gz=gz)
            assert info.value.code == "line_too_long"
            assert (info.value.line, info.value.offset) == cuts[-1]
            return
        blocks, counted = counted_blocks(data, gz=gz)
    assert b"".join(blocks) == b"".join(expected)
    assert all(block.endswith(b"\n") for block in blocks[:-1])  # never a line in two blocks
    assert list(counted.cut_lines) == cuts
    assert counted.total == len(data)


@pytest.mark.parametrize("name", ["s.csv", "s.csv.gz"])
def test_csv_line_over_the_cap_rejects_its_row_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    lower(monkeypatch, LINE_CAP=100)
    data = b"".join(
        [
            HEADER,  # line 1
            b"a@example.com,Ann,Oslo\n",  # line 2
            b"b@example.com,Bob,%s\n" % (b"x" * 200),  # line 3: 218 bytes, unquoted
            b'c@example.com,"Cy,%s",Rome\n' % (b"y" * 500),  # line 4: quoted, over the cap
            b"d@example.com,Dee,%s\n" % (b"z" * 82),  # line 5: exactly 100 bytes
            GOOD_ROW,  # line 6
        ]
    )
    assert len(data.splitlines()[4]) == 100
    path = write(tmp_path, name, gzipped(data) if name.endswith(".gz") else data)
    rows = records(path)
    assert [line for line, _ in rows] == [2, 3, 4, 5, 6]
    assert rows[0][1] == ("a@example.com", "Ann", "Oslo")
    problem(rows[1][1], "line_too_long", "the line is longer than 100 bytes")
    problem(rows[2][1], "line_too_long", "100 bytes")
    assert rows[3][1] == ("d@example.com", "Dee", "z" * 82)
    assert rows[4][1] == GOOD, "reading goes on after the long lines"


def test_long_line_inside_a_quoted_field_rejects_that_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower(monkeypatch, LINE_CAP=100)
    data = HEADER + b'a@example.com,"Ann\n' + b"x" * 300 + b'\nmore",Oslo\n' + GOOD_ROW
    rows = records(write(tmp_path, "s.csv", data))
    assert [line for line, _ in rows] == [2, 5]
    problem(rows[0][1], "line_too_long", "line 3 of the row", "100 bytes")
    assert rows[1][1] == GOOD


def test_a_2_million_character_field_rejects_its_row_not_the_file(tmp_path: Path) -> None:
    """The security review's case: a well-delimited row with one huge field, no quote open."""
    big = b"x" * 2_000_000
    data = b"".join(
        [
            HEADER + GOOD_ROW,
            b"a@example.com,Ann,%s\n" % big,  # row 2, line 3: unquoted
            b'b@example.com,Bob,"%s"\n' % big,  # row 3, line 4: quoted, closed
            b"c@example.com,Cy,Rome\n",
        ]
    )
    stats, rejected = planned(write(tmp_path, "s.csv.gz", gzipped(data)))
    assert [(r.row, r.line, r.reason) for r in rejected] == [
        (2, 3, "line_too_long"),
        (3, 4, "line_too_long"),
    ]
    assert all("1,048,576 bytes" in r.message and "quote" not in r.message for r in rejected)
    assert (stats.rows, stats.valid, stats.rejected) == (4, 2, 2)
    assert_adds_up(stats)


def test_a_long_line_that_runs_to_the_end_of_the_file_fails_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower(monkeypatch, LINE_CAP=100)
    data = HEADER + GOOD_ROW + b"a@example.com," + b"x" * 1000
    err = fails(write(tmp_path, "s.csv", data), "line_too_long", "100 bytes", "no line break")
    assert (err.line, err.offset) == (3, len(HEADER + GOOD_ROW))


def test_a_quote_open_past_the_cap_fails_the_file_where_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower(monkeypatch, LINE_CAP=100)
    rows = b"".join(b"x%d@example.com,Xena,Paris\n" % i for i in range(10))  # 26-27 bytes each
    data = HEADER + GOOD_ROW + b'a@example.com,"Ann,Oslo\n' + rows
    path = write(tmp_path, "s.csv", data)
    err = fails(path, "malformed_csv", "starts on line 3", "never closed")
    assert err.line == 6  # 24 + 26 + 26 + 26 characters: past 100 on line 6
    assert err.offset == len(HEADER + GOOD_ROW) + 24 + 26 + 26


def test_a_quoted_field_over_lines_within_the_cap_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower(monkeypatch, LINE_CAP=100)
    data = HEADER + b'a@example.com,"Ann\n' + b"x" * 60 + b'\ny",Oslo\n' + GOOD_ROW
    rows = records(write(tmp_path, "s.csv", data))
    assert rows == [(2, ("a@example.com", "Ann\n" + "x" * 60 + "\ny", "Oslo")), (5, GOOD)]


def test_a_bad_byte_after_a_cut_line_is_placed_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower(monkeypatch, LINE_CAP=100)
    head = HEADER + b"a@example.com,Ann," + b"x" * 150 + b"\n" + GOOD_ROW + b"b@example.com,B"
    err = fails(write(tmp_path, "s.csv", head + b"\xe9\n"), "not_utf8", "0xE9")
    assert (err.line, err.offset) == (4, len(head))


def test_a_row_with_too_many_fields_is_rejected_without_splitting_it(tmp_path: Path) -> None:
    data = b"".join(
        [
            HEADER,
            b"a@example.com%s\n" % (b"," * 1_000),  # line 2: 1,001 fields
            b"b@example.com,Bob,Rome,x\n",  # line 3: 4 fields
            b"," * 1_000_000 + b"\n",  # line 4: a million empty fields (was "blank")
            b'c@example.com,"C,y"%s\n' % (b",z" * 1_000),  # line 5: quoted, so csv counts
            GOOD_ROW,  # line 6
        ]
    )
    rows = records(write(tmp_path, "s.csv", data))
    assert [line for line, _ in rows] == [2, 3, 4, 5, 6]
    problem(rows[0][1], "too_many_fields", "1,001 fields", "1,000 allowed")
    problem(rows[1][1], "ragged_row", "4 fields")
    problem(rows[2][1], "too_many_fields", "1,000,001 fields")
    problem(rows[3][1], "too_many_fields", "1,002 fields")
    assert rows[4][1] == GOOD


def test_the_fields_cap_follows_a_wide_header(tmp_path: Path) -> None:
    header = b",".join([b"email"] + [b"c%d" % i for i in range(599)]) + b"\n"  # 600 columns
    row = b"a@example.com" + b",v" * 599 + b"\n"
    data = header + row + b"b@example.com" + b",v" * 1_099 + b"\n"  # 1,100 fields: ragged
    data += b"c@example.com" + b",v" * 1_200 + b"\n" + row.replace(b"a@", b"d@")  # 1,201
    rows = records(write(tmp_path, "s.csv", data))
    assert [line for line, _ in rows] == [2, 3, 4, 5]
    problem(rows[1][1], "ragged_row", "1100 fields")
    problem(rows[2][1], "too_many_fields", "1,201 fields", "1,200 allowed")
    assert rows[3][1] == ("d@example.com",)


def test_jsonl_record_with_too_many_keys(tmp_path: Path) -> None:
    many = {"email": "b@example.com"} | {f"k{i}": 0 for i in range(1_000)}
    problem(middle_record(tmp_path, jsonl(many)), "too_many_fields", "1,001 fields")


def test_jsonl_nested_too_deeply_is_a_row_problem(tmp_path: Path) -> None:
    line = b'{"email": "b@example.com", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    problem(middle_record(tmp_path, line), "invalid_json", "nested too deeply")


def test_header_over_its_byte_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lower(monkeypatch, HEADER_CAP=50)
    data = b"email," + b",".join(b"column_%d" % i for i in range(10)) + b"\n" + GOOD_ROW
    err = fails(write(tmp_path, "s.csv", data), "header_too_large", "95 bytes", "limit of 50")
    assert err.line == 1


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("s.csv", b"email,a,b,c,d,e\n" + GOOD_ROW),
        ("s.csv", b'"email","a","b","c","d","e"\n' + GOOD_ROW),  # quoted: counted after csv
        ("s.tsv", b"\n\nemail\ta\tb\tc\td\te\n" + GOOD_ROW),
        ("s.jsonl", jsonl({"email": "a@example.com", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5})),
    ],
    ids=["csv", "quoted", "tsv", "jsonl"],
)
def test_too_many_columns_fail_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, data: bytes
) -> None:
    lower(monkeypatch, MAX_COLUMNS=5)
    err = fails(write(tmp_path, name, data), "too_many_columns", "6 columns", "limit of 5")
    assert err.line == data.count(b"\n", 0, data.index(b"email")) + 1
    lower(monkeypatch, MAX_COLUMNS=6)
    assert records(write(tmp_path, name, data))


def test_too_many_attributes_in_parts_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    lower(monkeypatch, MAX_COLUMNS=2)
    parts = Parts(columns=("Email", "A", "B"), parts=(Part("p1.csv", lambda: io.BytesIO(b"")),))
    with pytest.raises(SnapshotError) as info:
        open_snapshot(parts)
    assert info.value.code == "too_many_columns"
    assert "the entity has 3 columns" in str(info.value)


def test_a_header_of_a_million_columns_fails_the_file(tmp_path: Path) -> None:
    header = b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n"
    data = gzipped(b"email," + header + GOOD_ROW)
    err = fails(write(tmp_path, "s.csv.gz", data), "line_too_long", "first line", "1,048,576")
    assert err.line == 1
    commas = gzipped(b"email" + b"," * 999_999 + b"\n" + GOOD_ROW)  # 1 MB: under LINE_CAP
    fails(write(tmp_path, "c.csv.gz", commas), "header_too_large", "limit of 262,144")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_a_file_over_the_size_cap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    lower(monkeypatch, FILE_CAP=10_000)
    data = HEADER + GOOD_ROW * 1_000
    path = write(tmp_path, "s.csv", gzipped(data) if gz else data)
    what = "decompresses to more than 10,000 bytes" if gz else "is more than 10,000 bytes"
    err = fails(path, "file_too_large", what)
    assert ("gzip bomb" in str(err)) is gz
    assert err.offset == 10_000
    lower(monkeypatch, FILE_CAP=len(data))
    assert len(records(path)) == 1_000


def test_blank_lines_before_the_header_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lower(monkeypatch, MAX_BLANK_RUN=3)
    assert records(write(tmp_path, "ok.csv", b"\n\n\n" + HEADER + GOOD_ROW)) == [(5, GOOD)]
    err = fails(write(tmp_path, "s.csv", b"\n\n\r\n\n" + HEADER), "blank_rows", "more than 3")
    assert (err.line, err.offset) == (4, 4)
