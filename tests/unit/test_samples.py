"""The sample generator: its counts are what importer tests and the demo check against, so they are
recounted here independently from the written file."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.core.samples import HEADER, SampleSummary, generate

REPO = Path(__file__).resolve().parents[2]

# A plain dot-atom address with a dotted domain: what every validator accepts.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
VALID_EMAIL = re.compile(rf"{ATEXT}(?:\.{ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
ALLOWED_DOMAIN = re.compile(r"(?:.+\.)?example\.(?:com|org|net)|.+\.(?:test|example)")
OPTIONAL = ("FirstName", "LastName", "City", "StateProvince", "CountryRegion", "PostalCode")


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a .csv/.jsonl file, optionally gzipped, as dicts keyed by the header."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    if ".csv" in path.name:
        reader = csv.reader(io.StringIO(text, newline=""))
        assert tuple(next(reader)) == HEADER
        return [dict(zip(HEADER, row, strict=True)) for row in reader]
    rows = [json.loads(line) for line in text.splitlines()]
    assert all(tuple(row) == HEADER for row in rows)
    return rows


def recount(rows: list[dict[str, str]]) -> SampleSummary:
    """Count as a correct importer would: blank rows, invalid emails, first valid email wins."""
    seen: set[str] = set()
    invalid = duplicates = blank = 0
    for row in rows:
        if all(value == "" for value in row.values()):
            blank += 1
            continue
        email = row["PrimaryEmail"]
        assert email.strip(), f"non-blank row with a blank email: {row}"
        key = email.strip().lower()
        if not VALID_EMAIL.fullmatch(key):
            invalid += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
    return SampleSummary(
        rows=len(rows), valid=len(seen), invalid=invalid, duplicates=duplicates, blank=blank
    )


def scripts_of(text: str) -> Iterator[str]:
    """The script of each non-ASCII letter, from its Unicode name ('CJK', 'CYRILLIC', ...)."""
    for ch in text:
        if not ch.isascii() and ch.isalpha():
            yield unicodedata.name(ch).split()[0]


@pytest.mark.parametrize("name", ["s.csv", "s.csv.gz", "s.jsonl", "s.jsonl.gz"])
def test_summary_matches_an_independent_recount(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    summary = generate(out, 3000, seed=5, invalid_rate=0.05, duplicate_rate=0.05, blank_rate=0.03)
    assert recount(read_rows(out)) == summary
    assert summary.rows == 3000
    assert summary.valid + summary.invalid + summary.duplicates + summary.blank == summary.rows
    # The rates are honoured roughly, and every case is present.
    assert 100 <= summary.invalid <= 200
    assert 100 <= summary.duplicates <= 200
    assert 50 <= summary.blank <= 150


def test_default_rates_and_no_blank_rows(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    summary = generate(out, 5000, seed=1)
    assert summary == recount(read_rows(out))
    assert summary.blank == 0
    assert 20 <= summary.invalid <= 80
    assert 20 <= summary.duplicates <= 80


def test_formats_hold_the_same_rows(tmp_path: Path) -> None:
    kwargs = {"invalid_rate": 0.02, "duplicate_rate": 0.02, "blank_rate": 0.02}
    summaries = {n: generate(tmp_path / n, 1000, 9, **kwargs) for n in ("a.csv", "a.jsonl.gz")}
    assert summaries["a.csv"] == summaries["a.jsonl.gz"]
    assert read_rows(tmp_path / "a.csv") == read_rows(tmp_path / "a.jsonl.gz")


def test_duplicates_differ_in_case_or_spaces_only(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    generate(out, 4000, seed=2, duplicate_rate=0.1)
    first: dict[str, dict[str, str]] = {}
    repeats = 0
    for row in read_rows(out):
        email = row["PrimaryEmail"]
        key = email.strip().lower()
        if key not in first:
            first[key] = row
            continue
        repeats += 1
        original = first[key]
        assert email != original["PrimaryEmail"], "a duplicate is altered in case or spaces"
        assert original["PrimaryEmail"] == key, "first occurrences are lower-case, unpadded"
        assert row["CustomerId"] != original["CustomerId"]
    assert repeats > 300


def test_ids_unique_and_emails_realistic(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    generate(out, 5000, seed=4, blank_rate=0.01)
    rows = [r for r in read_rows(out) if any(r.values())]
    ids = [r["CustomerId"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i)
        for i in ids
    )
    for row in rows:
        key = row["PrimaryEmail"].strip().lower()
        if VALID_EMAIL.fullmatch(key):
            assert key.isascii()
            assert ALLOWED_DOMAIN.fullmatch(key.rpartition("@")[2]), key
        assert row["LoyaltyTier"] in {"", "Bronze", "Silver", "Gold", "Platinum"}
    # Optional fields are each blank about 10% of the time.
    for column in (*OPTIONAL, "LoyaltyTier"):
        share = sum(r[column] == "" for r in rows) / len(rows)
        assert 0.05 <= share <= 0.2, (column, share)
    # Some values need CSV quoting (a comma in "Washington, D.C.").
    assert '"' in out.read_text(encoding="utf-8")


def test_names_in_several_scripts(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    generate(out, 2000, seed=3)
    scripts: set[str] = set()
    for row in read_rows(out):
        scripts.update(scripts_of(row["FirstName"] + row["LastName"]))
    assert "LATIN" in scripts  # diacritics: José, Dvořák, ...
    assert len(scripts) >= 3, scripts


def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path: Path) -> None:
    for suffix in (".csv", ".csv.gz", ".jsonl"):
        a, b, c = (tmp_path / f"{stem}{suffix}" for stem in ("a", "b", "c"))
        generate(a, 1500, 11, blank_rate=0.01)
        generate(b, 1500, 11, blank_rate=0.01)
        generate(c, 1500, 12, blank_rate=0.01)
        assert a.read_bytes() == b.read_bytes(), suffix  # gzip: no name, mtime 0
        assert a.read_bytes() != c.read_bytes(), suffix


def test_csv_bytes_layout(tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    generate(out, 300, 1, blank_rate=0.05)
    data = out.read_bytes()
    assert data.startswith(b"CustomerId,FirstName,LastName,PrimaryEmail,City,")  # no BOM
    assert data.startswith(",".join(HEADER).encode() + b"\n")
    assert b"\r" not in data
    assert b"\n,,,,,,,,\n" in data  # a blank row
    assert data.endswith(b"\n")


def test_gzip_header_is_stable(tmp_path: Path) -> None:
    out = tmp_path / "s.csv.gz"
    generate(out, 10, 1)
    header = out.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b"
    assert header[3] & 0x08 == 0, "no file name in the gzip header"
    assert header[4:8] == b"\0\0\0\0", "mtime 0"


def test_zero_rows(tmp_path: Path) -> None:
    assert generate(tmp_path / "s.csv", 0) == SampleSummary(0, 0, 0, 0, 0)
    assert (tmp_path / "s.csv").read_text(encoding="utf-8") == ",".join(HEADER) + "\n"
    assert generate(tmp_path / "s.jsonl", 0).rows == 0
    assert (tmp_path / "s.jsonl").read_bytes() == b""


@pytest.mark.parametrize("name", ["s.txt", "s.json", "s.gz", "s.csv.bz2", "s.tsv", "csv"])
def test_unknown_suffix_raises(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl"):
        generate(tmp_path / name, 10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "rates",
    [{"invalid_rate": -0.1}, {"duplicate_rate": 1.5}, {"invalid_rate": 0.6, "blank_rate": 0.6}],
)
def test_bad_arguments_raise(tmp_path: Path, rates: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="rate"):
        generate(tmp_path / "s.csv", 10, seed=0, **rates)
    with pytest.raises(ValueError, match="rows"):
        generate(tmp_path / "s.csv", -1)


def test_all_blank(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    summary = generate(out, 50, invalid_rate=0, duplicate_rate=0, blank_rate=1)
    assert summary == SampleSummary(rows=50, valid=0, invalid=0, duplicates=0, blank=50)
    assert read_rows(out) == [dict.fromkeys(HEADER, "")] * 50


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "exporter.core.samples", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.functional
def test_cli_writes_file_and_prints_summary(tmp_path: Path) -> None:
    args = ("--rows", "1500", "--seed", "3", "--invalid-rate", "0.02", "--blank-rate", "0.01")
    done = run_cli(*args, "--out", "cli.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = generate(
        tmp_path / "api.csv", 1500, 3, invalid_rate=0.02, duplicate_rate=0.01, blank_rate=0.01
    )
    assert done.stdout == (
        f"wrote 1,500 rows to cli.csv: {expected.valid:,} valid, {expected.invalid:,} invalid "
        f"emails, {expected.duplicates:,} duplicates, {expected.blank:,} blank\n"
    )
    assert (tmp_path / "cli.csv").read_bytes() == (tmp_path / "api.csv").read_bytes()


@pytest.mark.functional
def test_cli_rejects_unknown_suffix(tmp_path: Path) -> None:
    done = run_cli("--rows", "10", "--out", "x.xlsx", cwd=tmp_path)
    assert done.returncode == 2
    assert ".csv, .jsonl" in done.stderr
    assert done.stdout == ""
