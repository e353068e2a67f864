"""The reject report's columns, and how its rows read back in a run's details (CLI and API):
a row in a CDM partition names that partition; a row of a single file names none."""

from __future__ import annotations

import csv
import io

from exporter.ledger import RunRecord
from exporter.planning import RejectedRow
from exporter.reporting import RejectSample, RunDetails, details_json, summary
from exporter.reports import REPORT_COLUMNS, RejectReport

ONE = "ci/BlobExport/HighValue/2026/11/24/1433/HighValue_1.csv"
TWO = "ci/BlobExport/HighValue/2026/11/24/1433/HighValue_2.csv"


def written(*rejected: RejectedRow) -> list[list[str]]:
    out = io.StringIO()
    with RejectReport(out) as report:
        for row in rejected:
            report(row)
    assert report.count == len(rejected)
    return list(csv.reader(io.StringIO(out.getvalue())))


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
