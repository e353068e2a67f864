"""Notifications (exporter/flow/notify.py and what it stands on): which events a run's end calls
for, queued once per target x event; each delivered in its target's format, webhooks signed;
retried with backoff on no answer, 429 and 5xx, failed at once on other 4xx, recorded on the
run without touching its outcome; targets validated strictly; their secrets only under their
names and only when usable; the record kept by the Table ledger; `runs show` showing it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import pytest

from exporter.adapters.secrets import EnvSecretProvider, KeyVaultSecretProvider
from exporter.adapters.table_ledger import _run_from, _to_entity
from exporter.admin.destinations import save_destination
from exporter.admin.requests import DestinationRequest, parse
from exporter.admin.views import notification_lines
from exporter.cli.destinations import _targets as cli_targets
from exporter.cli.parser import build_parser
from exporter.core.errors import InputError
from exporter.flow import notify
from exporter.flow.services import Services
from exporter.model.destinations import Consent, Destination
from exporter.model.keys import NOTIFY_NAME_RULE
from exporter.model.messages import NOTIFICATIONS, BadMessage, Notification, decode
from exporter.model.notifications import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    NotificationRecord,
    NotificationTarget,
    parse_target_spec,
    signature,
    verify_signature,
)
from exporter.model.runs import RunRecord
from exporter.ports.notifier import (
    Answer,
    NotificationSecretMissing,
    TargetRefused,
    TargetUnreachable,
)
from exporter.ports.secrets import SecretNotFound
from tests.support.fakes import MemoryStorage
from tests.support.memory_destinations import MemoryDestinationStore
from tests.support.memory_flow import MemoryWorld, segment_csv
from tests.support.memory_ledger import MemoryRunLedger
from tests.unit.test_secrets import FakeVault

RUN_ID: Final = "20261124T101500-1f2e3d4c5b6a"
LIST_ID: Final = "3f7c2a8e-1b4d-4c6e-9a0f-5d2b8e7c1a34"
SIGNING: Final = "whsec-0123456789abcdef0123"
SETTINGS: Final = {
    "NOTIFY_URL_OPS": "https://hooks.example.com/exporter",
    "NOTIFY_SIGNING_OPS": SIGNING,
    "NOTIFY_URL_CHAT": "https://hooks.slack.com/services/T000/B000/XXXX",
    "NOTIFY_URL_TEAM": "https://example.webhook.office.com/webhookb2/abc",
    "SENDGRID_KEY_FLOW": "SG.key",
}
CONSENT: Final = Consent(accepted_by="dpo", accepted_at=datetime(2026, 11, 1, tzinfo=UTC))


@dataclass
class Posted:
    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeNotifier:
    """Answers from a script (an `Answer`, or an exception to raise), then 204s."""

    script: list[Answer | Exception] = field(default_factory=list)
    posted: list[Posted] = field(default_factory=list)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.posted.append(Posted(url, body, dict(headers)))
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return Answer(204)


@dataclass
class World:
    svc: Services
    storage: MemoryStorage
    ledger: MemoryRunLedger
    notifier: FakeNotifier

    def run(self) -> RunRecord:
        found = self.ledger.get_run(RUN_ID)
        assert found is not None
        return found

    def queued(self) -> list[tuple[Notification, float]]:
        return [(decode(Notification, s.body), s.delay) for s in self.storage.take(NOTIFICATIONS)]

    def deliver_all(self) -> list[float]:
        """Deliver every queued notification (and the retries they queue) until none is
        left; the delays the retries asked for, in order."""
        delays = []
        for _ in range(50):
            queued = self.queued()
            if not queued:
                return delays
            for message, delay in queued:
                if message.attempts:
                    delays.append(delay)
                notify.deliver(self.svc, message)
        raise AssertionError("notifications did not settle")


def target(**values: Any) -> dict[str, Any]:
    return {"name": "ops", "kind": "webhook", **values}


def destination(*targets: dict[str, Any]) -> Destination:
    return Destination.model_validate(
        {
            "name": "marketing",
            "display_name": "Marketing",
            "list_id": LIST_ID,
            "api_key_secret": "SENDGRID_KEY_FLOW",
            "segments": ["loyal"],
            "consent": CONSENT,
            "notifications": list(targets) or [target()],
        }
    )


def ended(**values: Any) -> RunRecord:
    run = RunRecord(RUN_ID, "marketing", "loyal", "loyal/a.csv", '"e1"', "blob", list_id=LIST_ID)
    run.finished_at = datetime(2026, 11, 24, 10, 20, tzinfo=UTC)
    values = {"state": "succeeded", "rows": 100, "valid": 100, "members": 100, **values}
    for key, value in values.items():
        setattr(run, key, value)
    return run


@pytest.fixture
def world() -> World:
    storage, ledger, notifier = MemoryStorage(), MemoryRunLedger(), FakeNotifier()
    svc = Services(
        storage=storage,
        ledger=ledger,
        destinations=MemoryDestinationStore(destination()),
        secrets=EnvSecretProvider(SETTINGS),
        clients=lambda key: None,  # type: ignore[arg-type,return-value]
        notifier=notifier,
        notify_retry_base=1.0,
    )
    return World(svc, storage, ledger, notifier)


def end(world: World, run: RunRecord, *targets: dict[str, Any]) -> None:
    if targets:
        world.svc.destinations.put(destination(*targets))
    world.ledger.create_run(run)
    notify.run_ended(world.svc, run)


# --- which events ---------------------------------------------------------------------------


ALL = NotificationTarget.model_validate(target())


@pytest.mark.parametrize(
    ("values", "events"),
    [
        ({"state": "succeeded"}, ["list_ready"]),
        ({"state": "succeeded", "verified": True, "looks": 1}, ["list_ready"]),
        ({"state": "failed", "error": "SendGrid has no list"}, ["run_failed"]),
        ({"state": "succeeded_with_errors", "errored": 3}, []),
        ({"state": "skipped", "rows": 100, "rejected": 90}, []),
        ({"state": "queued"}, []),  # not ended
        # The list seen different twice, a lag apart, after healing: drift (and failed).
        ({"state": "failed", "looks": 4, "heals": 1, "missing": 3}, ["run_failed", "list_drift"]),
        # Refused by SendGrid one by one after healing: drift, though "with errors".
        ({"state": "succeeded_with_errors", "looks": 4, "changed": 2}, ["list_drift"]),
        # One look found a difference, and the next could not be taken: unverified, not drift.
        ({"state": "succeeded", "looks": 1, "missing": 3}, ["list_ready"]),
        # Extra contacts only count in mirror mode.
        ({"state": "succeeded", "looks": 2, "extra": 5}, ["list_ready"]),
        (
            {"state": "failed", "looks": 2, "extra": 5, "sync_mode": "mirror"},
            ["run_failed", "list_drift"],
        ),
        ({"rows": 100, "rejected": 6}, ["rejects_above", "list_ready"]),
        ({"rows": 100, "rejected": 5}, ["list_ready"]),  # 5% is not above 5%
        ({"state": "failed", "rows": 0, "rejected": 0}, ["run_failed"]),
    ],
)  # fmt: skip
def test_the_events_a_run_s_end_calls_for(values: dict[str, Any], events: list[str]) -> None:
    assert notify.events_of(ended(**values), ALL) == events


def test_a_target_gets_only_the_events_it_wants_at_its_own_share() -> None:
    picky = NotificationTarget.model_validate(
        target(events=["rejects_above", "run_failed"], reject_share=0.5)
    )
    assert notify.events_of(ended(rows=100, rejected=40), picky) == []
    assert notify.events_of(ended(state="failed", rows=100, rejected=60), picky) == [
        "rejects_above",
        "run_failed",
    ]


def test_a_run_s_end_queues_one_message_per_target_and_event_once(world: World) -> None:
    chat = {"name": "chat", "kind": "slack", "events": ["run_failed"]}
    end(world, ended(state="failed", rows=10, rejected=9), target(), chat)
    queued = world.queued()
    assert [(m.target, m.event, m.attempts, d) for m, d in queued] == [
        ("ops", "run_failed", 0, 0),
        ("ops", "rejects_above", 0, 0),
        ("chat", "run_failed", 0, 0),
    ]
    records = [(n.target, n.kind, n.event, n.state) for n in world.run().notifications]
    assert records == [
        ("ops", "webhook", "run_failed", "queued"),
        ("ops", "webhook", "rejects_above", "queued"),
        ("chat", "slack", "run_failed", "queued"),
    ]
    # A repeat of the run's end (a redelivered step, a crash before the record) adds nothing.
    notify.run_ended(world.svc, world.run())
    assert world.queued() == [] and len(world.run().notifications) == 3


def test_no_target_no_destination_or_a_run_still_going_queues_nothing(world: World) -> None:
    world.svc.destinations.put(destination().model_copy(update={"notifications": []}))
    end(world, ended(state="failed"))
    world.svc.destinations.delete("marketing")
    notify.run_ended(world.svc, world.run())
    run = ended(state="sending")
    notify.run_ended(world.svc, run)
    assert world.queued() == [] and world.run().notifications == []


# --- delivering: the webhook's signed JSON, Slack, Teams ---------------------------------------


def test_a_list_ready_webhook_is_signed_and_says_which_list_how_many_members_and_when(
    world: World,
) -> None:
    run = ended(verified=True, looks=1, list_count=1234, members=1234, sent=34, created=34)
    end(world, run)
    before = time.time()
    world.deliver_all()
    (posted,) = world.notifier.posted
    assert posted.url == SETTINGS["NOTIFY_URL_OPS"]
    assert posted.headers[EVENT_HEADER] == "list_ready"
    assert posted.headers[DELIVERY_HEADER] == f"{RUN_ID}.ops.list_ready"
    header = posted.headers[SIGNATURE_HEADER]
    assert verify_signature(SIGNING, header, posted.body, now=time.time())
    assert not verify_signature("another-secret-0123456789", header, posted.body, now=time.time())
    assert not verify_signature(SIGNING, header, posted.body + b" ", now=time.time())
    assert not verify_signature(SIGNING, header, posted.body, now=time.time() + 600)  # replayed
    t = int(header.split(",")[0].removeprefix("t="))
    assert before - 1 <= t <= time.time()
    assert header == signature(SIGNING, t, posted.body)
    body = posted.json
    assert body["event"] == "list_ready" and body["delivery"] == f"{RUN_ID}.ops.list_ready"
    assert (body["run_id"], body["destination"], body["segment"]) == (RUN_ID, "marketing", "loyal")
    assert (body["list_id"], body["members"], body["expected_members"]) == (LIST_ID, 1234, 1234)
    assert (body["state"], body["verified"], body["confirmation"]) == (
        "succeeded",
        True,
        "read_back",
    )
    assert body["finished_at"] == "2026-11-24T10:20:00+00:00"
    assert body["counts"]["sent"] == 34 and body["counts"]["created"] == 34
    assert body["summary"].startswith("List ready: Marketing (marketing)")
    assert "1,234 members" in body["summary"]
    (record,) = world.run().notifications
    assert (record.state, record.attempts, record.status, record.error) == ("delivered", 1, 204, "")
    assert world.run().state == "succeeded"


def test_an_unverified_success_is_ready_by_its_import_jobs(world: World) -> None:
    end(world, ended(list_count=None, list_count_note="SendGrid did not say"))
    world.deliver_all()
    body = world.notifier.posted[0].json
    assert (body["verified"], body["confirmation"], body["members"]) == (
        False,
        "import_jobs",
        None,
    )
    assert "an unknown number of members" in body["summary"]


def test_a_failed_run_s_webhook_carries_its_reason_without_addresses(world: World) -> None:
    end(world, ended(state="failed", error="batch 0: jane@example.com was refused"))
    world.deliver_all()
    body = world.notifier.posted[0].json
    assert (body["event"], body["state"], body["confirmation"]) == ("run_failed", "failed", None)
    assert body["error"] == "batch 0: ***@example.com was refused"
    assert "jane" not in world.notifier.posted[0].body.decode()


def test_slack_gets_text_and_blocks_escaped_and_unsigned(world: World) -> None:
    chat = {"name": "chat", "kind": "slack", "events": ["run_failed"]}
    end(world, ended(state="failed", error="a <b> & c"), chat)
    world.deliver_all()
    (posted,) = world.notifier.posted
    assert posted.url == SETTINGS["NOTIFY_URL_CHAT"]
    assert SIGNATURE_HEADER not in posted.headers
    message = posted.json
    assert set(message) == {"text", "blocks"}
    assert message["text"].startswith("Run failed: Marketing (marketing)")
    assert [b["type"] for b in message["blocks"]] == ["section", "section", "context"]
    fields = {f["text"].split("\n")[0]: f["text"] for f in message["blocks"][1]["fields"]}
    assert fields["*Reason*"] == "*Reason*\na &lt;b&gt; &amp; c"
    assert len(message["blocks"][1]["fields"]) <= 10


def test_teams_gets_an_adaptive_card(world: World) -> None:
    team = {"name": "team", "kind": "teams", "events": ["list_drift"]}
    end(world, ended(state="failed", looks=4, heals=1, missing=2, changed=1, extra=0), team)
    world.deliver_all()
    message = world.notifier.posted[0].json
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert card["body"][0]["text"].startswith("List differs from the segment")
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Differences"] == "2 missing, 1 changed, 0 not in the segment"
    assert facts["List"] == LIST_ID


# --- retries, backoff, failures --------------------------------------------------------------


def test_no_answer_429_and_5xx_are_retried_with_backoff_then_recorded_failed(world: World) -> None:
    world.notifier.script = [Answer(500, detail="oops")] * notify.MAX_ATTEMPTS
    end(world, ended())
    delays = world.deliver_all()
    assert len(world.notifier.posted) == notify.MAX_ATTEMPTS
    assert delays == [1, 2, 4, 8, 16, 32, 64]
    bodies = {p.headers[DELIVERY_HEADER] for p in world.notifier.posted}
    assert bodies == {f"{RUN_ID}.ops.list_ready"}  # one delivery id on every attempt
    (record,) = world.run().notifications
    assert (record.state, record.attempts, record.status) == ("failed", 8, 500)
    assert record.error == "failed 8 times; the last: HTTP 500: oops"
    run = world.run()
    assert (run.state, run.error) == ("succeeded", "")  # the run's outcome is untouched


def test_a_retry_is_recorded_while_it_waits_and_a_late_success_delivers(world: World) -> None:
    world.notifier.script = [
        TargetUnreachable("no answer within 10 s (timed out)"),
        Answer(429, retry_after=30),
        Answer(503),
    ]
    end(world, ended())
    ((message, _),) = world.queued()
    notify.deliver(world.svc, message)
    (record,) = world.run().notifications
    assert (record.state, record.attempts) == ("queued", 1)
    assert record.error == "attempt 1: no answer within 10 s (timed out); trying again in 1 s"
    assert notification_lines(world.run()) == [
        "  notify     ops (webhook) list_ready: queued, retrying (" + record.error + ")"
    ]
    ((again, delay),) = world.queued()
    assert (again.attempts, delay) == (1, 1.0)
    notify.deliver(world.svc, again)
    ((third, delay),) = world.queued()
    assert (third.attempts, delay) == (2, 30.0)  # the target's Retry-After, over the backoff
    notify.deliver(world.svc, message)  # a stale repeat of attempt 0: not posted again
    assert len(world.notifier.posted) == 2
    notify.deliver(world.svc, third)  # 503
    assert world.deliver_all() == [4.0]
    (record,) = world.run().notifications
    assert (record.state, record.attempts, record.status) == ("delivered", 4, 204)
    notify.deliver(world.svc, third)  # a repeat of a delivered notification: nothing
    assert len(world.notifier.posted) == 4


def test_the_backoff_doubles_to_at_most_300_seconds(world: World) -> None:
    world.svc.notify_retry_base = 5.0
    delays = [notify.retry_delay(world.svc, n) for n in range(1, 10)]
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert notify.retry_delay(world.svc, 1, retry_after=3600) == 300
    assert notify.retry_delay(world.svc, 1, retry_after=float("nan")) == 5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 302])
def test_other_answers_fail_at_once_without_a_retry(world: World, status: int) -> None:
    world.notifier.script = [Answer(status, detail="invalid_payload")]
    end(world, ended())
    world.deliver_all()
    assert len(world.notifier.posted) == 1
    (record,) = world.run().notifications
    assert (record.state, record.attempts, record.status) == ("failed", 1, status)
    assert record.error == (
        f"the target refused it (HTTP {status}: invalid_payload); not tried again"
    )
    assert notification_lines(world.run()) == [
        f"  notify     ops (webhook) list_ready: FAILED (1 attempt): {record.error}"
    ]


def test_a_missing_secret_a_refused_url_or_a_removed_target_fails_without_a_post(
    world: World,
) -> None:
    end(world, ended(), target(url_secret="NOTIFY_URL_NOWHERE"))
    world.deliver_all()
    (record,) = world.run().notifications
    assert record.state == "failed" and not world.notifier.posted
    assert record.error.startswith(
        "not sent: no notification URL is available under the name 'NOTIFY_URL_NOWHERE'"
    )

    world.ledger = MemoryRunLedger()
    world.svc.ledger = world.ledger
    world.notifier.script = [TargetRefused("the target's URL cannot be posted to: not https")]
    end(world, ended(), target())
    world.deliver_all()
    (record,) = world.run().notifications
    assert (record.state, record.attempts) == ("failed", 0)
    assert record.error == "not sent: the target's URL cannot be posted to: not https"

    world.ledger = MemoryRunLedger()
    world.svc.ledger = world.ledger
    end(world, ended(), target())
    world.svc.destinations.put(destination({"name": "other", "kind": "slack"}))
    world.deliver_all()
    ops = next(n for n in world.run().notifications if n.target == "ops")
    assert (ops.state, ops.error) == (
        "failed",
        "not sent: the target was removed from the destination",
    )


def test_the_poison_queue_records_the_notification_failed(world: World) -> None:
    end(world, ended())
    ((message, _),) = world.queued()
    notify.poisoned(world.svc, message)
    (record,) = world.run().notifications
    assert record.state == "failed" and "failed on every attempt" in record.error
    notify.poisoned(
        world.svc, message.model_copy(update={"run_id": "20261124T101500-000000000000"})
    )


# --- the whole flow in memory ------------------------------------------------------------------


def test_a_verified_run_and_a_failed_run_notify_through_the_flow() -> None:
    world = MemoryWorld.create(max_batch_contacts=40)
    notifier = FakeNotifier()
    world.svc.secrets = EnvSecretProvider({**SETTINGS, "SENDGRID_KEY_FLOW": "SG.memory-flow-key"})
    world.svc.notifier = notifier
    world.destination(notifications=[target()])
    world.arrive("loyal/a.csv", segment_csv(50))
    world.pump()
    run = world.only_run()
    assert (run.state, run.verified) == ("succeeded", True)
    for sent in world.storage.take(NOTIFICATIONS):
        notify.deliver(world.svc, decode(Notification, sent.body))
    (posted,) = notifier.posted
    assert posted.json["event"] == "list_ready"
    assert posted.json["members"] == 50 == len(world.members())
    assert verify_signature(SIGNING, posted.headers[SIGNATURE_HEADER], posted.body, now=time.time())

    world.sendgrid.store.delete_list(world.list_id)
    world.arrive("loyal/b.csv", segment_csv(51))
    world.pump()
    failed = world.latest()
    assert failed.state == "failed"
    for sent in world.storage.take(NOTIFICATIONS):
        notify.deliver(world.svc, decode(Notification, sent.body))
    assert [p.json["event"] for p in notifier.posted] == ["list_ready", "run_failed"]
    assert notifier.posted[1].json["run_id"] == failed.run_id


def test_a_look_that_died_queueing_its_notifications_queues_them_when_delivered_again() -> None:
    # The look that ends a run queues its notifications last (finish.wrap_up): a worker dying
    # there must not lose them; the host delivers the look again, and the repeat finishes it.
    world = MemoryWorld.create(max_batch_contacts=40)
    world.svc.secrets = EnvSecretProvider({**SETTINGS, "SENDGRID_KEY_FLOW": "SG.memory-flow-key"})
    world.svc.notifier = FakeNotifier()
    world.destination(notifications=[target()])
    send = world.storage.send
    failed: list[str] = []

    def dies_once(queue: str, message: Any, *, delay: float = 0) -> None:
        if queue == NOTIFICATIONS and not failed:
            failed.append(queue)
            raise RuntimeError("the worker died here")
        send(queue, message, delay=delay)

    world.storage.send = dies_once  # type: ignore[method-assign]
    world.arrive("loyal/a.csv", segment_csv(50))
    world.pump(host=True)
    run = world.only_run()
    assert failed == [NOTIFICATIONS]
    assert (run.state, [(n.target, n.event) for n in run.notifications]) == (
        "succeeded",
        [("ops", "list_ready")],
    )
    assert [decode(Notification, m.body).event for m in world.storage.take(NOTIFICATIONS)] == [
        "list_ready"
    ]


# --- targets, their secrets, their record ------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"kind": "email"}, "notifications.0.kind: Input should be 'webhook', 'slack' or 'teams'"),
        ({"events": ["run_done"]}, "notifications.0.events.0: Input should be 'run_failed'"),
        ({"events": []}, "notifications.0.events: List should have at least 1 item"),
        ({"events": ["list_ready", "list_ready"]}, "an event is listed more than once"),
        ({"name": "Ops Hook"}, "notifications.0.name: String should match pattern"),
        ({"url_secret": "https://hooks.example.com/x"}, "never the URL itself"),
        ({"url_secret": "SENDGRID_KEY_FLOW"}, "is not a name a target's URL may have"),
        ({"url_secret": "NOTIFY_SIGNING_OPS"}, "is not a name a target's URL may have"),
        ({"signing_secret": "NOTIFY_URL_OPS"}, "is not a name a signing secret may have"),
        ({"kind": "slack", "signing_secret": "NOTIFY_SIGNING_X"}, "signing_secret is for webhooks"),
        ({"reject_share": 1.5}, "reject_share: Input should be less than or equal to 1"),
        ({"reject_share": "0.1"}, "reject_share: Input should be a valid number"),
        ({"url": "https://x"}, "notifications.0.url: Extra inputs are not permitted"),
    ],
)
def test_targets_are_validated_strictly(values: dict[str, Any], problem: str) -> None:
    document = destination().model_dump(mode="json") | {"notifications": [target(**values)]}
    with pytest.raises(InputError, match="invalid destination") as caught:
        Destination.from_json(json.dumps(document))
    assert problem in str(caught.value)


def test_a_target_s_secret_names_default_from_its_name_and_targets_are_few_and_unique() -> None:
    hook = NotificationTarget.model_validate(target(name="ops-hook"))
    assert (hook.url_secret, hook.signing_secret) == (
        "NOTIFY_URL_OPS_HOOK",
        "NOTIFY_SIGNING_OPS_HOOK",
    )
    assert hook.events == ["run_failed", "list_drift", "rejects_above", "list_ready"]
    slack = NotificationTarget.model_validate({"name": "chat", "kind": "slack"})
    assert (slack.url_secret, slack.signing_secret) == ("NOTIFY_URL_CHAT", "")
    vault = NotificationTarget.model_validate(target(url_secret="notify-url-ops"))
    assert vault.url_secret == "notify-url-ops"
    saved = destination(target(), {"name": "chat", "kind": "slack"})
    assert Destination.from_json(saved.stored_json(), stored=True) == saved
    base = destination().model_dump(mode="json")
    for targets, problem in [
        ([target(), target()], "two notification targets have the same name"),
        ([target(name=f"t{i}") for i in range(11)], "at most 10 notification targets"),
    ]:
        with pytest.raises(InputError, match=problem):
            Destination.from_json(json.dumps(base | {"notifications": targets}))


def test_the_cli_s_target_spec() -> None:
    assert parse_target_spec("ops=webhook") == {"name": "ops", "kind": "webhook"}
    assert parse_target_spec("chat=slack:run_failed,rejects_above=0.02,list_ready") == {
        "name": "chat",
        "kind": "slack",
        "events": ["run_failed", "rejects_above", "list_ready"],
        "reject_share": 0.02,
    }
    assert parse_target_spec("ops=webhook::NOTIFY-URL-OPS:NOTIFY-SIGNING-OPS") == {
        "name": "ops",
        "kind": "webhook",
        "url_secret": "NOTIFY-URL-OPS",
        "signing_secret": "NOTIFY-SIGNING-OPS",
    }
    for bad in ("ops", "=webhook", "ops=", "ops=webhook:run_failed=1", "ops=slack:rejects_above=x"):
        with pytest.raises(InputError, match="--notify"):
            parse_target_spec(bad)


def test_secrets_are_read_only_under_their_names_and_only_when_usable() -> None:
    settings = {
        **SETTINGS,
        "NOTIFY_URL_PLAIN": "http://hooks.example.com/x",
        "NOTIFY_URL_LOCAL": "http://127.0.0.1:8080/hook",
        "NOTIFY_URL_USER": "https://me:pw@hooks.example.com/x",
        "NOTIFY_SIGNING_SHORT": "short",
        "NOTIFY_URL_REF": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/x)",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    secrets = EnvSecretProvider(settings)
    assert secrets.notification_secret("NOTIFY_URL_OPS", "url") == SETTINGS["NOTIFY_URL_OPS"]
    assert secrets.notification_secret("NOTIFY_URL_LOCAL", "url").startswith("http://127.0.0.1")
    assert secrets.notification_secret("NOTIFY_SIGNING_OPS", "signing") == SIGNING
    refused = {
        ("NOTIFY_URL_PLAIN", "url"): "must be https (plain http only for localhost)",
        ("NOTIFY_URL_USER", "url"): "holds a user name or password",
        ("NOTIFY_URL_REF", "url"): "a Key Vault reference the platform did not resolve",
        ("NOTIFY_SIGNING_SHORT", "signing"): "a signing secret is 16 to 512 characters",
        ("NOTIFY_URL_GONE", "url"): "no notification URL is available under the name",
        ("AzureWebJobsStorage", "url"): "no notification URL is available under the name",
        ("SENDGRID_KEY_FLOW", "url"): "no notification URL is available under the name",
        ("NOTIFY_URL_OPS", "signing"): "no notification signing secret is available",
        ("NOTIFY_SIGNING_OPS", "url"): "no notification URL is available under the name",
    }
    for (name, kind), problem in refused.items():
        with pytest.raises(NotificationSecretMissing, match=re.escape(problem)) as caught:
            secrets.notification_secret(name, kind)  # type: ignore[arg-type]
        assert "hooks.example.com" not in str(caught.value) and "pw" not in str(caught.value)
    with pytest.raises(SecretNotFound):  # and a notification's name is never an API key's
        secrets.get("NOTIFY_URL_OPS")


def test_the_table_ledger_keeps_a_run_s_notifications() -> None:
    run = ended()
    run.notifications = [
        NotificationRecord("ops", "webhook", "list_ready", "delivered", 1, 204, "", "t0", "t1"),
        NotificationRecord("chat", "slack", "run_failed", "failed", 8, 500, "HTTP 500"),
    ]
    entity = _to_entity(RUN_ID, "run", run)
    assert isinstance(entity["notifications"], str)
    back = _run_from(entity)
    assert back.notifications == run.notifications
    assert replace(back, notifications=[]) == replace(run, notifications=[])
    old = {k: v for k, v in entity.items() if k != "notifications"}  # a run from before
    assert _run_from(old).notifications == []
    newer = json.dumps([{"target": "ops", "kind": "teams", "event": "list_ready", "new": 1}])
    assert _run_from(entity | {"notifications": newer}).notifications[0].target == "ops"


def test_a_notification_message_is_decoded_strictly() -> None:
    good = Notification(run_id=RUN_ID, target="ops", event="list_ready")
    assert decode(Notification, good.encode()) == good
    for body, problem in [
        ({"run_id": RUN_ID, "target": "ops", "event": "list_done"}, "event: Input should be"),
        ({"run_id": RUN_ID, "target": "../x", "event": "list_ready"}, "target: String should"),
        ({"run_id": RUN_ID, "target": "ops", "event": "list_ready", "url": "x"}, "url: Extra"),
        ({"run_id": RUN_ID, "target": "ops", "event": "list_ready", "attempts": -1}, "attempts"),
    ]:
        with pytest.raises(BadMessage, match=problem):
            decode(Notification, json.dumps(body))


def test_key_vault_serves_notification_secrets_only_under_their_names_and_cached() -> None:
    vault = FakeVault(
        {
            "NOTIFY-URL-OPS": "https://hooks.example.com/x",
            "NOTIFY-SIGNING-OPS": SIGNING,
            "NOTIFY-URL-BAD": "http://hooks.example.com/x",
            "SENDGRID-KEY-X": "SG.key",
        }
    )
    now = [0.0]
    secrets = KeyVaultSecretProvider(
        "https://v.vault.azure.net", ttl=300, clock=lambda: now[0], client=vault
    )
    assert secrets.notification_secret("NOTIFY-URL-OPS", "url") == "https://hooks.example.com/x"
    assert secrets.notification_secret("NOTIFY-URL-OPS", "url") == "https://hooks.example.com/x"
    assert secrets.notification_secret("NOTIFY-SIGNING-OPS", "signing") == SIGNING
    assert vault.calls == ["NOTIFY-URL-OPS", "NOTIFY-SIGNING-OPS"]  # cached for the TTL
    with pytest.raises(NotificationSecretMissing, match="must be https"):
        secrets.notification_secret("NOTIFY-URL-BAD", "url")
    with pytest.raises(NotificationSecretMissing, match="no notification URL is available"):
        secrets.notification_secret("NOTIFY-URL-GONE", "url")
    with pytest.raises(NotificationSecretMissing, match="no notification URL is available"):
        secrets.notification_secret("SENDGRID-KEY-X", "url")
    with pytest.raises(InputError, match="cannot be the name of a Key Vault secret"):
        secrets.notification_secret("NOTIFY_URL_OPS", "url")
    assert "SENDGRID-KEY-X" not in vault.calls and "NOTIFY_URL_OPS" not in vault.calls
    assert secrets.get("SENDGRID-KEY-X") == "SG.key"  # API keys as before


def test_saving_a_destination_needs_its_targets_secrets() -> None:
    settings = {"SENDGRID_KEY_FLOW": "SG.key", "NOTIFY_URL_OPS": "https://hooks.example.com/x"}
    svc = Services(
        storage=None,  # type: ignore[arg-type]  # refused before anything is stored
        ledger=MemoryRunLedger(),
        destinations=MemoryDestinationStore(),
        secrets=EnvSecretProvider(settings),
        clients=lambda key: None,  # type: ignore[arg-type,return-value]
    )
    document = destination().model_dump(mode="json") | {"list_name": "x", "list_id": None}
    with pytest.raises(InputError) as caught:
        save_destination(svc, parse(DestinationRequest, document))
    assert str(caught.value) == (
        "invalid destination: notifications: target 'ops': no notification signing secret is "
        f"available under the name 'NOTIFY_SIGNING_OPS': {NOTIFY_NAME_RULE}"
    )
    assert list(svc.destinations.all()) == []


def test_the_cli_adds_replaces_and_drops_targets_by_name() -> None:
    args = build_parser().parse_args(
        [
            "destinations",
            "update",
            "marketing",
            "--notify",
            "ops=slack:run_failed",
            "--notify",
            "new=teams",
            "--no-notify",
            "old",
        ]
    )
    given = [
        {"name": "ops", "kind": "webhook", "url_secret": "NOTIFY_URL_OPS"},
        {"name": "old", "kind": "slack"},
        {"name": "kept", "kind": "teams"},
    ]
    assert cli_targets(given, args) == [
        {"name": "kept", "kind": "teams"},
        {"name": "ops", "kind": "slack", "events": ["run_failed"]},
        {"name": "new", "kind": "teams"},
    ]
