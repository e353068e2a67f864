"""End to end: a file dropped into Azurite ends up, exactly, in the sandbox's SendGrid list.

Real parts only: Azurite (npm), the SendGrid sandbox and the local Functions host running
`function_app.py`, each a child process stopped by PID. One stack serves the module; each test
uses its own segment, list and destination, and puts the sandbox's faults back afterwards.
"""

from __future__ import annotations

import csv
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.operations import follow, upload_snapshot
from exporter.core.contacts import EMAIL_RE
from exporter.core.samples import generate
from exporter.flow.services import Services
from exporter.local.stack import Stack
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from exporter.model.versions import SnapshotVersion
from exporter.wiring import services_from_env

pytestmark = pytest.mark.e2e

KEY = "SG.e2e-sandbox-key"
CONSENT = Consent(accepted_by="dpo@company.example", accepted_at=datetime(2026, 11, 1, tzinfo=UTC))


@dataclass
class Env:
    stack: Stack
    svc: Services
    storage: Storage
    client: SendGridClient
    tmp: Path

    def destination(self, name: str, *, consent: bool = True, list_id: str | None = None) -> str:
        """A destination for segment `name` exporting to a fresh list; returns the list id."""
        list_id = list_id or self.client.create_list(f"list {name}").id
        self.svc.destinations.put(
            Destination(
                name=name,
                display_name=name,
                list_id=list_id,
                api_key_secret="SENDGRID_KEY_E2E",
                segments=[name],
                consent=CONSENT if consent else None,
            )
        )
        return list_id

    def drop(self, segment: str, rows: int, **rates: float) -> tuple[SnapshotVersion, Path]:
        path = self.tmp / f"{segment}.csv"
        generate(path, rows=rows, seed=hash(segment) % 1000, **rates)
        return upload_snapshot(self.storage, path, segment), path

    def wait(self, version: SnapshotVersion, timeout: float = 180) -> RunRecord:
        (run,) = follow(self.svc, version, 1, timeout=timeout, on_progress=lambda _: None)
        return run

    def members(self, list_id: str) -> dict[str, dict[str, object]]:
        members = control(self.stack.sandbox_url, "GET", f"/__sandbox/lists/{list_id}/contacts")
        return {m["email"]: m for m in members}

    def faults(self, **values: float) -> None:
        control(self.stack.sandbox_url, "POST", "/__sandbox/faults", values)


def control(base: str, method: str, path: str, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("e2e")
    stack = Stack(
        tmp / "stack",
        settings={
            "SENDGRID_KEY_E2E": KEY,
            "MAX_BATCH_CONTACTS": "1000",  # several batches per test file: a real fan-out
            "LOCAL_HOST_QUEUE_LEASE_SECONDS": "15",
        },
        sandbox_args=["--job-delay", "0.2", "--seed", "7"],
    )
    with stack:
        storage = Storage.from_env(stack.settings)
        svc = services_from_env(stack.settings)
        client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
        yield Env(stack, svc, storage, client, tmp)
    for child in (stack.host, stack.sandbox):
        assert child is not None and not child.alive()
    assert stack.azurite is not None and not stack.azurite.alive()


@pytest.fixture(autouse=True)
def calm_sandbox(env: Env) -> Iterator[None]:
    yield
    env.faults(error_rate=0, throttle_rate=0, latency_ms=0, drop_rate=0)


def assert_clean(run: RunRecord) -> None:
    """Every valid contact landed: only rejected rows (1% in generated files) may mark it."""
    assert run.batches_failed == 0 and run.errored == 0, run.error
    assert run.state == "succeeded", run.error  # rows may be rejected: they are reported
    assert run.batches_done == run.batches


def expected_contacts(path: Path) -> dict[str, str]:
    """Normalised email -> first name of its first valid occurrence, read independently."""
    out: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            email = (row["PrimaryEmail"] or "").strip().lower()
            if email and EMAIL_RE.fullmatch(email) and email not in out:
                out[email] = (row["FirstName"] or "").strip()
    return out


def test_a_10k_file_lands_exactly_with_counts_and_reject_report(env: Env) -> None:
    list_id = env.destination("e2e-a")
    version, path = env.drop(
        "e2e-a", 10_000, invalid_rate=0.01, duplicate_rate=0.02, blank_rate=0.005
    )
    run = env.wait(version)
    expected = expected_contacts(path)
    assert run.state == "succeeded", run.error  # rows were rejected (reported), none lost
    assert run.valid == len(expected)
    assert run.rows == 10_000
    assert run.rows == run.valid + run.rejected + run.duplicates + run.blank
    assert run.created == len(expected) and run.errored == 0
    members = env.members(list_id)
    assert set(members) == set(expected)
    for email in list(expected)[:500]:
        assert members[email].get("first_name", "") == expected[email]
    report = env.storage.app.download_blob(run.reject_report).readall().decode()
    rows = list(csv.DictReader(report.splitlines()))
    assert len(rows) == run.rejected
    assert {r["reason"] for r in rows} == {"invalid_email"}


def test_b_the_same_blob_delivered_twice_makes_one_run(env: Env) -> None:
    env.destination("e2e-b")
    version, _ = env.drop("e2e-b", 200)
    run = env.wait(version)
    assert_clean(run)
    hosts = env.storage.blobs.get_container_client("azure-webjobs-hosts")
    receipts = [b.name for b in hosts.list_blobs() if "e2e-b/" in b.name]
    assert receipts, "the host wrote no blob receipt"
    # As if the host died before writing its receipt: a restarted host sees the blob again.
    for name in receipts:
        hosts.delete_blob(name)
    assert env.stack.host is not None
    env.stack.host.stop()
    env.stack.start_host()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if [b for b in hosts.list_blobs() if "e2e-b/" in b.name]:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the host did not process the blob again")
    runs = [r for r in env.svc.ledger.runs(limit=500) if r.snapshot == version.name]
    assert len(runs) == 1


def test_c_429s_and_5xx_still_give_an_exact_list(env: Env) -> None:
    list_id = env.destination("e2e-c")
    env.faults(throttle_rate=0.3, error_rate=0.2)
    version, path = env.drop("e2e-c", 3_000)
    run = env.wait(version, timeout=300)
    assert_clean(run)
    assert set(env.members(list_id)) == set(expected_contacts(path))
    assert run.batches == 3 and run.batches_done == 3


def test_d_a_worker_killed_mid_batch_is_redelivered_and_the_list_is_exact(env: Env) -> None:
    list_id = env.destination("e2e-d")
    env.faults(latency_ms=3000)  # every call hangs for 3 s: the kill lands mid-request
    version, path = env.drop("e2e-d", 2_000)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = [r for r in env.svc.ledger.runs(limit=500) if r.snapshot == version.name]
        if runs and runs[0].state == "sending":
            break
        time.sleep(0.2)
    else:
        pytest.fail("the run never started sending")
    time.sleep(1.0)  # the upsert is in flight now
    assert env.stack.host is not None
    killed = env.stack.host.pid
    env.stack.host.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    env.faults(latency_ms=0)
    env.stack.start_host()
    run = env.wait(version, timeout=180)
    assert_clean(run)
    assert set(env.members(list_id)) == set(expected_contacts(path))


def test_e_a_list_sendgrid_does_not_have_fails_the_run_before_anything_is_sent(env: Env) -> None:
    env.destination("e2e-e", list_id="7d3f9a2e-1111-4222-8333-444455556666")  # no such list
    version, _ = env.drop("e2e-e", 100)
    run = env.wait(version)
    assert run.state == "failed"
    assert "SendGrid has no list 7d3f9a2e-1111-4222-8333-444455556666" in run.error
    assert (run.batches, run.state_committed) == (0, False)


def test_e_sendgrid_failing_for_a_while_delays_the_run_which_then_lands(env: Env) -> None:
    list_id = env.destination("e2e-p")
    env.faults(error_rate=1.0)
    version, path = env.drop("e2e-p", 100)
    deadline = time.monotonic() + 60
    while True:  # the planner's first call (is the list there?) fails: it is put back, later
        runs = [r for r in env.svc.ledger.runs("e2e-p") if r.snapshot == version.name]
        if runs and "planning attempt failed" in runs[0].error and "HTTP 500" in runs[0].error:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    assert runs[0].state == "planning"  # waiting, not failed: no delivery attempt was spent
    env.faults(error_rate=0.0)
    run = env.wait(version, timeout=240)
    assert_clean(run)
    assert env.members(list_id).keys() == expected_contacts(path).keys()


def test_f_a_destination_without_consent_sends_nothing_and_says_why(env: Env) -> None:
    list_id = env.destination("e2e-f", consent=False)
    version, _ = env.drop("e2e-f", 100)
    run = env.wait(version)
    assert run.state == "failed"
    assert "no data-privacy consent is recorded for destination 'e2e-f'" in run.error
    assert env.members(list_id) == {}
