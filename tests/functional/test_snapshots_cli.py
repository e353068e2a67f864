"""`python -m exporter export FILE`, `snapshots`, `runs` and `destinations list` as a person
runs them, in subprocesses, against Azurite (no Functions host: an upload starts no run here,
so what is in storage and in the ledger is exactly what the test put there).

The module has an Azurite of its own: its listings (every snapshot, every run, every
destination) see only this module's data.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.flow.run_requests import make_run_id
from exporter.flow.services import Services
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord, set_fields
from exporter.wiring import services_from_env
from tests.support.azurite import start_test_azurite

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
SEGMENT = "loyal-customers"
GOOD = "Mail,FirstName\n" + "".join(f"user{i}@example.com,Name{i}\n" for i in range(50))


@dataclass
class Cli:
    settings: Path
    svc: Services
    storage: Storage
    tmp: Path

    def run(self, *args: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "exporter", *map(str, args), "--settings", self.settings],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in result.stderr, result.stderr
        assert not re.search(r"user\d+@example\.com", result.stdout + result.stderr)
        return result

    def ok(self, *args: object) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def file(self, name: str, data: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def blobs(self, segment: str) -> list[str]:
        return sorted(b.name for b in self.storage.segments.list_blobs(f"{segment}/"))


def error_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, nothing on stdout, one stderr line `error: ...` holding `words`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


def destination(name: str, segments: list[str], mapping: dict[str, str]) -> Destination:
    return Destination.model_validate(
        {
            "name": name,
            "display_name": name,
            "list_id": "7d3f9a2e-1111-4222-8333-444455556666",
            "api_key_secret": "SENDGRID_KEY_SNAP",
            "segments": segments,
            "mapping": mapping,
            "consent": Consent(accepted_by="dpo", accepted_at=datetime(2026, 1, 1, tzinfo=UTC)),
        }
    )


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    tmp = tmp_path_factory.mktemp("snapshots-cli")
    azurite = start_test_azurite(tmp / "azurite")
    try:
        values = {"AzureWebJobsStorage": azurite.connection_string}
        settings = tmp / "local.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        svc = services_from_env(values)
        yield Cli(settings, svc, Storage.from_env(values), tmp)
    finally:
        azurite.stop()


def a_run(cli: Cli, n: int, snapshot: str, etag: str, state: str) -> RunRecord:
    run = RunRecord(f"20261124T0000{n:02d}-{n:012d}", "snap-a", SEGMENT, snapshot, etag, "blob")
    cli.svc.ledger.create_run(run)
    cli.svc.ledger.update_run(run.run_id, lambda r: set_fields(r, state=state))
    return run


# --- before anything exists: the hints ----------------------------------------------------


def test_empty_lists_say_what_to_do(cli: Cli) -> None:
    assert cli.ok("runs", "list").strip() == (
        "no runs yet (export a file with: exporter export FILE --segment NAME)"
    )
    assert json.loads(cli.ok("runs", "list", "--json")) == {"runs": []}
    assert cli.ok("destinations", "list").startswith("no destinations yet (add one with: ")
    assert cli.ok("snapshots", "list").strip() == (
        "no snapshots yet (upload one with: exporter export FILE --segment NAME)"
    )
    assert json.loads(cli.ok("snapshots", "list", "--json")) == {
        "snapshots": [],
        "truncated": False,
    }
    assert cli.ok("runs", "follow").startswith("no active runs")


# --- export FILE: checked before anything is uploaded --------------------------------------


def test_an_unknown_segment_is_refused_with_the_closest_names(cli: Cli) -> None:
    cli.svc.destinations.put(destination("snap-a", [SEGMENT, "churn-risk"], {"email": "Mail"}))
    cli.svc.destinations.put(destination("snap-b", ["Loyal-Customers-EU"], {"email": "Mail"}))
    path = cli.file("001.csv", GOOD)
    line = error_line(cli.run("export", path, "--segment", "loyal-customer"))
    assert line == (
        "error: no destination selects segment 'loyal-customer'; did you mean "
        "'loyal-customers' or 'Loyal-Customers-EU'? (use --force to upload anyway)"
    )
    error_line(
        cli.run("export", path, "--segment", "newsletter"),
        "no destination selects segment 'newsletter' (the destinations select "
        "Loyal-Customers-EU, churn-risk, loyal-customers)",
        "--force",
    )
    error_line(cli.run("export", path, "--segment", "a/b"), "'a/b' cannot be a segment name")
    assert cli.blobs("loyal-customer") == cli.blobs("newsletter") == []


BAD_FILES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "workbook-renamed": (b"PK\x03\x04\x14\x00\x06\x00" + bytes(200), ("Excel workbook",)),
    "utf16": ("Mail,FirstName\nann@example.com,Ann\n".encode("utf-16"), ("UTF-16",)),
    # Without the destination's mapping the default one finds no email column either way; with
    # it, the column the destination maps must be there.
    "no-mapped-column": (
        b"Email,FirstName\nann@example.com,Ann\n",
        ("the mapping of destination 'snap-a'", "'Mail'"),
    ),
    # A fault far into the file: only a whole read finds it.
    "late-bad-byte": ((GOOD * 200).encode() + b"late@example.com,J\xf6rg\n", ("not UTF-8",)),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_file_that_cannot_be_read_is_not_uploaded(cli: Cli, case: str) -> None:
    data, words = BAD_FILES[case]
    path = cli.file(f"{case}.csv", data)
    line = error_line(cli.run("export", path, "--segment", SEGMENT), *words)
    assert line.startswith(f"error: {case}.csv: ") and line.endswith("; nothing was uploaded")
    assert f"{SEGMENT}/{case}.csv" not in cli.blobs(SEGMENT)


def test_a_truncated_gzip_is_not_uploaded(cli: Cli) -> None:
    data = gzip.compress((GOOD * 100).encode())
    path = cli.file("cut.csv.gz", data[: len(data) // 2])
    error_line(cli.run("export", path, "--segment", SEGMENT), "truncated", "nothing was uploaded")
    assert f"{SEGMENT}/cut.csv.gz" not in cli.blobs(SEGMENT)


def test_export_json_names_the_runs_the_upload_starts(cli: Cli) -> None:
    path = cli.file("002.csv", GOOD)
    result = cli.run("export", path, "--segment", SEGMENT, "--json")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1, "one JSON object on one line"
    answer = json.loads(result.stdout)
    version = cli.storage.snapshot_version(f"{SEGMENT}/002.csv")
    assert version is not None
    assert answer["snapshot"] == version.name and answer["etag"] == version.etag
    assert answer["check"] == {
        "format": "csv",
        "compressed": False,
        "delimiter": ",",
        "rows": 50,
        "blank": 0,
    }
    # The blob trigger's run id: deterministic per destination and snapshot version.
    expected = make_run_id("snap-a", version, "blob", version.last_modified)
    assert answer["runs"] == [{"run_id": expected, "destination": "snap-a"}]

    text = cli.ok("export", cli.file("003.csv", GOOD), "--segment", SEGMENT)
    assert f"checked {cli.tmp / '003.csv'}: CSV, delimiter ',', 50 rows" in text
    assert "destinations: snap-a" in text and re.search(
        r"^run \S+: destination snap-a$", text, re.M
    )


def test_force_uploads_for_a_segment_no_destination_selects_yet(cli: Cli) -> None:
    path = cli.file("first.jsonl", '{"email": "user1@example.com"}\n')
    result = cli.run("export", path, "--segment", "brand-new", "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["runs"] == []
    assert "warning: no destination selects segment 'brand-new' yet" in result.stderr
    assert cli.blobs("brand-new") == ["brand-new/first.jsonl"]
    # Forced or not, an unreadable file is not uploaded.
    bad = cli.file("bad.jsonl", b"%PDF-1.7\n")
    error_line(cli.run("export", bad, "--segment", "brand-new", "--force"), "PDF")
    assert cli.blobs("brand-new") == ["brand-new/first.jsonl"]


# --- snapshots list / show / remove ---------------------------------------------------------


def test_snapshots_list_show_and_remove(cli: Cli) -> None:
    time.sleep(1.1)  # blob times have one-second resolution: "newest" is unambiguous
    # What the data platform can still drop (no check on that path): a workbook named .csv.
    bad = f"{SEGMENT}/004.csv"
    cli.storage.segments.upload_blob(bad, b"PK\x03\x04" + bytes(100))
    bad_version = cli.storage.snapshot_version(bad)
    assert bad_version is not None
    waiting = a_run(cli, 1, bad, bad_version.etag, "queued")
    older = cli.storage.snapshot_version(f"{SEGMENT}/002.csv")
    assert older is not None
    done = a_run(cli, 2, older.name, older.etag, "succeeded")

    text = cli.ok("snapshots", "list")
    lines = text.splitlines()
    assert re.fullmatch(r"SNAPSHOT\s+SIZE\s+LAST MODIFIED\s+FORMAT\s+NEWEST", lines[0])
    assert re.search(rf"^{bad}\s+104\s+\d{{4}}-\d\d-\d\d \S+ UTC\s+csv\s+newest$", text, re.M)
    assert re.search(r"^brand-new/first.jsonl\s+\S+\s+.* UTC\s+jsonl\s+newest$", text, re.M)
    listed = json.loads(cli.ok("snapshots", "list", "--segment", SEGMENT, "--json"))
    names = [s["name"] for s in listed["snapshots"]]
    assert names == [bad, f"{SEGMENT}/003.csv", f"{SEGMENT}/002.csv"]  # the newest first
    assert [s["newest"] for s in listed["snapshots"]] == [True, False, False]
    assert listed["snapshots"][0]["etag"] == bad_version.etag

    shown = cli.ok("snapshots", "show", bad)
    assert "UNREADABLE: the file is a ZIP archive or an Excel workbook" in shown
    assert "selected   by snap-a" in shown and f"etag       {bad_version.etag}" in shown
    assert re.search(rf"^  {waiting.run_id}\s+snap-a\s+queued\s+blob\s+", shown, re.M)
    good = json.loads(cli.ok("snapshots", "show", f"segments/{older.name}", "--json"))
    assert good["name"] == older.name and good["newest"] is False
    assert good["content"]["readable"] is True
    assert good["content"]["mappings"] == [
        {"destinations": ["snap-a"], "mapping": {"email": "Mail", "first_name": "FirstName"}}
    ]
    assert good["runs"] == [
        {
            "run_id": done.run_id,
            "destination": "snap-a",
            "state": "succeeded",
            "trigger": "blob",
            "created_at": good["runs"][0]["created_at"],
            "this_version": True,
        }
    ]
    assert good["runs_total"] == 1

    error_line(cli.run("snapshots", "remove", bad), "pass --yes to confirm")
    assert bad in cli.blobs(SEGMENT)
    out = cli.ok("snapshots", "remove", bad, "--yes")
    assert f"snapshot '{bad}' removed (version {bad_version.etag})" in out
    assert f"the newest snapshot of segment '{SEGMENT}' is now {SEGMENT}/003.csv" in out
    assert f"1 run(s) that had not read it yet end skipped:\n    {waiting.run_id}" in out
    assert bad not in cli.blobs(SEGMENT)
    error_line(cli.run("snapshots", "show", bad), f"no snapshot segments/{bad}")
    error_line(cli.run("snapshots", "remove", bad, "--yes"), f"no snapshot segments/{bad}")


ESCAPES = [
    "../exporter/destinations/snap-a.json",
    "segments/../exporter/destinations/snap-a.json",
    "%2e%2e/exporter/destinations/snap-a.json",
    "loyal-customers/%252e%252e/%252e%252e/exporter/x.csv",
    "loyal-customers\\..\\x.csv",
    "/loyal-customers/002.csv",
    "loyal-customers//002.csv",
    "loyal-customers/folder/part.csv",  # deeper: a CDM folder's partition, never a snapshot
    "loyal-customers/model.json",
]


def test_names_that_leave_the_segments_or_are_no_snapshot_are_refused(cli: Cli) -> None:
    for name in ESCAPES:
        error_line(cli.run("snapshots", "show", name))
        error_line(cli.run("snapshots", "remove", name, "--yes"))
    assert cli.svc.destinations.get("snap-a") is not None
    error_line(cli.run("snapshots", "list", "--segment", "../exporter"), "segment name")


# --- runs and destinations lists; following the active runs ---------------------------------


def test_lists_have_headers(cli: Cli) -> None:
    runs = cli.ok("runs", "list").splitlines()
    assert re.fullmatch(r"RUN ID\s+STATE\s+DESTINATION\s+SNAPSHOT\s+VALID\s+REJECTED", runs[0])
    assert len(runs) == 3 and all(re.match(r"\d{8}T\d{6}-\S+\s", line) for line in runs[1:])
    listed = json.loads(cli.ok("runs", "list", "--json"))
    assert sorted(r["state"] for r in listed["runs"]) == ["queued", "succeeded"]
    assert "no runs match" in cli.ok("runs", "list", "--state", "failed")

    destinations = cli.ok("destinations", "list").splitlines()
    assert re.fullmatch(r"NAME\s+LIST ID\s+MODE\s+SEGMENTS\s+CONSENT", destinations[0])
    assert [line.split()[0] for line in destinations[1:]] == ["snap-a", "snap-b"]


def test_runs_follow_without_ids_follows_the_active_runs_to_their_end(cli: Cli) -> None:
    exported = json.loads(cli.ok("export", "--destination", "snap-a", "--json"))
    (queued,) = exported["runs"]
    assert exported == {
        "destination": "snap-a",
        "runs": [
            {"run_id": queued["run_id"], "segment": SEGMENT, "snapshot": f"{SEGMENT}/003.csv"}
        ],
        "without_snapshot": ["churn-risk"],
    }
    for run in cli.svc.ledger.runs(limit=100):
        if run.state == "queued":  # what earlier tests left: ended, as a skipped run is
            cli.svc.ledger.update_run(run.run_id, lambda r: set_fields(r, state="skipped"))
    active = a_run(cli, 3, f"{SEGMENT}/003.csv", '"0x3"', "sending")
    follow = subprocess.Popen(
        [sys.executable, "-m", "exporter", "runs", "follow", "--settings", cli.settings],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
        assert follow.poll() is None, follow.communicate()
        cli.svc.ledger.update_run(
            active.run_id,
            lambda r: set_fields(r, state="succeeded", finished_at=datetime.now(UTC)),
        )
        out, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, (out, err)
    assert "following 1 active run(s)" in err
    assert f"{active.run_id} [" in err and "(sending)" in err
    assert f"run {active.run_id}: succeeded" in out
