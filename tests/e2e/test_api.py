"""End to end: the HTTP API over real HTTP against the local Functions host, Azurite and the
SendGrid sandbox (which accepts one API key only, so a wrong key is refused as SendGrid would,
and any other value sent as a bearer token shows as a 401 in its request counts).

One stack serves the module; each test uses its own destinations and segments.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin import removal as admin_removal
from exporter.admin.errors import RemovalIncomplete
from exporter.flow.services import Services
from exporter.local.stack import Stack
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from exporter.model.versions import SnapshotVersion
from exporter.ports.secrets import key_unavailable
from exporter.ports.sendgrid import Unauthorized
from exporter.wiring import services_from_env
from tests.support.azurite import eventually
from tests.support.stack import drop_seen

pytestmark = pytest.mark.e2e

KEY = "SG.e2e-api-key"
FUNCTION_KEY = "e2e-api-function-key"
SECRET = "SENDGRID_KEY_API"


@dataclass
class Api:
    stack: Stack
    base: str
    svc: Services
    storage: Storage
    client: SendGridClient
    tmp: Path

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        key: str | None = FUNCTION_KEY,
        raw: bytes | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        url = self.base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["x-functions-key"] = key
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        assert KEY not in text, "an API key in an answer"
        return status, json.loads(text) if text else None

    def put(self, name: str, **values: Any) -> tuple[int, Any]:
        body = {
            "display_name": name,
            "api_key_secret": SECRET,
            "segments": [name],
            "consent": {"accepted_by": "dpo@company.example"},
        } | values
        return self.call("PUT", f"/destinations/{name}", {k: v for k, v in body.items() if v})

    def drop(
        self, segment: str, name: str, people: range = range(0), rows: list[str] | None = None
    ) -> SnapshotVersion:
        """A snapshot the blob trigger has seen already (before its destination existed), so
        only on-demand exports take it."""
        rows = rows or [f"user{i}@example.com,Name{i}" for i in people]
        return drop_seen(self.storage, self.tmp, segment, name, rows)

    def wait(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, run = self.call("GET", f"/runs/{run_id}")
            assert status == 200, run
            if run["progress"]["final"]:
                return dict(run)
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} did not end")

    def export(self, name: str, **body: Any) -> list[str]:
        status, answer = self.call("POST", f"/destinations/{name}/exports", body)
        assert status == 202, answer
        return [r["run_id"] for r in answer["runs"]]

    def members(self, list_id: str) -> set[str]:
        url = f"{self.stack.sandbox_url}/__sandbox/lists/{list_id}/contacts"
        with urllib.request.urlopen(url, timeout=30) as answer:
            return {m["email"] for m in json.load(answer)}

    def faults(self, **values: float) -> None:
        request = urllib.request.Request(
            f"{self.stack.sandbox_url}/__sandbox/faults",
            data=json.dumps(values).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).close()

    def blobs(self, prefix: str) -> list[str]:
        return [b.name for b in self.storage.app.list_blobs(name_starts_with=prefix)]

    def refused_tokens(self) -> int:
        """Requests the sandbox answered 401: it accepts KEY only, so this counts every request
        that carried any other bearer token (or none)."""
        url = f"{self.stack.sandbox_url}/__sandbox/requests"
        with urllib.request.urlopen(url, timeout=30) as answer:
            counts: dict[str, int] = json.load(answer)
        return sum(n for k, n in counts.items() if k.endswith(" 401"))

    def store_document(self, name: str, **values: Any) -> None:
        """A destination document written straight into storage, past the API's checks."""
        document = {
            "name": name,
            "display_name": name,
            "list_id": "7d3f9a2e-1111-4222-8333-444455556666",
            "api_key_secret": SECRET,
            "segments": [name],
            "consent": {"accepted_by": "dpo", "accepted_at": "2026-11-01T09:00:00Z"},
        } | values
        self.storage.app.upload_blob(
            f"destinations/{name}.json", json.dumps(document).encode(), overwrite=True
        )

    def leftover_run(self, destination: str, segment: str, n: int) -> str:
        """An unfinished run in the ledger, its request never delivered (as a removal that
        stopped half way may leave one)."""
        run_id = f"20260101T0000{n:02d}-{hashlib.sha256(destination.encode()).hexdigest()[:12]}"
        self.svc.ledger.create_run(
            RunRecord(run_id, destination, segment, f"{segment}/x.csv", '"0x1"', "api")
        )
        return run_id


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api")
    settings = {
        SECRET: KEY,
        "SENDGRID_KEY_WRONG": "SG.not-the-key",
        "SENDGRID_KEY_NOT_A_KEY": "DefaultEndpointsProtocol=http;AccountName=notakey",
        "LOCAL_FUNCTION_KEY": FUNCTION_KEY,
        "MAX_BATCH_CONTACTS": "20",
    }
    sandbox_args = ["--api-key", KEY, "--job-delay", "0.1"]
    with Stack(tmp / "stack", settings=settings, sandbox_args=sandbox_args) as stack:
        assert stack.host is not None
        found = re.search(r"HTTP on (\S+)", stack.host.match.string)
        assert found, stack.host.match.string
        yield Api(
            stack,
            found.group(1) + "/api",
            services_from_env(stack.settings),
            Storage.from_env(stack.settings),
            SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url)),
            tmp,
        )
        log = stack.host.output()
    # Nothing the API did put a key or a plain address into the host's log.
    assert "exporter.admin.commands" in log
    for secret in (KEY, "SG.not-the-key", FUNCTION_KEY):
        assert secret not in log
    assert not re.search(r"[\w.+-]+@(company|example)\.", log.replace("***@", "")), log


@pytest.fixture(autouse=True)
def calm_sandbox(api: Api) -> Iterator[None]:
    yield
    api.faults(latency_ms=0, contact_error_rate=0)


ENDPOINTS = [
    ("GET", "/destinations"),
    ("GET", "/destinations/any"),
    ("PUT", "/destinations/any"),
    ("DELETE", "/destinations/any"),
    ("POST", "/destinations/any/test"),
    ("POST", "/destinations/any/exports"),
    ("GET", "/runs"),
    ("GET", "/runs/any"),
    ("GET", "/snapshots"),
    ("GET", "/snapshots/any/x.csv"),
    ("DELETE", "/snapshots/any/x.csv"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_calls_without_the_function_key(
    api: Api, method: str, path: str
) -> None:
    assert api.call(method, path, {}, key=None)[0] == 401
    assert api.call(method, path, {}, key="not-the-key")[0] == 401
    # With the key, the same call reaches the function (which answers for itself).
    assert api.call(method, path, {})[0] != 401


def test_the_key_may_also_come_as_the_code_query_parameter(api: Api) -> None:
    status, body = api.call("GET", "/destinations", key=None, query={"code": FUNCTION_KEY})
    assert status == 200 and "destinations" in body


def test_put_creates_with_a_list_name_then_updates_keeping_the_consent(api: Api) -> None:
    status, body = api.put("api-create", list_name="API create list")
    assert status == 201, body
    assert (body["created"], body["list_created"]) == (True, True)
    created = body["destination"]
    found = api.client.find_list("API create list")
    assert found is not None and created["list_id"] == found.id
    assert created["consent"]["accepted_by"] == "dpo@company.example"
    accepted_at = datetime.fromisoformat(created["consent"]["accepted_at"])
    assert abs((datetime.now(UTC) - accepted_at).total_seconds()) < 60

    # The same list name again finds the list; no consent in the body keeps the recorded one.
    status, body = api.put(
        "api-create", list_name="API create list", display_name="New", consent={}
    )
    assert status == 200, body
    assert (body["created"], body["list_created"]) == (False, False)
    assert body["destination"]["list_id"] == found.id
    assert body["destination"]["display_name"] == "New"
    assert body["destination"]["consent"] == created["consent"]

    status, shown = api.call("GET", "/destinations/api-create")
    assert status == 200 and shown == body["destination"]
    assert shown["api_key_secret"] == SECRET  # the reference; the key never leaves (see call)
    status, listed = api.call("GET", "/destinations")
    assert status == 200 and shown in listed["destinations"]


def test_put_with_a_list_id_and_an_explicit_consent_time(api: Api) -> None:
    list_id = api.client.create_list("API by id").id
    when = "2026-11-01T09:00:00+00:00"
    status, body = api.put(
        "api-by-id", list_id=list_id, consent={"accepted_by": "legal", "accepted_at": when}
    )
    assert status == 201, body
    assert body["list_created"] is False
    assert body["destination"]["list_id"] == list_id
    assert datetime.fromisoformat(body["destination"]["consent"]["accepted_at"]) == (
        datetime.fromisoformat(when)
    )


BAD_PUTS: list[tuple[str, dict[str, Any], str]] = [
    ("no-consent", {"list_name": "x", "consent": None}, "consent is required"),
    (
        "both-lists",
        {"list_name": "x", "list_id": "7d3f9a2e-1111-4222-8333-444455556666"},
        "not both",
    ),
    ("no-list", {}, "list_id or list_name is required"),
    ("bad-list-id", {"list_id": "nope"}, "list_id: must be a SendGrid list id"),
    ("key-not-ref", {"list_name": "x", "api_key_secret": "SG.abc"}, "never the key itself"),
    ("unknown-field", {"list_name": "x", "colour": "red"}, "colour: Extra inputs"),
    (
        "bad-mapping",
        {"list_name": "x", "mapping": {"bogus": "X"}},
        "mapping: unknown SendGrid field 'bogus'",
    ),
    ("no-segments", {"list_name": "x", "segments": []}, "segments"),
    (
        "future-consent",
        {"list_name": "x", "consent": {"accepted_by": "a", "accepted_at": "2099-01-01T00:00:00Z"}},
        "in the future",
    ),
    (
        "missing-secret",
        {"list_name": "x", "api_key_secret": "NOT_SET_ANYWHERE"},
        "api_key_secret: no SendGrid key is available under the name 'NOT_SET_ANYWHERE'",
    ),
    (
        "unset-secret",
        {"list_name": "x", "api_key_secret": "SENDGRID_KEY_NOT_SET"},
        "api_key_secret: no SendGrid key is available under the name 'SENDGRID_KEY_NOT_SET'",
    ),
    *[
        (f"segment-{i}", {"list_name": "x", "segments": [bad]}, "segments: invalid segment name")
        for i, bad in enumerate(["..", "a#b", "a?b", "a\\b", "a/b", "x" * 5000])
    ],
    (
        "many-fields",
        {"list_name": "x", "mapping": {f"custom:f{i}": "C" for i in range(601)}},
        "mapping: at most 600 entries (601 given)",
    ),
    ("string-bool", {"list_name": "x", "create_missing_fields": "yes"}, "create_missing_fields"),
    ("string-int", {"list_name": "x", "profile_cap": "10"}, "profile_cap: Input should be"),
]


@pytest.mark.parametrize(("case", "values", "words"), BAD_PUTS, ids=[c[0] for c in BAD_PUTS])
def test_put_refuses_invalid_input_with_400_and_saves_nothing(
    api: Api, case: str, values: dict[str, Any], words: str
) -> None:
    name = f"api-bad-{case}"
    status, body = api.put(name, **values)
    assert status == 400, body
    assert words in body["error"], body
    assert api.call("GET", f"/destinations/{name}")[0] == 404
    assert api.client.find_list("x") is None  # nothing was created in SendGrid either


def test_put_refuses_bodies_that_do_not_parse_or_disagree_with_the_url(api: Api) -> None:
    status, body = api.call("PUT", "/destinations/api-raw", raw=b"{not json")
    assert status == 400 and "invalid request" in body["error"]
    status, body = api.call("PUT", "/destinations/api-raw", {"name": "other", "list_name": "x"})
    assert status == 400 and "'other'" in body["error"] and "'api-raw'" in body["error"]
    status, body = api.call("PUT", "/destinations/Bad_Name", {"list_name": "x"})
    assert status == 400 and "invalid destination name" in body["error"]


def test_put_answers_502_when_sendgrid_refuses_the_list_or_the_key(api: Api) -> None:
    status, body = api.put("api-no-list", list_id="7d3f9a2e-1111-4222-8333-444455556666")
    assert status == 502, body
    assert "SendGrid has no list 7d3f9a2e-1111-4222-8333-444455556666" in body["error"]
    status, body = api.put("api-wrong-key", list_name="y", api_key_secret="SENDGRID_KEY_WRONG")
    assert status == 502, body
    assert "refused the API key" in body["error"]
    for name in ("api-no-list", "api-wrong-key"):
        assert api.call("GET", f"/destinations/{name}")[0] == 404


def test_unknown_destinations_and_runs_are_404(api: Api) -> None:
    for method, path in [
        ("GET", "/destinations/nobody"),
        ("DELETE", "/destinations/nobody"),
        ("POST", "/destinations/nobody/test"),
        ("POST", "/destinations/nobody/exports"),
        ("GET", "/runs/20260101T000000-000000000000"),
    ]:
        status, body = api.call(method, path, {})
        assert status == 404, (path, body)
        assert "nobody" in body["error"] or "20260101T000000" in body["error"]


def test_test_checks_the_key_the_list_and_each_custom_field(api: Api) -> None:
    # Saving refuses a custom field SendGrid lacks at once, naming it and the way out.
    status, body = api.put("api-test", list_name="API test", mapping={"custom:tier": "Tier"})
    assert status == 400, body
    assert "custom field(s) 'tier' do not exist in SendGrid" in body["error"]
    assert '"create_missing_fields": true' in body["error"]
    assert api.call("GET", "/destinations/api-test")[0] == 404
    # Saved without it; then the mapping names it (as if the field was deleted in SendGrid
    # since): the test names it.
    assert api.put("api-test", list_name="API test")[0] == 201
    stored = api.svc.destinations.get("api-test")
    assert stored is not None
    api.svc.destinations.put(stored.model_copy(update={"mapping": {"custom:tier": "Tier"}}))
    status, report = api.call("POST", "/destinations/api-test/test")
    assert status == 502, report
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert checks["api_key"]["ok"] and checks["list"]["ok"]
    assert "'API test'" in checks["list"]["detail"]
    assert not checks["custom_fields"]["ok"] and "'tier'" in checks["custom_fields"]["detail"]

    tier = api.client.create_field("tier", "Text")
    status, report = api.call("POST", "/destinations/api-test/test")
    assert status == 200 and report["ok"] is True, report
    assert (
        f"tier -> {tier.id}" in {c["name"]: c for c in report["checks"]}["custom_fields"]["detail"]
    )


def test_test_creates_nothing_even_when_the_next_export_may(api: Api) -> None:
    status, body = api.put(
        "api-test-create",
        list_name="API test create",
        mapping={"custom:loyalty:Number": "Loyalty"},
        create_missing_fields=True,
    )
    assert status == 201, body  # and the field is created now, by the save
    found = {f.name: f.field_type for f in api.client.field_definitions().custom.values()}
    assert found["loyalty"] == "Number"
    # A field the mapping names that SendGrid lacks (deleted there since, say): the next export
    # creates it, the test does not.
    stored = api.svc.destinations.get("api-test-create")
    assert stored is not None
    api.svc.destinations.put(stored.model_copy(update={"mapping": {"custom:points": "Points"}}))
    status, report = api.call("POST", "/destinations/api-test-create/test")
    assert status == 200 and report["ok"] is True, report
    detail = {c["name"]: c for c in report["checks"]}["custom_fields"]["detail"]
    assert detail == "created by the next export: points (Text)"
    assert "points" not in api.client.field_definitions().custom


def test_test_reports_a_refused_key(api: Api) -> None:
    list_id = api.client.create_list("API refused key").id
    api.svc.destinations.put(  # as if the key behind the reference had been revoked
        Destination(
            name="api-revoked",
            display_name="revoked",
            list_id=list_id,
            api_key_secret="SENDGRID_KEY_WRONG",
            segments=["api-revoked"],
            consent=Consent(accepted_by="dpo", accepted_at=datetime.now(UTC)),
        )
    )
    status, report = api.call("POST", "/destinations/api-revoked/test")
    assert status == 502
    checks = {c["name"]: c for c in report["checks"]}
    assert not checks["api_key"]["ok"] and "refused the API key" in checks["api_key"]["detail"]
    assert checks["list"]["detail"] == "not checked: the key did not work"


def test_export_on_demand_latest_or_named_snapshot_and_full_refresh(api: Api) -> None:
    older = api.drop("api-exp", "001.csv", range(30))
    newer = api.drop("api-exp", "002.csv", range(10, 50))
    status, body = api.put("api-exp", list_name="API exp", segments=["api-exp", "api-exp-empty"])
    assert status == 201, body
    list_id = body["destination"]["list_id"]

    status, answer = api.call("POST", "/destinations/api-exp/exports", {"snapshot": older.name})
    assert status == 202, answer
    (started,) = answer["runs"]
    assert (started["snapshot"], started["segment"]) == (older.name, "api-exp")
    assert started["url"] == f"/api/runs/{started['run_id']}"
    run = api.wait(started["run_id"])
    assert (run["state"], run["trigger"], run["sent"]) == ("succeeded", "api", 30), run
    assert api.members(list_id) == {f"user{i}@example.com" for i in range(30)}

    status, answer = api.call("POST", "/destinations/api-exp/exports", {})
    assert status == 202
    assert answer["without_snapshot"] == ["api-exp-empty"]
    (started,) = answer["runs"]
    assert started["snapshot"] == newer.name  # the latest one
    run = api.wait(started["run_id"])
    assert (run["state"], run["sent"], run["unchanged"]) == ("succeeded", 20, 20), run

    (run_id,) = api.export("api-exp")  # nothing changed: nothing sent
    run = api.wait(run_id)
    assert (run["sent"], run["unchanged"], run["full_refresh"]) == (0, 40, False)
    (run_id,) = api.export("api-exp", full_refresh=True)  # everything sent again
    run = api.wait(run_id)
    assert (run["state"], run["sent"], run["full_refresh"]) == ("succeeded", 40, True), run


def test_allow_mass_removal_lets_a_shrunken_segment_through(api: Api) -> None:
    first = api.drop("api-mass", "001.csv", range(50))
    shrunk = api.drop("api-mass", "002.csv", range(5))
    status, body = api.put("api-mass", list_name="API mass", sync_mode="mirror")
    assert status == 201, body
    list_id = body["destination"]["list_id"]
    (run_id,) = api.export("api-mass", snapshot=first.name)
    assert api.wait(run_id)["state"] == "succeeded"

    (run_id,) = api.export("api-mass", snapshot=shrunk.name)
    run = api.wait(run_id)
    assert run["state"] == "failed" and "allowing mass removal" in run["error"]
    assert len(api.members(list_id)) == 50

    (run_id,) = api.export("api-mass", snapshot=shrunk.name, allow_mass_removal=True)
    run = api.wait(run_id)
    assert (run["state"], run["removed"]) == ("succeeded", 45), run
    assert api.members(list_id) == {f"user{i}@example.com" for i in range(5)}


def test_export_refuses_what_it_cannot_do(api: Api) -> None:
    api.drop("api-refuse", "001.csv", range(3))
    api.drop("api-other", "001.csv", range(3))
    assert api.put("api-refuse", list_name="API refuse")[0] == 201
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"snapshot": "api-other/001.csv"}, 400, "does not select"),
        ({"snapshot": "api-refuse/nothing.csv"}, 404, "no snapshot segments/api-refuse/nothing"),
        ({"snapshot": "api-refuse"}, 400, "<segment>/<file>"),
        ({"full_refresh": "maybe"}, 400, "full_refresh"),
        ({"full_refresh": "yes"}, 400, "full_refresh: Input should be a valid boolean"),
        ({"verify": 1}, 400, "verify: Input should be a valid boolean"),
        ({"snapshot": "a#b/001.csv"}, 400, "its segment is not a segment name"),
        ({"force": True}, 400, "force: Extra inputs"),
    ]
    for body, status, words in cases:
        got, answer = api.call("POST", "/destinations/api-refuse/exports", body)
        assert (got, words in answer["error"]) == (status, True), (body, answer)
    assert api.svc.ledger.runs("api-refuse") == []

    list_id = api.client.create_list("API unconsented").id
    api.svc.destinations.put(  # written by hand, without consent
        Destination(
            name="api-refuse-nc",
            display_name="nc",
            list_id=list_id,
            api_key_secret=SECRET,
            segments=["api-refuse"],
        )
    )
    status, answer = api.call("POST", "/destinations/api-refuse-nc/exports", {})
    assert status == 409 and "no data-privacy consent" in answer["error"]
    assert api.svc.ledger.runs("api-refuse-nc") == []


def test_runs_list_filters_and_run_details(api: Api) -> None:
    rows = [
        (f"user{i}@example.com" if i % 10 else f"broken{i}@@example.com") + f",N{i}"
        for i in range(25)
    ]
    api.drop("api-runs", "001.csv", rows=rows)
    assert api.put("api-runs", list_name="API runs")[0] == 201
    api.faults(contact_error_rate=0.5)
    (run_id,) = api.export("api-runs")
    run = api.wait(run_id)
    api.faults(contact_error_rate=0)
    assert run["state"] == "succeeded_with_errors", run
    assert run["rejected"] == 3 and run["reasons"] == {"invalid_email": 3}
    rejects = run["rejects"]
    assert [s["row"] for s in rejects["samples"]["invalid_email"]] == [1, 11, 21]
    report = rejects["report"]
    assert report["container"] == "exporter"
    assert report["blob"] == f"runs/{run_id}/rejects.csv"
    assert report["url"].endswith(f"/exporter/runs/{run_id}/rejects.csv")
    text = api.storage.app.download_blob(report["blob"]).readall().decode()
    assert "broken" not in text and "example.com" not in text  # no row values
    assert len(list(csv.DictReader(text.splitlines()))) == 3
    assert run["errored"] > 0
    job_errors = run["sendgrid_job_errors"]
    assert sum(e["errored"] for e in job_errors) == run["errored"]
    assert all("/import-errors/" in e["errors_url"] for e in job_errors)
    assert run["progress"]["read"] == 25 and run["progress"]["planned"] == run["batches"]
    assert run["progress"]["confirmed"] == run["batches"]

    status, listed = api.call("GET", "/runs", query={"destination": "api-runs"})
    assert status == 200 and [r["run_id"] for r in listed["runs"]] == [run_id]
    status, listed = api.call(
        "GET", "/runs", query={"destination": "api-runs", "state": "succeeded"}
    )
    assert status == 200 and listed["runs"] == []
    status, listed = api.call("GET", "/runs", query={"limit": "1"})
    assert status == 200 and len(listed["runs"]) == 1
    for query, words in [
        ({"state": "bogus"}, "state must be one of"),
        ({"limit": "0"}, "limit must be"),
        ({"limit": "ten"}, "limit must be"),
    ]:
        status, answer = api.call("GET", "/runs", query=query)
        assert status == 400 and words in answer["error"], answer


def test_snapshots_list_show_and_remove(api: Api) -> None:
    first = api.drop("api-snap", "001.csv", range(3))
    second = api.drop("api-snap", "002.csv", range(4))
    status, listed = api.call("GET", "/snapshots", query={"segment": "api-snap"})
    assert status == 200, listed
    assert [(s["name"], s["newest"]) for s in listed["snapshots"]] == [
        (second.name, True),
        (first.name, False),
    ]
    assert listed["snapshots"][0] | {"last_modified": None} == {
        "name": second.name,
        "segment": "api-snap",
        "size": second.size,
        "etag": second.etag,
        "last_modified": None,
        "format": "csv",
        "compressed": False,
        "newest": True,
    }
    status, everything = api.call("GET", "/snapshots")
    assert status == 200 and {first.name, second.name} <= {
        s["name"] for s in everything["snapshots"]
    }

    status, shown = api.call("GET", f"/snapshots/{first.name}")
    assert status == 200, shown
    assert (shown["etag"], shown["newest"], shown["destinations"]) == (first.etag, False, [])
    assert shown["content"]["readable"] is True and shown["content"]["columns_total"] == 2
    assert shown["runs"] == [] and shown["runs_total"] == 0

    status, answer = api.call("DELETE", f"/snapshots/{second.name}", query={"etag": first.etag})
    assert status == 409 and "nothing was removed" in answer["error"], answer
    status, removed = api.call("DELETE", f"/snapshots/segments/{second.name}")
    assert status == 200, removed
    assert removed == {
        "removed": second.name,
        "etag": second.etag,
        "skipped_runs": [],
        "newest": first.name,
    }
    assert api.storage.snapshot_version(second.name) is None
    for method in ("GET", "DELETE"):
        status, answer = api.call(method, f"/snapshots/{second.name}")
        assert status == 404 and answer["error"] == f"no snapshot segments/{second.name}"
    status, answer = api.call("GET", "/snapshots", query={"segment": "../exporter"})
    assert status == 400 and "segment name" in answer["error"]


SNAPSHOT_ESCAPES = [
    "..%2Fexporter%2Fdestinations%2Fapi-snap-x.json",
    "%2e%2e/exporter/destinations/api-snap-x.json",
    "api-snap/%252e%252e/%252e%252e/exporter/destinations/api-snap-x.json",
    "api-snap%5C..%5C..%5Cexporter%5Cdestinations%5Capi-snap-x.json",
    "api-snap/folder/part.csv",
    "api-snap/model.json",
]


@pytest.mark.parametrize("name", SNAPSHOT_ESCAPES)
def test_snapshot_names_cannot_leave_the_segments_container(api: Api, name: str) -> None:
    api.store_document("api-snap-x")
    for method in ("GET", "DELETE"):
        status, answer = api.call(method, f"/snapshots/{name}")
        assert status == 400, (method, name, answer)
    assert api.blobs("destinations/api-snap-x.json") == ["destinations/api-snap-x.json"]
    status, answer = api.call("DELETE", "/snapshots")
    assert status in (400, 404, 405), answer


def test_removing_stops_queued_batches_at_once_and_forgets_the_synced_state(api: Api) -> None:
    first = api.drop("api-gone", "001.csv", range(40))
    big = api.drop("api-gone", "002.csv", range(400))  # 20 batches of 20
    status, body = api.put("api-gone", list_name="API gone")
    assert status == 201, body
    (done_id,) = api.export("api-gone", snapshot=first.name)
    assert api.wait(done_id)["state"] == "succeeded"
    assert api.blobs("state/api-gone/"), "a committed synced state"

    api.faults(latency_ms=2000)  # every SendGrid call takes 2 s: most batches stay queued
    (run_id,) = api.export("api-gone", snapshot=big.name)
    deadline = time.monotonic() + 60
    while api.call("GET", f"/runs/{run_id}")[1]["state"] != "sending":
        assert time.monotonic() < deadline, "the run never started sending"
        time.sleep(0.2)
    status, removal = api.call("DELETE", "/destinations/api-gone")
    assert status == 200, removal
    assert removal["stopped_runs"] == [run_id]
    assert removal["state_blobs_deleted"] >= 2

    # Ended at once: no waiting for the queued messages to come round.
    status, run = api.call("GET", f"/runs/{run_id}")
    assert run["state"] == "failed", run
    assert "the destination was removed" in run["error"]
    failed = run["failed_batches"]
    assert any(b["error"] == "the destination was removed: the batch was not sent" for b in failed)
    assert api.blobs("state/api-gone/") == []
    assert api.blobs(f"runs/{run_id}/batches/") == []
    assert api.call("GET", "/destinations/api-gone")[0] == 404
    assert api.call("POST", "/destinations/api-gone/exports", {})[0] == 404

    # Batches that were in flight settle without reviving the run; none is left queued.
    api.faults(latency_ms=0)
    time.sleep(5)
    run = api.wait(run_id)
    assert run["state"] == "failed"
    batches = api.svc.ledger.batches(run_id)
    assert batches and all(b.settled for b in batches)
    assert sum(b.state == "failed" for b in batches) >= 10

    # The run history stays.
    status, listed = api.call("GET", "/runs", query={"destination": "api-gone"})
    assert {r["run_id"] for r in listed["runs"]} == {done_id, run_id}
    assert api.call("GET", f"/runs/{done_id}")[1]["state"] == "succeeded"

    # Added again, it has no synced state: the next export sends everyone.
    assert api.put("api-gone", list_name="API gone")[0] == 201
    (again,) = api.export("api-gone", snapshot=first.name)
    run = api.wait(again)
    assert (run["state"], run["sent"], run["unchanged"]) == ("succeeded", 40, 0), run


# --- only SendGrid keys reach SendGrid; bounded bodies; removals that finish ------------------

OTHER_SETTINGS = [
    "AzureWebJobsStorage",
    "LOCAL_FUNCTION_KEY",
    "PATH",
    "FUNCTIONS_WORKER_RUNTIME",
    "SENDGRID_API_BASE_URL",
]


def test_no_other_setting_can_be_sent_to_sendgrid_as_the_key(api: Api) -> None:
    """A function-key holder names the storage connection string, the function key and other
    settings as a destination's key: refused with the answer an unset name gets, and no value
    but the SendGrid key ever reaches SendGrid (the sandbox takes KEY only: anything else
    would be a 401)."""
    refused_before = api.refused_tokens()
    # The counter works: a request with another token is one more 401.
    with pytest.raises(Unauthorized):
        list(SendGridClient("SG.other", SendGridSettings(base_url=api.stack.sandbox_url)).lists())
    assert api.refused_tokens() == refused_before + 1

    status, unset = api.put("api-steal", list_name="API steal", api_key_secret="SENDGRID_KEY_NOPE")
    assert status == 400, unset
    for name in OTHER_SETTINGS:
        status, body = api.put("api-steal", list_name="API steal", api_key_secret=name)
        assert status == 400, (name, body)
        # Word for word what a name with nothing stored under it gets.
        assert body["error"] == unset["error"].replace("'SENDGRID_KEY_NOPE'", repr(name))
        assert body["error"] == f"invalid destination: api_key_secret: {key_unavailable(name)}"
    # A key's name holding something else: refused, and not sent either.
    status, body = api.put(
        "api-steal", list_name="API steal", api_key_secret="SENDGRID_KEY_NOT_A_KEY"
    )
    assert status == 400 and "does not hold a SendGrid API key" in body["error"], body
    assert "AccountName" not in body["error"]
    assert api.call("GET", "/destinations/api-steal")[0] == 404
    assert api.client.find_list("API steal") is None

    # A document written past the API (by hand, or before the rule): its key test and its
    # runs fail with the same words; nothing is sent.
    list_id = api.client.create_list("API steal stored").id
    api.store_document("api-steal-doc", list_id=list_id, api_key_secret="AzureWebJobsStorage")
    status, report = api.call("POST", "/destinations/api-steal-doc/test")
    assert status == 502, report
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["api_key"]["detail"] == str(key_unavailable("AzureWebJobsStorage"))
    api.drop("api-steal-doc", "001.csv", range(5))
    (run_id,) = api.export("api-steal-doc")
    run = api.wait(run_id)
    assert run["state"] == "failed", run
    assert str(key_unavailable("AzureWebJobsStorage")) in run["error"]
    assert api.members(list_id) == set()

    assert api.refused_tokens() == refused_before + 1  # only the counter's own check
    assert api.call("DELETE", "/destinations/api-steal-doc")[0] == 200


def test_an_oversized_body_is_refused_with_413_before_it_is_parsed(api: Api) -> None:
    body = json.dumps({"list_name": "x", "display_name": "d" * (300 << 10)}).encode()
    status, answer = api.call("PUT", "/destinations/api-huge", raw=body)
    assert status == 413, answer
    assert "at most 262,144 are accepted" in answer["error"]
    status, answer = api.call("POST", "/destinations/api-huge/exports", raw=b" " * (300 << 10))
    assert status == 413, answer
    assert api.call("GET", "/destinations/api-huge")[0] == 404


def test_removing_odd_segments_stored_by_hand_answers_200_and_repeats(api: Api) -> None:
    odd = ["a#b", "x" * 5000, "..", "a?b", "a\\b", "ok"]
    api.store_document("api-odd", segments=odd)
    runs = [api.leftover_run("api-odd", segment, n) for n, segment in enumerate(odd[:3])]
    assert api.call("GET", "/destinations/api-odd")[0] == 200  # a stored one still loads

    status, removal = api.call("DELETE", "/destinations/api-odd")
    assert status == 200, removal
    assert removal["document_deleted"] is True
    assert sorted(removal["stopped_runs"]) == sorted(runs)
    for run_id in runs:
        run = api.svc.ledger.get_run(run_id)
        assert run is not None and run.state == "failed" and "removed" in run.error
    assert api.call("GET", "/destinations/api-odd")[0] == 404

    # Again: nothing left to do, done all the same.
    status, again = api.call("DELETE", "/destinations/api-odd")
    assert status == 200, again
    assert (again["document_deleted"], again["stopped_runs"]) == (False, [])


def test_a_removal_that_failed_half_way_is_finished_by_removing_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = api.drop("api-half", "001.csv", range(12))
    status, body = api.put("api-half", list_name="API half")
    assert status == 201, body
    (done,) = api.export("api-half", snapshot=first.name)
    assert api.wait(done)["state"] == "succeeded"
    assert api.blobs("state/api-half/")
    # The run reads `succeeded` a moment before its wrap-up moves the slot's mark: wait for it.
    eventually(
        lambda: (
            api.svc.ledger.get_slot("api-half", "api-half").synced_snapshot == first.name or None
        )
    )
    leftover = api.leftover_run("api-half", "api-half", 1)

    # Storage fails right after the document went: the removal stops, saying so.
    def broken(*args: object) -> str:
        raise ServiceRequestError("connection reset by peer")

    monkeypatch.setattr(admin_removal, "_stop", broken)
    with pytest.raises(RemovalIncomplete, match="stopping its unfinished runs") as raised:
        admin_removal.remove_destination(api.svc, "api-half")
    assert "remove it again to finish" in str(raised.value)
    monkeypatch.undo()
    assert api.call("GET", "/destinations/api-half")[0] == 404  # the workers refuse it now
    assert api.blobs("state/api-half/")  # the rest is left
    run = api.svc.ledger.get_run(leftover)
    assert run is not None and run.state == "queued"

    # The same removal again, through the API, finishes it from the ledger.
    status, removal = api.call("DELETE", "/destinations/api-half")
    assert status == 200, removal
    assert removal["document_deleted"] is False
    assert removal["stopped_runs"] == [leftover]
    assert removal["state_blobs_deleted"] >= 2
    run = api.svc.ledger.get_run(leftover)
    assert run is not None and run.state == "failed"
    assert api.blobs("state/api-half/") == []
    slot = api.svc.ledger.get_slot("api-half", "api-half")
    assert (slot.synced_snapshot, slot.synced_time) == ("", None)

    status, again = api.call("DELETE", "/destinations/api-half")
    assert status == 200, again
    assert (again["stopped_runs"], again["state_blobs_deleted"]) == ([], 0)

    # Added again, it starts from nothing: everyone is sent.
    assert api.put("api-half", list_name="API half")[0] == 201
    (again_id,) = api.export("api-half", snapshot=first.name)
    run_json = api.wait(again_id)
    assert (run_json["state"], run_json["sent"], run_json["unchanged"]) == ("succeeded", 12, 0)
