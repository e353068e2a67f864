"""`python -m exporter check` as a person runs it: the counts it prints, the reject report it
writes, and the one-line `error:` (exit 2, no traceback) for every input it cannot read."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]

# A small file with one row of each outcome; its counts are spelled out in EXPECTED.
CRAFTED_ROWS = [
    "email,first_name,city",
    "ann@example.com,Ann,Oslo",  # row 1: valid
    "bob@example.com," + "B" * 60 + ",Rome",  # row 2: valid, first_name truncated (warning)
    " ANN@example.com,Annie,Oslo",  # row 3: duplicate of row 1
    "cy@@example.com,Cy,Paris",  # row 4: invalid_email
    "dee@example.com,Dee",  # row 5: ragged_row
    ",Eve,Lima",  # row 6: missing_email
    ",,",  # row 7: blank
    "fay@example.com,Fay,Bern",  # row 8: valid
    "gus@example,Gus,Graz",  # row 9: invalid_email
]
CRAFTED = "\n".join(CRAFTED_ROWS) + "\n"
CRAFTED_EMAILS = [
    "ann@example.com",
    "bob@example.com",
    "ANN@example.com",
    "cy@@example.com",
    "dee@example.com",
    "fay@example.com",
    "gus@example",
]
EXPECTED = {
    "rows": 9,
    "valid": 3,
    "rejected": 4,
    "duplicates": 1,
    "blank": 1,
    "warnings": 1,
    "batches": 1,
    "reasons": {"invalid_email": 2, "missing_email": 1, "ragged_row": 1},
}
EXPECTED_REJECTS = [
    ("4", "5", "invalid_email"),
    ("5", "6", "ragged_row"),
    ("6", "7", "missing_email"),
    ("9", "10", "invalid_email"),
]


# --- helpers -------------------------------------------------------------------------------


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check(*args: object) -> subprocess.CompletedProcess[str]:
    return run("check", *args)


def check_json(*args: object) -> dict[str, object]:
    result = check(*args, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.strip().splitlines()) == 1, "one JSON object on one line"
    summary = json.loads(result.stdout)
    assert isinstance(summary, dict)
    return summary


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def assert_input_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, nothing on stdout, and exactly one stderr line `error: ...` holding `words`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert result.stdout == ""
    return lines[0]


def printed_counts(stdout: str) -> dict[str, tuple[int, str]]:
    """The count lines of the text summary: label -> (number, detail)."""
    found = {}
    labels = "rows read|valid|rejected|duplicates|blank|warnings|batches"
    for line in stdout.splitlines():
        match = re.fullmatch(rf"\s+({labels})\s+([\d,]+)(?:\s+(.*))?", line)
        if match:
            found[match[1]] = (int(match[2].replace(",", "")), match[3] or "")
    return found


# --- a valid file --------------------------------------------------------------------------


def test_check_prints_the_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "segment.csv", CRAFTED)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    counts = printed_counts(result.stdout)
    assert {label: n for label, (n, _) in counts.items()} == {
        ("rows read" if key == "rows" else key): value
        for key, value in EXPECTED.items()
        if key != "reasons"
    }
    breakdown = counts["rejected"][1]
    for reason, n in EXPECTED["reasons"].items():  # type: ignore[union-attr]
        assert f"{reason} {n}" in breakdown
    assert "first_name_truncated 1" in counts["warnings"][1]
    assert "CSV" in result.stdout
    # The counts name no address; the sample contact (the user's own file, on their own
    # terminal) shows the first valid row as SendGrid would receive it.
    counted, sample = result.stdout.split("\nsample contact", 1)
    for email in CRAFTED_EMAILS:
        assert email.lower() not in counted.lower()
    assert json.loads(sample.splitlines()[1]) == {
        "email": "ann@example.com",
        "first_name": "Ann",
        "city": "Oslo",
    }


def test_check_json(tmp_path: Path) -> None:
    summary = check_json(write(tmp_path, "segment.csv", CRAFTED))
    assert {key: summary[key] for key in EXPECTED} == EXPECTED
    assert summary["format"] == "csv"
    assert summary["delimiter"] == ","
    assert summary["compressed"] is False


def test_check_json_on_gzipped_jsonl(tmp_path: Path) -> None:
    lines = [
        {"email": "ann@example.com", "first_name": "Ann"},
        {"email": "ANN@example.com"},
        {"email": "bob@example.com", "first_name": {"nested": True}},
        {},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines) + "not json\n"
    summary = check_json(write(tmp_path, "segment.jsonl.gz", gzip.compress(data.encode())))
    assert (summary["format"], summary["compressed"]) == ("jsonl", True)
    assert {key: summary[key] for key in ("rows", "valid", "rejected", "duplicates", "blank")} == {
        "rows": 5,
        "valid": 1,
        "rejected": 2,
        "duplicates": 1,
        "blank": 1,
    }
    assert summary["reasons"] == {"bad_value": 1, "invalid_json": 1}


def test_rejects_report(tmp_path: Path) -> None:
    path = write(tmp_path, "segment.csv", CRAFTED)
    report = tmp_path / "rejects.csv"
    result = check(path, "--rejects", report)
    assert result.returncode == 0, result.stderr
    assert str(report) in result.stdout
    text = report.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["row", "line", "reason", "message", "partition"]
    assert [tuple(r[:3]) for r in rows[1:]] == EXPECTED_REJECTS
    assert all(len(r) == 5 and r[3] and r[4] == "" for r in rows[1:])  # a file: no partition
    for email in CRAFTED_EMAILS:
        assert email.lower() not in text.lower(), email
        assert email.split("@")[0].strip().lower() + "@" not in text.lower(), email


def test_explicit_mapping(tmp_path: Path) -> None:
    data = "Given,Mail,Town\nAnn,ann@example.com,Oslo\nBob,bob@example.com,Rome\n"
    path = write(tmp_path, "segment.csv", data)
    summary = check_json(path, "--map", "email=Mail", "--map", "first_name=Given")
    assert summary["mapping"] == {"email": "Mail", "first_name": "Given", "city": "Town"}
    assert (summary["valid"], summary["rejected"]) == (2, 0)


def test_explicit_mapping_of_columns_the_defaults_miss(tmp_path: Path) -> None:
    path = write(tmp_path, "segment.csv", "Kontakt;Vorname\nann@example.com;Ann\n")
    assert_input_error(check(path), "no column is mapped to email", "'Kontakt'", "'Vorname'")
    summary = check_json(path, "--map", "email=Kontakt", "--map", "first_name=Vorname")
    assert summary["mapping"] == {"email": "Kontakt", "first_name": "Vorname"}
    assert (summary["rows"], summary["valid"], summary["delimiter"]) == (1, 1, ";")


def test_unknown_field_in_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "segment.csv", CRAFTED)
    assert_input_error(check(path, "--map", "bogus=X"), "unknown SendGrid field", "bogus")


def test_format_override(tmp_path: Path) -> None:
    path = write(tmp_path, "segment.csv", '{"email": "ann@example.com"}\n')
    summary = check_json(path, "--format", "jsonl")
    assert (summary["format"], summary["valid"]) == ("jsonl", 1)


def test_all_rows_rejected_is_not_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "segment.csv", "email,first_name\nnope,Ann\n,Bob\nx@y,Cy\n")
    report = tmp_path / "rejects.csv"
    summary = check_json(path, "--rejects", report)
    assert (summary["rows"], summary["valid"], summary["rejected"]) == (3, 0, 3)
    assert summary["batches"] == 0
    assert len(report.read_text(encoding="utf-8").splitlines()) == 4


# --- inputs that cannot be read ------------------------------------------------------------


def _truncated_gzip(tmp_path: Path) -> Path:
    rows = "".join(f"user{i}@example.com,User {i * 7919 % 10007},City {i}\n" for i in range(2000))
    data = gzip.compress(("email,first_name,city\n" + rows).encode())
    return write(tmp_path, "segment.csv.gz", data[: len(data) // 2])


def _random_bytes(tmp_path: Path) -> Path:
    return write(tmp_path, "segment.csv", random.Random(7).randbytes(2048))


FAILURES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "missing-file": (lambda d: d / "nowhere.csv", ("cannot open", "nowhere.csv")),
    "directory": (lambda d: d, ("folder",)),
    "empty-file": (lambda d: write(d, "segment.csv", b""), ("empty",)),
    "truncated-gzip": (_truncated_gzip, ("truncated",)),
    "not-utf8": (
        lambda d: write(d, "segment.csv", b"email,first_name\nann@example.com,J\xf6rg\n"),
        ("not UTF-8", "line 2", "byte offset 34"),
    ),
    "no-email-column": (
        lambda d: write(d, "segment.csv", "id,given,town\n1,Ann,Oslo\n"),
        ("email", "'id'", "'given'", "'town'"),
    ),
    "binary-png": (
        lambda d: write(d, "segment.csv", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ("PNG",),
    ),
    "binary-random": (_random_bytes, ()),
}


@pytest.mark.parametrize("case", FAILURES)
def test_unreadable_input_is_one_error_line(tmp_path: Path, case: str) -> None:
    make, words = FAILURES[case]
    line = assert_input_error(check(make(tmp_path)), *words)
    if case == "binary-random":
        assert re.search(r"not UTF-8|binary", line), line


def test_failed_run_leaves_no_rejects_file(tmp_path: Path) -> None:
    rows = ["email,first_name"]
    rows += [f"user{i}@example.com,User {i}" if i % 10 else f"bad{i},User {i}" for i in range(6000)]
    good = ("\n".join(rows) + "\n").encode()
    assert len(good) > 2 * 64 * 1024, "the bad byte comes after several chunks of rows"
    report = tmp_path / "rejects.csv"

    # Control: the same rows without the bad byte give a report of 600 rejected rows.
    summary = check_json(write(tmp_path, "good.csv", good), "--rejects", report)
    assert summary["rejected"] == 600
    assert len(report.read_text(encoding="utf-8").splitlines()) == 601
    report.unlink()

    broken = write(tmp_path, "broken.csv", good + b"late@example.com,J\xf6rg\n")
    assert_input_error(check(broken, "--rejects", report), "not UTF-8", "line 6,002")
    assert not report.exists()


def test_failed_mapping_leaves_no_rejects_file(tmp_path: Path) -> None:
    path = write(tmp_path, "segment.csv", "id,given\n1,Ann\n")
    report = tmp_path / "rejects.csv"
    assert_input_error(check(path, "--rejects", report), "email")
    assert not report.exists()


# --- export: which form, which flags (checked before anything is connected) ----------------


EXPORT_MISUSE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "nothing": ((), ("FILE --segment NAME, or --destination NAME",)),
    "file-without-segment": (("{file}",), ("FILE --segment NAME",)),
    "file-and-destination": (("{file}", "--destination", "d"), ("not both",)),
    "segment-and-destination": (("--segment", "s", "--destination", "d"), ("not both",)),
    "full-refresh-on-upload": (("{file}", "--segment", "s", "--full-refresh"), ("--destination",)),
    "snapshot-on-upload": (("{file}", "--segment", "s", "--snapshot", "s/a.csv"), ("--snapshot",)),
    "mass-removal-on-upload": (
        ("{file}", "--segment", "s", "--allow-mass-removal"),
        ("--allow-mass-removal",),
    ),
    "force-on-destination": (("--destination", "d", "--force"), ("--force goes with FILE",)),
}


@pytest.mark.parametrize("case", EXPORT_MISUSE)
def test_export_misuse_is_one_error_line(tmp_path: Path, case: str) -> None:
    args, words = EXPORT_MISUSE[case]
    path = write(tmp_path, "segment.csv", CRAFTED)
    settings = write(tmp_path, "settings.json", '{"Values": {}}')
    result = run("export", *(a.format(file=path) for a in args), "--settings", settings)
    assert_input_error(result, *words)


def test_the_admin_commands_are_there() -> None:
    for command, actions in [
        ("destinations", ("add", "update", "list", "show", "test", "remove")),
        ("runs", ("list", "show", "follow")),
        ("snapshots", ("list", "show", "remove")),
    ]:
        result = run(command, "--help")
        assert result.returncode == 0, result.stderr
        for action in actions:
            assert re.search(rf"^\s+{action}\s", result.stdout, re.M), (command, action)
    result = run("export", "--help")
    for flag in (
        "--destination",
        "--snapshot",
        "--full-refresh",
        "--allow-mass-removal",
        "--wait",
        "--force",
        "--json",
    ):
        assert flag in result.stdout
