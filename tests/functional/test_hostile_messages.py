"""Hostile queue messages: every queue trigger (the functions the host calls, with an
`azure.functions.QueueMessage`) decodes defensively, records a message it cannot decode (a log
line with the queue, the reason and a short, masked excerpt) and returns normally, so the host
deletes it; the poison handlers never raise, also for runs and batches that do not exist.
In-memory ledger and storage; no SendGrid is needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest

import exporter.triggers
from exporter.adapters.secrets import EnvSecretProvider
from exporter.adapters.sendgrid import SendGridClient
from exporter.flow import notify, poison
from exporter.flow.services import Services
from exporter.model.messages import (
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
    ManifestCheck,
    Notification,
)
from exporter.model.runs import BatchRecord, RunRecord
from exporter.triggers import notifications, pipeline, snapshots
from tests.support.fakes import MemoryStorage
from tests.support.memory_destinations import MemoryDestinationStore
from tests.support.memory_ledger import MemoryRunLedger

pytestmark = pytest.mark.functional

RUN_ID = "20261124T101500-1f2e3d4c5b6a"
UNKNOWN = "20261124T101500-000000000000"
WHEN = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)

TRIGGERS: dict[str, tuple[str, Any]] = {
    # queue -> (the trigger, as the host registers it; the message it takes)
    "export-requests": (pipeline.plan_run, ExportRequest),
    "contact-batches": (pipeline.send_batch, BatchMessage),
    "import-jobs": (pipeline.follow_job, JobCheck),
    "list-checks": (pipeline.check_list, ListCheck),
    "export-requests-poison": (pipeline.plan_run_poisoned, ExportRequest),
    "contact-batches-poison": (pipeline.send_batch_poisoned, BatchMessage),
    "import-jobs-poison": (pipeline.follow_job_poisoned, JobCheck),
    "list-checks-poison": (pipeline.check_list_poisoned, ListCheck),
    "cdm-manifests": (snapshots.manifest_recheck, ManifestCheck),
    "cdm-manifests-poison": (snapshots.manifest_recheck_poisoned, ManifestCheck),
    "notifications": (notifications.deliver_notification, Notification),
    "notifications-poison": (notifications.deliver_notification_poisoned, Notification),
}

HOSTILE: dict[str, bytes] = {
    "not JSON": b"this is not JSON",
    "empty": b"",
    "a JSON array": b"[1, 2, 3]",
    "no fields": b"{}",
    "batch -1": json.dumps({"run_id": RUN_ID, "batch": -1, "look": -1}).encode(),
    "a 40 KB run id": json.dumps({"run_id": "7" * 40_000, "batch": 0}).encode(),
    "a run id that is a path": json.dumps({"run_id": "../../exporter/state", "batch": 0}).encode(),
    "an address as the run id": json.dumps({"run_id": "ann.lee@example.com"}).encode(),
    "an address as a key": json.dumps({"ann.lee@example.com": 1}).encode(),
    "nested too deep": b"[" * 40_000,
    "over 64 KB": b'{"run_id": "' + b"x" * 70_000 + b'"}',
    "a control character": b'{"run_id": "2026\\u0000\\n"}',
}


def user_function(trigger: Any) -> Callable[[func.QueueMessage], None]:
    """The Python function behind a registered trigger (what the host calls)."""
    function: Callable[[func.QueueMessage], None] = trigger._function.get_user_function()
    return function


def message(body: bytes) -> func.QueueMessage:
    return func.QueueMessage(id="m1", body=body)  # type: ignore[no-untyped-call]


def services() -> Services:
    return Services(
        storage=MemoryStorage(),
        ledger=MemoryRunLedger(),
        destinations=MemoryDestinationStore(),
        secrets=EnvSecretProvider({}),
        clients=SendGridClient,
    )


@pytest.fixture
def svc() -> Iterator[Services]:
    """The services the triggers use (`exporter.triggers.services()`), in memory."""
    built = services()
    exporter.triggers._services = built
    try:
        yield built
    finally:
        exporter.triggers.reset_services()


def dropped(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "exporter.model.messages"]


# --- messages that cannot be decoded ------------------------------------------------------------


@pytest.mark.parametrize("queue", list(TRIGGERS))
@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
def test_every_trigger_records_and_drops_a_message_it_cannot_decode(
    queue: str, body: bytes, svc: Services, caplog: pytest.LogCaptureFixture
) -> None:
    trigger, _ = TRIGGERS[queue]
    with caplog.at_level(logging.INFO):
        assert user_function(trigger)(message(body)) is None  # returned: the host deletes it
    (line,) = dropped(caplog)
    assert line.startswith(f"queue message dropped: queue={queue} reason=")
    assert "message=" in line
    assert len(line) < 1600  # bounded, whatever the message's size
    assert "ann.lee" not in caplog.text  # addresses masked, in the reason and the excerpt
    assert "\n" not in line and "\x00" not in line
    assert svc.ledger.runs() == []
    assert not any(svc.storage.queues.values())  # nothing sent on


@pytest.mark.parametrize(
    ("queue", "fields", "reason"),
    [
        ("contact-batches", {"run_id": RUN_ID, "batch": -1}, "batch: Input should be greater"),
        ("contact-batches", {"run_id": RUN_ID, "batch": 10**9}, "batch: Input should be less"),
        ("contact-batches", {"run_id": RUN_ID, "batch": "1"}, "batch: Input should be a valid"),
        ("contact-batches", {"run_id": RUN_ID}, "batch: Field required"),
        ("contact-batches", {"run_id": RUN_ID.upper(), "batch": 0}, "run_id: String should match"),
        ("contact-batches", {"run_id": RUN_ID, "batch": 0, "extra": 1}, "extra: Extra inputs"),
        (
            "import-jobs",
            {"run_id": RUN_ID, "batch": 0, "job_id": "j" * 600},
            "job_id: String should have at most 512",
        ),
        ("list-checks", {"run_id": RUN_ID, "look": -1}, "look: Input should be greater"),
        (
            "export-requests",
            {
                "run_id": RUN_ID,
                "destination": "marketing",
                "segment": "loyal",
                "snapshot": "../exporter/destinations/marketing.json",
                "etag": '"0x1"',
                "trigger": "blob",
                "requested_at": WHEN.isoformat(),
            },
            "snapshot: Value error, not a blob name in the segments container: it holds a '..'",
        ),
        (
            "export-requests",
            {
                "run_id": RUN_ID,
                "destination": "marketing",
                "segment": "..",
                "snapshot": "loyal/a.csv",
                "etag": '"0x1"',
                "trigger": "blob",
                "requested_at": "2026-11-24T10:15:00",  # no time zone
            },
            "segment: Value error, not a segment name",
        ),
        (
            "export-requests",
            {
                "run_id": RUN_ID,
                "destination": "Not A Destination",
                "segment": "loyal",
                "snapshot": "loyal/a.csv",
                "etag": '"0x1"',
                "trigger": "ftp",
                "requested_at": WHEN.isoformat(),
            },
            "destination: String should match",
        ),
        (
            "cdm-manifests",
            {
                "manifest": "ci/%2e%2e/../exporter/state/model.json",
                "etag": '"0x1"',
                "written_at": WHEN.isoformat(),
            },
            "manifest: Value error, not a blob name in the segments container",
        ),
        (
            "cdm-manifests-poison",
            {"manifest": "ci/BlobExport/data.csv", "etag": '"0x1"', "written_at": WHEN.isoformat()},
            "manifest: Value error, not a CDM folder's model.json",
        ),
        (
            "cdm-manifests",
            {"manifest": "ci/model.json", "etag": '"0x1"', "written_at": "2026-11-24T10:15:00"},
            "written_at: Input should have timezone info",
        ),
    ],
)
def test_the_reason_names_the_field_and_the_rule_never_the_value(
    queue: str,
    fields: dict[str, Any],
    reason: str,
    svc: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trigger, _ = TRIGGERS[queue]
    with caplog.at_level(logging.INFO):
        user_function(trigger)(message(json.dumps(fields).encode()))
    (line,) = dropped(caplog)
    assert reason in line
    assert f"queue={queue} " in line


def test_the_excerpt_is_short_and_says_how_long_the_message_was(
    svc: Services, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"run_id": "x" * 40_000, "batch": 0, "note": "bob@example.com"}).encode()
    with caplog.at_level(logging.INFO):
        user_function(pipeline.send_batch)(message(body))
    (line,) = dropped(caplog)
    excerpt = line.split(" message=", 1)[1]
    assert excerpt.startswith('{"run_id": "xxxx') and excerpt.endswith(f"... ({len(body):,} bytes)")
    assert len(excerpt) < 250


# --- poison handlers: never raise ---------------------------------------------------------------


def a_run(run_id: str = RUN_ID, **fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "destination": "marketing",
        "segment": "loyal",
        "snapshot": "loyal/a.csv",
        "etag": '"0x1"',
        "trigger": "blob",
        "state": "sending",
        "planned": True,
        **fields,
    }
    return RunRecord(**values)


POISONED: list[tuple[str, Callable[[Services, Any], None], Any]] = [
    (
        "export-requests-poison",
        poison.request_poisoned,
        ExportRequest(
            run_id=UNKNOWN,
            destination="marketing",
            segment="loyal",
            snapshot="loyal/a.csv",
            etag='"0x1"',
            trigger="blob",
            requested_at=WHEN,
        ),
    ),
    ("contact-batches-poison", poison.batch_poisoned, BatchMessage(run_id=UNKNOWN, batch=3)),
    ("import-jobs-poison", poison.job_poisoned, JobCheck(run_id=UNKNOWN, batch=3, job_id="j1")),
    ("list-checks-poison", poison.list_check_poisoned, ListCheck(run_id=UNKNOWN, look=0)),
    (
        "notifications-poison",
        notify.poisoned,
        Notification(run_id=UNKNOWN, target="ops", event="list_ready"),
    ),
]


@pytest.mark.parametrize(
    ("queue", "handler", "poison"), POISONED, ids=[queue for queue, _, _ in POISONED]
)
def test_a_poison_message_naming_a_run_that_does_not_exist_is_logged_and_dropped(
    queue: str,
    handler: Callable[[Services, Any], None],
    poison: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = services()
    svc.ledger.create_run(a_run())  # another run: untouched
    with caplog.at_level(logging.INFO):
        handler(svc, poison)  # no KeyError
    (line,) = dropped(caplog)
    assert f"queue={queue} reason=run {UNKNOWN} does not exist" in line
    assert svc.ledger.get_run(UNKNOWN) is None
    run = svc.ledger.get_run(RUN_ID)
    assert run is not None and run.state == "sending"


@pytest.mark.parametrize(
    ("queue", "handler", "poison"),
    [
        ("contact-batches-poison", poison.batch_poisoned, BatchMessage(run_id=RUN_ID, batch=7)),
        ("import-jobs-poison", poison.job_poisoned, JobCheck(run_id=RUN_ID, batch=7, job_id="j")),
    ],
)
def test_a_poison_message_naming_a_batch_the_run_does_not_have_leaves_the_run_alone(
    queue: str,
    handler: Callable[[Services, Any], None],
    poison: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = services()
    svc.ledger.create_run(a_run(batches=1))
    svc.ledger.put_batches(RUN_ID, [BatchRecord(RUN_ID, 0, 10, 100)])
    with caplog.at_level(logging.INFO):
        handler(svc, poison)
    (line,) = dropped(caplog)
    assert f"queue={queue} reason=run {RUN_ID} has no batch 7" in line
    run = svc.ledger.get_run(RUN_ID)
    assert run is not None and run.state == "sending" and not run.final
    batch = svc.ledger.get_batch(RUN_ID, 0)
    assert batch is not None and batch.state == "queued"


def test_a_poison_message_of_a_run_that_exists_still_fails_it() -> None:
    svc = services()
    svc.ledger.create_run(a_run(state="planning", planned=False, error="planning attempt: boom"))
    request = POISONED[0][2].model_copy(update={"run_id": RUN_ID})
    poison.request_poisoned(svc, request)
    run = svc.ledger.get_run(RUN_ID)
    assert run is not None and run.state == "failed"
    assert run.error == "planning failed on every attempt; the last: planning attempt: boom"


def test_a_poison_message_of_a_batch_that_exists_fails_the_batch_and_settles_the_run() -> None:
    svc = services()
    svc.ledger.create_run(a_run(batches=1))
    svc.ledger.put_batches(RUN_ID, [BatchRecord(RUN_ID, 0, 10, 100, error="OSError: gone")])
    poison.batch_poisoned(svc, BatchMessage(run_id=RUN_ID, batch=0))
    run = svc.ledger.get_run(RUN_ID)
    assert run is not None and run.state == "failed"
    assert "sending failed on every attempt; the last: OSError: gone" in run.error


def test_a_poisoned_look_at_a_cdm_folder_that_is_gone_is_dropped() -> None:
    svc = services()
    check = ManifestCheck(manifest="ci/BlobExport/model.json", etag='"0x1"', written_at=WHEN)
    poison.manifest_poisoned(svc, check)  # the model.json was deleted: nothing to end, no error
    assert svc.ledger.runs() == []


@pytest.mark.parametrize(
    ("queue", "handler", "poison"),
    [
        *POISONED,
        (
            "cdm-manifests-poison",
            poison.manifest_poisoned,
            ManifestCheck(manifest="ci/BlobExport/model.json", etag='"0x1"', written_at=WHEN),
        ),
    ],
    ids=[*[queue for queue, _, _ in POISONED], "cdm-manifests-poison"],
)
def test_a_poison_handler_that_fails_logs_why_and_returns(
    queue: str,
    handler: Callable[[Services, Any], None],
    poison: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = services()

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("the table is unreachable for ann.lee@example.com")

    monkeypatch.setattr(svc.ledger, "get_run", unreachable)
    monkeypatch.setattr(svc.ledger, "get_batch", unreachable)
    monkeypatch.setattr(svc.storage, "read_manifest", unreachable)
    with caplog.at_level(logging.INFO):
        handler(svc, poison)  # returns: nothing ends in <queue>-poison
    (line,) = dropped(caplog)
    assert f"queue={queue} reason=the handler failed at " in line
    assert "OSError: the table is unreachable for ***@example.com" in line
    assert "ann.lee" not in caplog.text


def test_a_poison_trigger_never_raises_even_when_services_cannot_be_built(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter.triggers.reset_services()
    monkeypatch.setattr(
        exporter.triggers, "services_from_env", lambda: (_ for _ in ()).throw(KeyError("x"))
    )
    body = BatchMessage(run_id=RUN_ID, batch=0).encode().encode()
    with caplog.at_level(logging.INFO):
        user_function(pipeline.send_batch_poisoned)(message(body))
    (line,) = dropped(caplog)
    assert "queue=contact-batches-poison reason=the handler failed" in line
    assert "KeyError" in line
    exporter.triggers.reset_services()


def test_well_formed_messages_still_reach_their_step(svc: Services) -> None:
    svc.ledger.create_run(a_run(state="planning", planned=False, error="boom"))
    body = POISONED[0][2].model_copy(update={"run_id": RUN_ID}).encode().encode()
    user_function(pipeline.plan_run_poisoned)(message(body))
    run = svc.ledger.get_run(RUN_ID)
    assert run is not None and run.state == "failed" and "the last: boom" in run.error
