"""Reading a SendGrid contact export file: header matching, quoting, gzip or plain, and every
bound and malformation as an ExportFormatError that names no contact."""

from __future__ import annotations

import gzip
import io
from typing import IO

import pytest

from exporter.core import list_export
from exporter.core.errors import ExporterError
from exporter.core.list_export import MAX_COLUMNS, MAX_ROW_BYTES, ExportFormatError, read_export

HEADER = (
    "EMAIL,FIRST_NAME,LAST_NAME,ADDRESS_LINE_1,ADDRESS_LINE_2,CITY,STATE_PROVINCE_REGION,"
    "POSTAL_CODE,COUNTRY,ALTERNATE_EMAILS,PHONE_NUMBER,WHATSAPP,LINE,FACEBOOK,UNIQUE_NAME,"
    "PHONE_NUMBER_ID,EXTERNAL_ID,ANONYMOUS_ID,CREATED_AT,UPDATED_AT,CONTACT_ID,Tier,score"
)
WIDTH = HEADER.count(",") + 1


def row(email: str, **values: str) -> str:
    """One CSV line under HEADER, `values` by column name (already CSV-quoted if need be)."""
    names = HEADER.split(",")
    cells = [""] * len(names)
    cells[0] = email
    for name, value in values.items():
        cells[names.index(name)] = value
    return ",".join(cells) + "\r\n"


def export(*lines: str, header: str = HEADER, gzipped: bool = True, bom: bool = False) -> bytes:
    text = header + "\r\n" + "".join(lines)
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    return gzip.compress(data) if gzipped else data


def read_all(data: bytes | IO[bytes], fields: list[str]) -> list[tuple[str, list[str]]]:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    return list(read_export(stream, fields))


class Trickle(io.RawIOBase):
    """A stream that hands out at most `step` bytes per read, as a slow network might."""

    def __init__(self, data: bytes, step: int = 1) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = min(self._step, len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


# --- columns and values --------------------------------------------------------------------------


def test_fields_match_reserved_and_custom_columns_case_insensitively() -> None:
    data = export(
        row(" Ann@Example.COM ", FIRST_NAME="Ann", CITY="Oslo", Tier="gold", score="12"),
        row("bob@example.com", EXTERNAL_ID="x-2", score="2.5"),
    )

    reader = read_export(
        io.BytesIO(data), ["city", "first_name", "custom:tier", "custom:SCORE", "external_id"]
    )
    members = list(reader)

    assert reader.missing == ()
    assert members == [
        ("ann@example.com", ["Oslo", "Ann", "gold", "12", ""]),
        ("bob@example.com", ["", "", "", "2.5", "x-2"]),
    ]
    assert reader.members == 2


def test_fields_without_a_column_are_missing_and_read_as_blank() -> None:
    data = export(row("ann@example.com", FIRST_NAME="Ann"))

    reader = read_export(io.BytesIO(data), ["custom:loyalty", "first_name", "nickname"])

    assert reader.missing == ("custom:loyalty", "nickname")
    assert list(reader) == [("ann@example.com", ["", "Ann", ""])]


@pytest.mark.parametrize(("fields", "values"), [([], []), (["first_name"], ["Ann"])])
def test_no_field_or_one_field_still_gives_a_list(fields: list[str], values: list[str]) -> None:
    assert read_all(export(row("ann@example.com", FIRST_NAME="Ann")), fields) == [
        ("ann@example.com", values)
    ]


def test_rfc_4180_quoting_commas_quotes_and_line_breaks() -> None:
    data = export(
        row(
            "ann@example.com",
            FIRST_NAME='"Ann ""Annie"", Jr"',
            ALTERNATE_EMAILS='"a1@example.com,a2@example.com"',
            Tier='"gold\r\nplus\nmore"',
        ),
        row("bob@example.com", FIRST_NAME="Bob"),
    )

    assert read_all(data, ["first_name", "alternate_emails", "custom:Tier"]) == [
        (
            "ann@example.com",
            ['Ann "Annie", Jr', "a1@example.com,a2@example.com", "gold\r\nplus\nmore"],
        ),
        ("bob@example.com", ["Bob", "", ""]),
    ]


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
def test_gzip_or_plain_with_or_without_a_byte_order_mark(gzipped: bool, bom: bool) -> None:
    data = export(
        row("ann@example.com", CITY="Zürich"), row("bob@example.com"), gzipped=gzipped, bom=bom
    )

    assert read_all(data, ["city"]) == [("ann@example.com", ["Zürich"]), ("bob@example.com", [""])]
    assert read_all(Trickle(data, step=1), ["city"]) == read_all(data, ["city"])  # type: ignore[arg-type]


def test_rows_without_email_are_skipped_and_counted_and_blank_lines_ignored() -> None:
    data = export(
        row("ann@example.com"),
        row("   ", FIRST_NAME="Nobody"),
        "\r\n",
        row("", FIRST_NAME="Nobody either"),
        row("bob@example.com"),
    )

    reader = read_export(io.BytesIO(data), ["first_name"])
    emails = [email for email, _ in reader]

    assert emails == ["ann@example.com", "bob@example.com"]
    assert reader.rows_without_email == 2


def test_a_header_only_export_has_no_members() -> None:
    reader = read_export(io.BytesIO(export()), ["first_name"])

    assert list(reader) == []
    assert reader.rows_without_email == 0


def test_many_rows_with_quoted_line_breaks_are_not_one_long_row() -> None:
    """The row bound follows quotes: 1.5 MB of short rows whose fields hold line breaks and
    doubled quotes never add up to one row."""
    line = row("ann@example.com", FIRST_NAME='"O""Brien\nthe ""second"""', Tier='"a\nb"')
    count = 1_500_000 // len(line) + 1

    members = read_all(export(line * count), ["first_name"])

    assert len(members) == count
    assert members[0] == ("ann@example.com", ['O"Brien\nthe "second"'])


# --- bounds and malformed files ------------------------------------------------------------------


def format_error(data: bytes | IO[bytes], fields: list[str] | None = None) -> str:
    with pytest.raises(ExportFormatError) as raised:
        read_all(data, fields or ["first_name"])
    assert isinstance(raised.value, ExporterError)
    message = str(raised.value)
    assert "example.com" not in message  # never contact data
    return message


def test_an_export_without_an_email_column_is_refused() -> None:
    message = format_error(export("ann@example.com,Ann\r\n", header="MAIL,FIRST_NAME"))

    assert "no EMAIL column" in message


def test_a_json_lines_export_is_not_taken_for_csv() -> None:
    data = gzip.compress(b'{"contact_id":"1","email":"ann@example.com"}\n')

    assert "no EMAIL column" in format_error(data)


def test_an_empty_file_is_refused() -> None:
    assert "empty" in format_error(b"")
    assert "empty" in format_error(gzip.compress(b""))


def test_a_file_that_is_not_utf8_is_refused() -> None:
    latin1 = (HEADER + "\r\n" + row("ann@example.com", CITY="Zürich")).encode("latin-1")

    assert "not UTF-8" in format_error(latin1)
    assert "not UTF-8" in format_error(gzip.compress(latin1))
    assert "not UTF-8" in format_error(b"\xff\xfeE\x00M\x00")  # UTF-16


def test_truncated_and_corrupt_gzip_are_refused() -> None:
    data = export(*(row(f"user{i}@example.com", CITY="Oslo") for i in range(2_000)))

    truncated = format_error(data[: len(data) // 2])
    corrupt = format_error(data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:])

    assert "truncated" in truncated
    assert "gzip" in corrupt


def test_a_row_longer_than_the_bound_is_refused() -> None:
    long_line = row("ann@example.com", FIRST_NAME="x" * MAX_ROW_BYTES)
    open_quote = row("ann@example.com", FIRST_NAME='"never closed') + "a,b\r\n" * 300_000
    just_under = row("ann@example.com", FIRST_NAME="x" * (MAX_ROW_BYTES - 2 * WIDTH - 20))

    assert "longer than 1,048,576 bytes" in format_error(export(long_line))
    assert "longer than 1,048,576 bytes" in format_error(export(open_quote, gzipped=False))
    assert len(read_all(export(just_under), ["first_name"])[0][1][0]) > 1_000_000


def test_too_many_columns_and_ragged_rows_are_refused() -> None:
    wide = ",".join(["EMAIL", *(f"c{i}" for i in range(MAX_COLUMNS))])

    assert "2,001 columns" in format_error(export(header=wide))
    ragged = format_error(export(row("ann@example.com"), "bob@example.com,Bob\r\n"))
    assert f"has 2 fields, its header has {WIDTH}" in ragged
    assert "row 3" in ragged


def test_more_decompressed_bytes_than_the_bound_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(list_export, "MAX_DECOMPRESSED_BYTES", 100_000)
    data = export(*(row(f"user{i}@example.com") for i in range(3_000)))

    assert len(gzip.decompress(data)) > 100_000
    assert "decompresses to more than 100,000 bytes" in format_error(data)
