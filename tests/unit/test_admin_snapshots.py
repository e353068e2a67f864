"""Snapshots administration in memory: names from outside checked (nothing leaves `segments`),
the check before an upload (what it refuses, that it refuses what the planner would, that
nothing is uploaded then), unknown segments with the closest names, list / show / remove."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.adapters.secrets import EnvSecretProvider
from exporter.admin.errors import ConflictError, NotFoundError
from exporter.admin.exports import upload_checked
from exporter.admin.snapshots import (
    list_snapshots,
    remove_snapshot,
    show_snapshot,
    snapshot_name,
)
from exporter.core.errors import InputError, SnapshotError
from exporter.core.planning import plan
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.snapshot import open_snapshot
from exporter.flow.run_requests import make_run_id
from exporter.flow.services import Services
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from tests.support.fakes import MemoryStorage
from tests.support.memory_destinations import MemoryDestinationStore
from tests.support.memory_ledger import MemoryRunLedger

GOOD = "Mail,Given\n" + "".join(f"u{i}@example.com,N{i}\n" for i in range(20))


def destination(name: str, segments: list[str], mapping: dict[str, str]) -> Destination:
    return Destination.model_validate(
        {
            "name": name,
            "display_name": name,
            "list_id": "0b6a4a0e-8d1c-4f63-9b8e-8a1f1c3c7c11",
            "api_key_secret": "SENDGRID_KEY_X",
            "segments": segments,
            "mapping": mapping,
            "consent": Consent(accepted_by="dpo", accepted_at=datetime(2026, 1, 1, tzinfo=UTC)),
        }
    )


@pytest.fixture
def svc() -> Services:
    return Services(
        storage=MemoryStorage(),  # type: ignore[arg-type]
        ledger=MemoryRunLedger(),
        destinations=MemoryDestinationStore(
            destination("mail", ["loyal-customers", "churn"], {"email": "Mail"}),
            destination("other", ["loyal-customers"], {"email": "Mail", "first_name": "Given"}),
        ),
        secrets=EnvSecretProvider({}),
        clients=lambda key: None,  # type: ignore[arg-type,return-value]
    )


def storage(svc: Services) -> MemoryStorage:
    assert isinstance(svc.storage, MemoryStorage)
    return svc.storage


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("loyal/a.csv", "loyal/a.csv"),
        ("segments/loyal/a.csv.gz", "loyal/a.csv.gz"),
        ("loyal/a%20b.jsonl", "loyal/a b.jsonl"),
        ("stored by hand/a.csv", "stored by hand/a.csv"),  # listed, so it can be removed
    ],
)
def test_snapshot_names(raw: str, name: str) -> None:
    assert snapshot_name(raw) == name


@pytest.mark.parametrize(
    "raw",
    [
        "../exporter/destinations/mail.json",
        "segments/../exporter/state/x.csv",
        "%2e%2e/exporter/x.csv",
        "loyal/%252e%252e/x.csv",
        "loyal\\..\\..\\x.csv",
        "/loyal/a.csv",
        "loyal//a.csv",
        "loyal/a.csv/",
        "loyal/sub/part.csv",
        "loyal/model.json",
        "loyal/a.xlsx",
        "loyal",
        "loyal/a\x00.csv",
        "",
    ],
)
def test_names_outside_the_segments_or_not_snapshots_are_refused(raw: str) -> None:
    with pytest.raises(InputError):
        snapshot_name(raw)


# --- the check before an upload -----------------------------------------------------------


def test_an_unknown_segment_gets_the_closest_names(svc: Services, tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", GOOD)
    with pytest.raises(NotFoundError) as refused:
        upload_checked(svc, path, "Loyal-Customer")
    assert str(refused.value) == (
        "no destination selects segment 'Loyal-Customer'; did you mean 'loyal-customers'? "
        "(use --force to upload anyway)"
    )
    with pytest.raises(NotFoundError, match=r"\(the destinations select churn, loyal-customers\)"):
        upload_checked(svc, path, "zzz")
    assert storage(svc).snapshots == {}
    forced = upload_checked(svc, path, "zzz", force=True)
    assert forced.runs == [] and list(storage(svc).snapshots) == ["zzz/a.csv"]


def test_every_destinations_mapping_must_fit(svc: Services, tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "Mail\nu1@example.com\n")  # no Given for `other`
    with pytest.raises(InputError, match="the mapping of destination 'other': column 'Given'"):
        upload_checked(svc, path, "loyal-customers")
    assert storage(svc).snapshots == {}
    uploaded = upload_checked(svc, path, "churn")  # only `mail` selects churn
    version = uploaded.version
    assert uploaded.runs == [(make_run_id("mail", version, "blob", version.last_modified), "mail")]
    assert uploaded.check.rows == 1


def test_the_check_refuses_what_would_fail_the_run(
    svc: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(input_limits, "MAX_ROWS", 15)
    monkeypatch.setattr(input_limits, "MAX_BLANK_RUN", 3)
    files = {
        "rows.csv": GOOD,  # 20 rows, over 15
        "blank.csv": "Mail\nu1@example.com\n,\n,\n,\n,\nu2@example.com\n",
        "late.csv.gz": gzip.compress((GOOD * 3).encode())[:-30],
        "latin1.csv": (GOOD * 3).encode() + b"x@example.com,J\xf6rg\n",
    }
    for name, data in files.items():
        path = write(tmp_path, name, data)
        with pytest.raises(InputError) as refused:
            upload_checked(svc, path, "churn")
        assert str(refused.value).startswith(f"{name}: ")
        assert str(refused.value).endswith("; nothing was uploaded")
        # The planner fails the same file the same way.
        with pytest.raises(SnapshotError) as planned, open_snapshot(path) as snapshot:
            plan(snapshot)
        assert str(planned.value) in str(refused.value)
    assert storage(svc).snapshots == {}


# --- list, show, remove -------------------------------------------------------------------


def test_list_show_and_remove(svc: Services) -> None:
    memory = storage(svc)
    first = memory.put_snapshot("loyal-customers/001.csv", GOOD.encode())
    second = memory.put_snapshot("loyal-customers/002.csv", b"PK\x03\x04" + bytes(30))
    memory.put_snapshot("churn/001.jsonl.gz", gzip.compress(b'{"Mail": "u@example.com"}\n'))
    memory.put_snapshot("churn/folder/part.csv", b"x")  # a CDM partition: not listed
    waiting = RunRecord("r1", "mail", "loyal-customers", second.name, second.etag, "blob")
    svc.ledger.create_run(waiting)

    listing = list_snapshots(svc)
    assert [(e.version.name, e.newest) for e in listing.snapshots] == [
        ("churn/001.jsonl.gz", True),
        ("loyal-customers/002.csv", True),
        ("loyal-customers/001.csv", False),
    ]
    assert listing.as_json()["snapshots"][0]["format"] == "jsonl"
    assert listing.as_json()["snapshots"][0]["compressed"] is True
    assert [e.version.name for e in list_snapshots(svc, "churn").snapshots] == [
        "churn/001.jsonl.gz"
    ]
    assert list_snapshots(svc, "loyal-customers", limit=1).truncated

    bad = show_snapshot(svc, second.name).as_json()
    assert bad["content"]["readable"] is False and "Excel" in bad["content"]["error"]
    assert bad["destinations"] == ["mail", "other"]
    assert [r["run_id"] for r in bad["runs"]] == ["r1"] and bad["runs"][0]["this_version"]
    good = show_snapshot(svc, first.name).as_json()
    assert good["content"]["mappings"] == [
        {"destinations": ["mail"], "mapping": {"email": "Mail"}},
        {"destinations": ["other"], "mapping": {"email": "Mail", "first_name": "Given"}},
    ]
    assert good["content"]["columns"] == ["Mail", "Given"]

    with pytest.raises(ConflictError, match="replaced"):
        remove_snapshot(svc, second.name, etag='"an-older-one"')
    removed = remove_snapshot(svc, second.name, etag=second.etag.strip('"'))
    assert removed.as_json() == {
        "removed": second.name,
        "etag": second.etag,
        "skipped_runs": ["r1"],
        "newest": first.name,
    }
    assert second.name not in memory.snapshots
    with pytest.raises(NotFoundError):
        remove_snapshot(svc, second.name)
    with pytest.raises(NotFoundError):
        show_snapshot(svc, "loyal-customers/none.csv")
