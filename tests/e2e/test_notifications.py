"""End to end: notifications (real Azurite, SendGrid sandbox and Functions host, and a receiver
on localhost started and stopped by this module).

A failed run and a verified run each POST a signed payload to the receiver (`run_failed`,
`list_ready` with the list and its member count); a receiver answering 500 is tried again with
backoff, then the notification is recorded failed on the run, whose outcome does not change,
and `runs show` says so. Retries are fast here (NOTIFY_RETRY_BASE_SECONDS=0.1).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.operations import follow, upload_snapshot
from exporter.flow import notify
from exporter.flow.services import Services
from exporter.local.stack import REPO_ROOT, Stack
from exporter.model.destinations import Consent, Destination
from exporter.model.notifications import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    verify_signature,
)
from exporter.model.runs import RunRecord
from exporter.wiring import services_from_env
from tests.support.receiver import Received, Receiver

pytestmark = pytest.mark.e2e

KEY: Final = "SG.e2e-notifications-key"
SIGNING: Final = "e2e-signing-secret-0123456789"
DOWN_SIGNING: Final = "e2e-down-signing-secret-0123"
CONSENT: Final = Consent(accepted_by="dpo", accepted_at=datetime(2026, 11, 1, tzinfo=UTC))


@dataclass
class World:
    stack: Stack
    svc: Services
    storage: Storage
    client: SendGridClient
    receiver: Receiver
    tmp: Path
    settings_file: Path

    def destination(self, name: str, *targets: dict[str, Any]) -> str:
        """Destination `name` (segment `name`) into a new list, notifying `targets`."""
        list_id = self.client.create_list(f"notify {name}").id
        self.svc.destinations.put(
            Destination.model_validate(
                {
                    "name": name,
                    "display_name": f"Notify {name}",
                    "list_id": list_id,
                    "api_key_secret": "SENDGRID_KEY_E2E",
                    "segments": [name],
                    "consent": CONSENT,
                    "notifications": list(targets),
                }
            )
        )
        return list_id

    def export(self, segment: str, rows: int) -> RunRecord:
        path = self.tmp / f"{segment}.csv"
        lines = ["Email,FirstName"] + [f"{segment}-{i}@example.com,N{i}" for i in range(rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        version = upload_snapshot(self.storage, path, segment)
        (run,) = follow(self.svc, version, 1, timeout=90, on_progress=lambda _: None)
        return run

    def run(self, run_id: str) -> RunRecord:
        found = self.svc.ledger.get_run(run_id)
        assert found is not None
        return found


def signed_by(post: Received, secret: str) -> bool:
    return verify_signature(secret, post.headers[SIGNATURE_HEADER], post.body, now=time.time())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("notifications")
    with Receiver() as receiver:
        settings = {
            "SENDGRID_KEY_E2E": KEY,
            "NOTIFY_URL_OPS": f"{receiver.url}/ops/token-in-the-url",
            "NOTIFY_SIGNING_OPS": SIGNING,
            "NOTIFY_URL_DOWN": f"{receiver.url}/down",
            "NOTIFY_SIGNING_DOWN": DOWN_SIGNING,
            "NOTIFY_RETRY_BASE_SECONDS": "0.1",  # 0, 0, 0, 1, 2, 3, 6 s between the 8 attempts
            "VERIFY_LAG_SECONDS": "1",
        }
        receiver.statuses["/down"] = 500
        stack = Stack(
            tmp / "stack", settings=settings, sandbox_args=["--job-delay", "0.1", "--seed", "5"]
        )
        with stack:
            settings_file = tmp / "local.settings.json"
            settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": stack.settings}))
            svc = services_from_env(stack.settings)
            client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
            storage = Storage.from_env(stack.settings)
            yield World(stack, svc, storage, client, receiver, tmp, settings_file)
        for child in (stack.host, stack.sandbox):
            assert child is not None and not child.alive()


def test_a_failed_run_posts_a_signed_run_failed(world: World) -> None:
    list_id = world.destination(
        "notify-failed", {"name": "ops", "kind": "webhook", "events": ["run_failed", "list_ready"]}
    )
    world.client.delete_list(list_id)  # the run finds its list gone: it fails, sending nothing
    run = world.export("notify-failed", 20)
    assert run.state == "failed" and f"SendGrid has no list {list_id}" in run.error

    delivery = f"{run.run_id}.ops.run_failed"
    posts = world.receiver.wait_for(
        "the run_failed POST", lambda found: any(delivery in str(p.headers) for p in found)
    )
    (post,) = [p for p in posts if p.headers.get(DELIVERY_HEADER) == delivery]
    assert post.path == "/ops/token-in-the-url"
    assert post.headers[EVENT_HEADER] == "run_failed"
    assert signed_by(post, SIGNING)
    assert not signed_by(post, DOWN_SIGNING)
    body = json.loads(post.body)
    assert (body["event"], body["run_id"], body["state"]) == ("run_failed", run.run_id, "failed")
    assert (body["destination"], body["segment"], body["list_id"]) == (
        "notify-failed",
        "notify-failed",
        list_id,
    )
    assert body["error"] == run.error
    assert "@example.com" not in post.body.decode()
    deadline = time.monotonic() + 10
    while world.run(run.run_id).notifications[0].state != "delivered":
        assert time.monotonic() < deadline, world.run(run.run_id).notifications
        time.sleep(0.1)
    (record,) = world.run(run.run_id).notifications
    assert (record.target, record.event, record.attempts, record.status) == (
        "ops",
        "run_failed",
        1,
        204,
    )


def test_a_verified_run_posts_list_ready_with_the_list_s_member_count(world: World) -> None:
    list_id = world.destination("notify-ready", {"name": "ops", "kind": "webhook"})
    run = world.export("notify-ready", 30)
    assert (run.state, run.verified) == ("succeeded", True), run.error

    delivery = f"{run.run_id}.ops.list_ready"
    posts = world.receiver.wait_for(
        "the list_ready POST", lambda found: any(delivery in str(p.headers) for p in found)
    )
    (post,) = [p for p in posts if p.headers.get(DELIVERY_HEADER) == delivery]
    assert signed_by(post, SIGNING)
    body = json.loads(post.body)
    count = world.client.list_count(list_id)
    assert count == 30
    assert (body["event"], body["list_id"], body["members"], body["expected_members"]) == (
        "list_ready",
        list_id,
        count,
        30,
    )
    assert (body["verified"], body["confirmation"], body["state"]) == (
        True,
        "read_back",
        "succeeded",
    )
    assert body["finished_at"] == world.run(run.run_id).finished_at.isoformat()  # type: ignore[union-attr]
    # Only the events the run called for: no run_failed, no rejects, no drift.
    assert {
        p.headers[EVENT_HEADER] for p in world.receiver.posts() if run.run_id in str(p.headers)
    } == {"list_ready"}


def test_a_target_answering_500_is_retried_then_recorded_failed_leaving_the_run_alone(
    world: World,
) -> None:
    world.destination("notify-down", {"name": "down", "kind": "webhook", "events": ["list_ready"]})
    run = world.export("notify-down", 10)
    assert run.state == "succeeded", run.error

    deadline = time.monotonic() + 60
    while True:
        records = world.run(run.run_id).notifications
        if records and records[0].state == "failed":
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.2)
    (record,) = records
    assert (record.target, record.event, record.attempts, record.status) == (
        "down",
        "list_ready",
        notify.MAX_ATTEMPTS,
        500,
    )
    assert record.error.startswith(f"failed {notify.MAX_ATTEMPTS} times; the last: HTTP 500")
    posts = [p for p in world.receiver.posts("/down") if run.run_id in str(p.headers)]
    assert len(posts) == notify.MAX_ATTEMPTS >= 2
    assert {p.headers[DELIVERY_HEADER] for p in posts} == {f"{run.run_id}.down.list_ready"}
    assert all(signed_by(p, DOWN_SIGNING) for p in posts)
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    assert sum(gaps) >= 5, gaps  # the backoff: 1 + 2 + 3 + 6 s of the later waits, at least
    after = world.run(run.run_id)
    assert (after.state, after.error, after.verified) == ("succeeded", "", run.verified)

    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "runs",
            "show",
            run.run_id,
            "--settings",
            str(world.settings_file),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "down (webhook) list_ready: FAILED (8 attempts): failed 8 times" in shown.stdout
    assert "token-in-the-url" not in shown.stdout + shown.stderr
