"""The SendGrid sandbox over real HTTP, as any client sees it (plain urllib, not our client).

It must reject what the official spec and SendGrid's documented limits reject, with SendGrid's
error shape; run upserts as import jobs; limit and fault requests as configured; and answer
every endpoint with bodies that validate against the spec's response schemas. Contact exports
end in gzip files served like presigned URLs; lists can be deleted; SendGrid's lag and lost
answers can be injected.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import math
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from tests.support.sandbox import SandboxError, SandboxProcess, start_sandbox

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "exporter" / "local" / "specs"
KEY = "SG.test-key"
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes
    method: str
    url: str
    sent: bytes | None

    @property
    def body(self) -> Any:
        return json.loads(self.raw)

    def errors(self) -> list[dict[str, str]]:
        errors: list[dict[str, str]] = self.body["errors"]
        return errors


def call(
    sandbox: SandboxProcess,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    raw: bytes | None = None,
    timeout: float = 30,
) -> Answer:
    """One request with urllib; HTTP errors come back as answers, not exceptions."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(sandbox.url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, content = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, content = exc.code, dict(exc.headers), exc.read()
    return Answer(status, headers, content, method, sandbox.url + path, data)


# --- response validation against the official spec --------------------------------------------


@cache
def _specs() -> dict[str, OpenAPI]:
    loaded = {}
    for prefix, name in (
        ("/v3/marketing/contacts", "tsg_mc_contacts_v3.json"),
        ("/v3/marketing/lists", "tsg_mc_lists_v3.json"),
        ("/v3/marketing/field_definitions", "tsg_mc_custom_fields_v3.json"),
    ):
        spec = json.loads((SPECS / name).read_text(encoding="utf-8"))
        spec["servers"] = [{"url": "/"}]
        loaded[prefix] = OpenAPI.from_dict(spec)
    return loaded


def assert_valid_response(answer: Answer) -> None:
    """The answer validates against the response schema of the spec that owns its path."""
    parts = urlsplit(answer.url)
    openapi = next(o for prefix, o in _specs().items() if parts.path.startswith(prefix))
    environ = EnvironBuilder(
        method=answer.method,
        base_url=f"{parts.scheme}://{parts.netloc}",
        path=parts.path,
        query_string=parts.query,
        data=answer.sent,
        content_type="application/json" if answer.sent else None,
        headers={"Authorization": f"Bearer {KEY}"},
    ).get_environ()
    response = Response(answer.raw, status=answer.status, headers=answer.headers)
    openapi.validate_response(
        WerkzeugOpenAPIRequest(Request(environ)), WerkzeugOpenAPIResponse(response)
    )


# --- helpers -----------------------------------------------------------------------------------


def make_list(sandbox: SandboxProcess, name: str = "Newsletter") -> str:
    answer = call(sandbox, "POST", "/v3/marketing/lists", {"name": name})
    assert answer.status == 201, answer.raw
    list_id: str = answer.body["id"]
    return list_id


def make_field(sandbox: SandboxProcess, name: str, field_type: str) -> str:
    answer = call(
        sandbox, "POST", "/v3/marketing/field_definitions", {"name": name, "field_type": field_type}
    )
    assert answer.status == 200, answer.raw
    field_id: str = answer.body["id"]
    return field_id


def wait_for_job(sandbox: SandboxProcess, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = call(sandbox, "GET", f"/v3/marketing/contacts/imports/{job_id}")
        assert answer.status == 200, answer.raw
        if answer.body["status"] != "pending":
            job: dict[str, Any] = answer.body
            return job
        assert time.monotonic() < deadline, f"job {job_id} still pending"
        time.sleep(0.02)


def upsert(
    sandbox: SandboxProcess, contacts: list[dict[str, Any]], list_ids: list[str] | None = None
) -> str:
    body: dict[str, Any] = {"contacts": contacts}
    if list_ids is not None:
        body["list_ids"] = list_ids
    answer = call(sandbox, "PUT", "/v3/marketing/contacts", body)
    assert answer.status == 202, answer.raw
    job_id: str = answer.body["job_id"]
    return job_id


def assert_unchanged(sandbox: SandboxProcess) -> None:
    state = sandbox.state()
    assert state["contacts"] == 0
    assert sum(state["jobs"].values()) == 0


# --- the spec's rules ----------------------------------------------------------------------------

LIST_ID = "0b3c1a4e-5d6f-4a8b-9c0d-1e2f3a4b5c6d"
ONE = {"email": "ann@example.com"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param({"list_ids": [LIST_ID]}, "contacts", "is required", id="missing-contacts"),
        pytest.param(
            {"contacts": "ann@example.com"},
            "contacts",
            "must be of type array",
            id="contacts-not-array",
        ),
        pytest.param(
            {"contacts": [{"email": "ann@example.com", "first_name": 7}]},
            "contacts[0].first_name",
            "must be of type string",
            id="first-name-not-string",
        ),
        pytest.param(
            {"contacts": [ONE], "list_ids": LIST_ID},
            "list_ids",
            "must be of type array",
            id="list-ids-not-array",
        ),
        pytest.param(
            {"contacts": [ONE], "list_ids": ["Newsletter"]},
            "list_ids[0]",
            "must be a uuid",
            id="list-id-not-uuid",
        ),
        pytest.param(
            {"contacts": [ONE, {"email": "bob@example.com", "first_name": "B" * 51}]},
            "contacts[1].first_name",
            "must be at most 50 characters",
            id="first-name-51",
        ),
        pytest.param(
            {
                "contacts": [
                    {
                        "email": "a@example.com",
                        "alternate_emails": [f"a{i}@example.com" for i in range(6)],
                    }
                ]
            },
            "contacts[0].alternate_emails",
            "must have at most 5 items",
            id="six-alternate-emails",
        ),
        pytest.param({"contacts": []}, "contacts", "must have at least 1 items", id="no-contacts"),
        pytest.param([ONE], None, "must be of type object", id="body-not-object"),
    ],
)
def test_an_upsert_the_spec_rejects_is_a_400_naming_the_field(
    sandbox: SandboxProcess, body: Any, field: str | None, message: str
) -> None:
    answer = call(sandbox, "PUT", "/v3/marketing/contacts", body)

    assert answer.status == 400
    expected = {"field": field, "message": message} if field else {"message": message}
    assert expected in answer.errors()
    assert all(e.get("field", "") is not None for e in answer.errors())
    assert_unchanged(sandbox)


def test_30001_contacts_are_one_too_many_and_30000_are_accepted(sandbox: SandboxProcess) -> None:
    contacts = [{"email": f"user{i}@example.com"} for i in range(30_001)]

    too_many = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": contacts})
    just_right = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": contacts[:30_000]})

    assert too_many.status == 400
    assert too_many.errors() == [{"field": "contacts", "message": "must have at most 30000 items"}]
    assert len(too_many.raw) < 200  # the message does not echo the contacts
    assert just_right.status == 202
    assert wait_for_job(sandbox, just_right.body["job_id"])["results"]["created_count"] == 30_000


def test_invalid_json_is_a_400(sandbox: SandboxProcess) -> None:
    answer = call(sandbox, "PUT", "/v3/marketing/contacts", raw=b'{"contacts": [')

    assert answer.status == 400
    assert answer.errors() == [{"message": "invalid JSON body"}]


def test_a_wrong_query_parameter_is_a_400(sandbox: SandboxProcess) -> None:
    answer = call(sandbox, "GET", "/v3/marketing/lists?page_size=1001")

    assert answer.status == 400
    assert answer.errors() == [{"field": "page_size", "message": "must be at most 1000"}]


def test_unknown_paths_are_404_and_wrong_methods_405(sandbox: SandboxProcess) -> None:
    unknown = call(sandbox, "GET", "/v3/marketing/nothing")
    wrong_method = call(sandbox, "PATCH", "/v3/marketing/contacts/count")

    assert unknown.status == 404
    assert wrong_method.status == 405
    assert "GET" in wrong_method.headers["Allow"]


# --- the limits the spec does not encode ----------------------------------------------------------


def test_an_upsert_over_6_mb_is_a_413(sandbox: SandboxProcess) -> None:
    body = json.dumps({"contacts": [ONE], "padding": "x" * 6_000_000}).encode()

    answer = call(sandbox, "PUT", "/v3/marketing/contacts", raw=body)

    assert answer.status == 413
    assert "6,000,000 bytes" in answer.errors()[0]["message"]
    assert_unchanged(sandbox)


def test_one_invalid_email_fails_the_whole_upsert(sandbox: SandboxProcess) -> None:
    contacts = [ONE, {"email": "bob@@example.com"}, {"email": "cy@example"}]

    answer = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": contacts})

    assert answer.status == 400
    assert answer.errors() == [
        {"field": "contacts[1].email", "message": "must be a valid email address"},
        {"field": "contacts[2].email", "message": "must be a valid email address"},
    ]
    assert_unchanged(sandbox)


def test_every_contact_needs_an_email(sandbox: SandboxProcess) -> None:
    answer = call(
        sandbox, "PUT", "/v3/marketing/contacts", {"contacts": [ONE, {"first_name": "Bob"}]}
    )

    assert answer.status == 400
    assert answer.errors() == [{"field": "contacts[1].email", "message": "is required"}]


def test_alternate_emails_must_be_valid(sandbox: SandboxProcess) -> None:
    contacts = [{"email": "ann@example.com", "alternate_emails": ["ann@work.example.com", "nope"]}]

    answer = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": contacts})

    assert answer.status == 400
    assert answer.errors() == [
        {"field": "contacts[0].alternate_emails[1]", "message": "must be a valid email address"}
    ]


def test_list_ids_must_exist(sandbox: SandboxProcess) -> None:
    known = make_list(sandbox)

    answer = call(
        sandbox, "PUT", "/v3/marketing/contacts", {"contacts": [ONE], "list_ids": [known, LIST_ID]}
    )

    assert answer.status == 400
    assert answer.errors() == [{"field": "list_ids", "message": f"list {LIST_ID} does not exist"}]


def test_custom_fields_are_keyed_by_existing_ids(sandbox: SandboxProcess) -> None:
    make_field(sandbox, "tier", "Text")
    contacts = [{"email": "ann@example.com", "custom_fields": {"e1_T": "gold", "tier": "gold"}}]

    answer = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": contacts})

    assert answer.status == 400
    assert answer.errors() == [
        {"field": "contacts[0].custom_fields.tier", "message": "is not the id of a custom field"}
    ]


def test_a_search_takes_at_most_100_emails(sandbox: SandboxProcess) -> None:
    emails = [f"user{i}@example.com" for i in range(101)]

    answer = call(sandbox, "POST", "/v3/marketing/contacts/search/emails", {"emails": emails})

    assert answer.status == 400
    assert answer.errors() == [{"field": "emails", "message": "must have at most 100 items"}]


# --- import jobs and state ---------------------------------------------------------------------


def test_an_upsert_job_goes_pending_then_completed_and_fills_the_list(
    sandbox: SandboxProcess,
) -> None:
    sandbox.faults(job_delay=0.3)
    list_id = make_list(sandbox)
    first = upsert(
        sandbox,
        [
            {"email": "Ann@Example.com", "first_name": "Ann"},
            {"email": "bob@example.com", "city": "Oslo"},
        ],
        [list_id],
    )

    pending = call(sandbox, "GET", f"/v3/marketing/contacts/imports/{first}").body
    done = wait_for_job(sandbox, first)
    second = upsert(
        sandbox,
        [
            {"email": "ANN@example.com", "last_name": "Lee"},
            {"email": "bob@example.com"},
            {"email": "cy@example.com"},
        ],
        [list_id],
    )
    again = wait_for_job(sandbox, second)

    assert pending["status"] == "pending"
    assert "finished_at" not in pending
    assert done["status"] == "completed"
    assert done["results"] == {
        "requested_count": 2,
        "created_count": 2,
        "updated_count": 0,
        "deleted_count": 0,
        "errored_count": 0,
    }
    assert again["results"]["created_count"] == 1
    assert again["results"]["updated_count"] == 2
    assert call(sandbox, "GET", f"/v3/marketing/lists/{list_id}").body["contact_count"] == 3
    assert (
        call(sandbox, "GET", f"/v3/marketing/lists/{list_id}/contacts/count").body["contact_count"]
        == 3
    )
    assert sandbox.list_members(list_id) == [
        {"email": "ann@example.com", "first_name": "Ann", "last_name": "Lee"},
        {"email": "bob@example.com", "city": "Oslo"},
        {"email": "cy@example.com"},
    ]


def test_contacts_with_bad_custom_values_are_errored_and_listed_at_errors_url(
    sandbox: SandboxProcess,
) -> None:
    orders = make_field(sandbox, "orders", "Number")
    birthday = make_field(sandbox, "birthday", "Date")
    list_id = make_list(sandbox)
    job_id = upsert(
        sandbox,
        [
            {"email": "ann@example.com", "custom_fields": {orders: 3, birthday: "1990-05-01"}},
            {"email": "bob@example.com", "custom_fields": {orders: "abc"}},
            {"email": "cy@example.com", "custom_fields": {birthday: "05/01/1990"}},
            {"email": "dee@example.com", "custom_fields": {birthday: "yesterday"}},
        ],
        [list_id],
    )

    job = wait_for_job(sandbox, job_id)
    with urllib.request.urlopen(job["results"]["errors_url"], timeout=10) as answer:
        rows = list(csv.DictReader(io.StringIO(answer.read().decode())))

    assert job["status"] == "errored"
    assert job["results"]["errored_count"] == 2
    assert job["results"]["created_count"] == 2
    assert [r["email"] for r in rows] == ["bob@example.com", "dee@example.com"]
    assert "Number" in rows[0]["error"]
    assert [m["email"] for m in sandbox.list_members(list_id)] == [
        "ann@example.com",
        "cy@example.com",
    ]
    assert sandbox.list_members(list_id)[0]["custom_fields"] == {
        "orders": 3,
        "birthday": "1990-05-01",
    }


def test_a_search_finds_primary_and_alternate_emails(sandbox: SandboxProcess) -> None:
    wait_for_job(
        sandbox,
        upsert(sandbox, [{"email": "ann@example.com", "alternate_emails": ["a@work.example.com"]}]),
    )

    answer = call(
        sandbox,
        "POST",
        "/v3/marketing/contacts/search/emails",
        {"emails": ["ANN@example.com", "a@work.example.com", "nobody@example.com"]},
    )
    none = call(
        sandbox, "POST", "/v3/marketing/contacts/search/emails", {"emails": ["nobody@example.com"]}
    )

    result = answer.body["result"]
    assert answer.status == 200
    assert result["ann@example.com"]["contact"]["email"] == "ann@example.com"
    assert (
        result["a@work.example.com"]["contact"]["id"] == result["ann@example.com"]["contact"]["id"]
    )
    assert result["nobody@example.com"] == {"error": "contact not found"}
    assert none.status == 404
    assert none.errors() == [{"message": "No contacts found"}]


def test_removing_from_a_list_keeps_the_contact_in_the_account(sandbox: SandboxProcess) -> None:
    list_id = make_list(sandbox)
    wait_for_job(sandbox, upsert(sandbox, [ONE, {"email": "bob@example.com"}], [list_id]))
    found = call(
        sandbox, "POST", "/v3/marketing/contacts/search/emails", {"emails": ["ann@example.com"]}
    )
    ann = found.body["result"]["ann@example.com"]["contact"]["id"]

    unknown_contact = call(
        sandbox,
        "DELETE",
        f"/v3/marketing/lists/{list_id}/contacts?contact_ids={ann},{uuid.uuid4()}",
    )
    unknown_list = call(
        sandbox, "DELETE", f"/v3/marketing/lists/{uuid.uuid4()}/contacts?contact_ids={ann}"
    )
    removed = call(sandbox, "DELETE", f"/v3/marketing/lists/{list_id}/contacts?contact_ids={ann}")

    assert unknown_contact.status == 404
    assert unknown_list.status == 404
    assert removed.status == 202
    assert "job_id" in removed.body
    assert [m["email"] for m in sandbox.list_members(list_id)] == ["bob@example.com"]
    assert call(sandbox, "GET", "/v3/marketing/contacts/count").body["contact_count"] == 2
    assert call(sandbox, "GET", f"/v3/marketing/contacts/{ann}").status == 200


def test_lists_are_paged_with_opaque_tokens(sandbox: SandboxProcess) -> None:
    for name in ("a", "b", "c"):
        make_list(sandbox, name)

    first = call(sandbox, "GET", "/v3/marketing/lists?page_size=2").body
    next_path = urlsplit(first["_metadata"]["next"])
    second = call(sandbox, "GET", f"{next_path.path}?{next_path.query}").body
    forged = call(sandbox, "GET", "/v3/marketing/lists?page_token=bogus")

    assert [x["name"] for x in first["result"]] == ["a", "b"]
    assert first["_metadata"]["count"] == 3
    assert [x["name"] for x in second["result"]] == ["c"]
    assert "next" not in second["_metadata"]
    assert forged.status == 400
    assert forged.errors()[0]["field"] == "page_token"


def test_duplicate_names_are_400s(sandbox: SandboxProcess) -> None:
    make_list(sandbox, "Newsletter")
    make_field(sandbox, "tier", "Text")

    same_list = call(sandbox, "POST", "/v3/marketing/lists", {"name": "Newsletter"})
    same_field = call(
        sandbox, "POST", "/v3/marketing/field_definitions", {"name": "tier", "field_type": "Text"}
    )
    reserved = call(
        sandbox,
        "POST",
        "/v3/marketing/field_definitions",
        {"name": "first_name", "field_type": "Text"},
    )

    assert (same_list.status, same_list.errors()[0]["field"]) == (400, "name")
    assert (same_field.status, same_field.errors()[0]["field"]) == (400, "name")
    assert reserved.status == 400


def test_field_ids_carry_their_type(sandbox: SandboxProcess) -> None:
    ids = [
        make_field(sandbox, name, kind)
        for name, kind in (("a", "Text"), ("b", "Number"), ("c", "Date"))
    ]

    listed = call(sandbox, "GET", "/v3/marketing/field_definitions").body

    assert ids == ["e1_T", "e2_N", "e3_D"]
    assert [f["id"] for f in listed["custom_fields"]] == ids
    reserved = {f["name"] for f in listed["reserved_fields"]}
    assert {"first_name", "email", "external_id", "anonymous_id", "phone_number_id"} <= reserved


# --- every response validates against the spec --------------------------------------------------


def test_every_endpoint_answers_what_the_spec_describes(sandbox: SandboxProcess) -> None:
    sandbox.faults(job_delay=0.3)
    answers: list[Answer] = []

    def record(method: str, path: str, body: Any = None, status: int = 200) -> Answer:
        answer = call(sandbox, method, path, body)
        assert answer.status == status, (method, path, answer.raw)
        answers.append(answer)
        return answer

    list_id = record("POST", "/v3/marketing/lists", {"name": "Newsletter"}, 201).body["id"]
    field_id = record(
        "POST", "/v3/marketing/field_definitions", {"name": "orders", "field_type": "Number"}
    ).body["id"]
    contacts = [
        {
            "email": "ann@example.com",
            "first_name": "Ann",
            "alternate_emails": ["a@work.example.com"],
        },
        {"email": "bob@example.com", "custom_fields": {field_id: 2}},
        {"email": "cy@example.com", "custom_fields": {field_id: "many"}},
    ]
    job_id = record(
        "PUT", "/v3/marketing/contacts", {"contacts": contacts, "list_ids": [list_id]}, 202
    ).body["job_id"]
    record("GET", f"/v3/marketing/contacts/imports/{job_id}")  # pending
    wait_for_job(sandbox, job_id)
    record("GET", f"/v3/marketing/contacts/imports/{job_id}")  # errored, with errors_url
    found = record(
        "POST",
        "/v3/marketing/contacts/search/emails",
        {"emails": ["ann@example.com", "zed@example.com"]},
    )
    ann = found.body["result"]["ann@example.com"]["contact"]["id"]
    record("GET", f"/v3/marketing/contacts/{ann}")
    record("GET", "/v3/marketing/contacts/count")
    record("GET", "/v3/marketing/lists?page_size=1")
    record("GET", f"/v3/marketing/lists/{list_id}")
    record("GET", f"/v3/marketing/lists/{list_id}?contact_sample=true")
    record("GET", f"/v3/marketing/lists/{list_id}/contacts/count")
    record("DELETE", f"/v3/marketing/lists/{list_id}/contacts?contact_ids={ann}", status=202)
    record("GET", "/v3/marketing/field_definitions")

    for answer in answers:
        assert_valid_response(answer)
    assert all(set(RATE_HEADERS) <= set(a.headers) for a in answers)


# --- auth and rate limits ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "  "])
def test_a_request_without_a_key_is_a_401(sandbox: SandboxProcess, key: str | None) -> None:
    answer = call(sandbox, "GET", "/v3/marketing/lists", key=key)

    assert answer.status == 401
    assert answer.errors() == [{"message": "authorization required"}]
    assert set(RATE_HEADERS) <= set(answer.headers)


@pytest.fixture(scope="module")
def keyed_sandbox() -> Iterator[SandboxProcess]:
    """A second sandbox that accepts one key only, with a seed; partly configured through the
    environment."""
    process = start_sandbox(
        "--api-key", "SG.right", "--seed", "7", env={"SANDBOX_RATE_LIMIT": "50"}
    )
    try:
        yield process
    finally:
        process.stop()


def test_only_the_configured_key_is_accepted(keyed_sandbox: SandboxProcess) -> None:
    wrong = call(keyed_sandbox, "GET", "/v3/marketing/lists", key="SG.wrong")
    right = call(keyed_sandbox, "GET", "/v3/marketing/lists", key="SG.right")

    assert wrong.status == 401
    assert wrong.errors() == [{"message": "authorization required"}]
    assert right.status == 200
    assert right.headers["X-RateLimit-Limit"] == "50"  # SANDBOX_RATE_LIMIT was read
    assert keyed_sandbox.state()["api_key_required"] is True


def test_sigterm_stops_the_sandbox_cleanly() -> None:
    process = start_sandbox()
    process.stop()
    process.stop()  # idempotent

    assert process.process.returncode == 0


def test_every_answer_carries_rate_limit_headers_and_the_window_ends_in_429(
    sandbox: SandboxProcess,
) -> None:
    sandbox.faults(rate_limit=3, rate_window=60)
    started = time.time()

    answers = [
        call(sandbox, "GET", "/v3/marketing/lists"),
        call(sandbox, "GET", "/v3/marketing/nothing"),
        call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": []}),
        call(sandbox, "GET", "/v3/marketing/lists"),
    ]
    other_key = call(sandbox, "GET", "/v3/marketing/lists", key="SG.another-key")

    assert [a.status for a in answers] == [200, 404, 400, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
    reset = int(answers[-1].headers["X-RateLimit-Reset"])
    assert started + 59 <= reset <= math.ceil(time.time() + 60)
    assert answers[-1].errors() == [{"message": "too many requests"}]
    assert other_key.status == 200  # windows are per key


def test_a_new_window_lets_requests_through_again(sandbox: SandboxProcess) -> None:
    sandbox.faults(rate_limit=1, rate_window=0.3)

    first = call(sandbox, "GET", "/v3/marketing/lists")
    over = call(sandbox, "GET", "/v3/marketing/lists")
    time.sleep(0.35)
    later = call(sandbox, "GET", "/v3/marketing/lists")

    assert [first.status, over.status, later.status] == [200, 429, 200]


# --- faults --------------------------------------------------------------------------------------


def test_injected_500s_change_nothing(sandbox: SandboxProcess) -> None:
    sandbox.faults(error_rate=1)

    answer = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": [ONE]})

    assert answer.status == 500
    assert answer.errors() == [{"message": "internal server error"}]
    assert set(RATE_HEADERS) <= set(answer.headers)
    assert_unchanged(sandbox)


def test_injected_429s_say_retry_in_a_second(sandbox: SandboxProcess) -> None:
    sandbox.faults(throttle_rate=1)
    before = time.time()

    answer = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": [ONE]})

    assert answer.status == 429
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert (
        math.ceil(before + 1)
        <= int(answer.headers["X-RateLimit-Reset"])
        <= math.ceil(time.time() + 1)
    )
    assert_unchanged(sandbox)


def test_latency_is_added_to_every_request(sandbox: SandboxProcess) -> None:
    sandbox.faults(latency_ms=300)
    started = time.perf_counter()

    answer = call(sandbox, "GET", "/v3/marketing/contacts/count")

    assert answer.status == 200
    assert time.perf_counter() - started >= 0.3


def test_a_dropped_connection_is_a_connection_error_and_the_server_keeps_serving(
    sandbox: SandboxProcess,
) -> None:
    sandbox.faults(drop_rate=1)

    # http.client's RemoteDisconnected (a ConnectionError), or a URLError wrapping one.
    with pytest.raises(OSError) as raised:
        call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": [ONE]})
    sandbox.faults(drop_rate=0)
    after = call(sandbox, "GET", "/v3/marketing/contacts/count")

    error = raised.value
    assert not isinstance(error, urllib.error.HTTPError)
    assert isinstance(error, ConnectionError) or isinstance(
        getattr(error, "reason", None), ConnectionError
    )
    assert after.status == 200
    assert_unchanged(sandbox)
    assert sandbox.requests()["PUT /v3/marketing/contacts dropped"] == 1


@pytest.mark.parametrize(
    ("faults", "status", "errored"),
    [({"contact_error_rate": 1}, "errored", 3), ({"job_fail_rate": 1}, "failed", 3)],
)
def test_job_faults_error_contacts_or_fail_the_job(
    sandbox: SandboxProcess, faults: dict[str, float], status: str, errored: int
) -> None:
    sandbox.faults(**faults)
    list_id = make_list(sandbox)

    job = wait_for_job(
        sandbox,
        upsert(sandbox, [ONE, {"email": "b@example.com"}, {"email": "c@example.com"}], [list_id]),
    )

    assert job["status"] == status
    assert job["results"]["errored_count"] == errored
    assert job["results"]["created_count"] == 0
    assert sandbox.list_members(list_id) == []


def test_a_seed_makes_faults_reproducible_and_reset_replays_them(
    keyed_sandbox: SandboxProcess,
) -> None:
    def statuses() -> list[int]:
        keyed_sandbox.reset()  # back to --seed 7 and the startup faults
        keyed_sandbox.faults(error_rate=0.5)
        return [
            call(keyed_sandbox, "GET", "/v3/marketing/contacts/count", key="SG.right").status
            for _ in range(16)
        ]

    first, second = statuses(), statuses()

    assert first == second
    assert set(first) == {200, 500}


# --- control endpoints -------------------------------------------------------------------------


def test_control_endpoints_report_and_reset(sandbox: SandboxProcess) -> None:
    list_id = make_list(sandbox)
    wait_for_job(sandbox, upsert(sandbox, [ONE], [list_id]))
    call(sandbox, "GET", "/v3/marketing/nothing")

    state = sandbox.state()
    counts = sandbox.requests()
    faults = sandbox.faults(latency_ms=5, rate_limit=10)
    sandbox.reset()

    assert state["lists"] == [{"id": list_id, "name": "Newsletter", "contact_count": 1}]
    assert state["contacts"] == 1
    assert state["jobs"] == {"pending": 0, "completed": 1, "errored": 0, "failed": 0}
    assert counts["POST /v3/marketing/lists 201"] == 1
    assert counts["PUT /v3/marketing/contacts 202"] == 1
    assert counts["GET (unknown path) 404"] == 1
    assert (faults["latency_ms"], faults["rate_limit"]) == (5, 10)
    after = sandbox.state()
    assert after["lists"] == []
    assert after["contacts"] == 0
    assert after["faults"]["latency_ms"] == 0
    assert sandbox.requests() == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/__sandbox/faults", {"error_rate": 2}, 400),
        ("POST", "/__sandbox/faults", {"nonsense": 1}, 400),
        ("POST", "/__sandbox/faults", {"rate_limit": "many"}, 400),
        ("GET", f"/__sandbox/lists/{LIST_ID}/contacts", None, 404),
        ("GET", f"/__sandbox/import-errors/{LIST_ID}", None, 404),
        ("GET", "/__sandbox/faults", None, 405),
        ("GET", "/__sandbox/nothing", None, 404),
    ],
)
def test_control_endpoints_refuse_bad_calls(
    sandbox: SandboxProcess, method: str, path: str, body: Any, status: int
) -> None:
    answer = call(sandbox, method, path, body, key=None)

    assert answer.status == status
    assert answer.errors()[0]["message"]


def test_control_endpoints_need_no_key_and_are_not_rate_limited(sandbox: SandboxProcess) -> None:
    sandbox.faults(rate_limit=1)
    call(sandbox, "GET", "/v3/marketing/lists")

    answers: list[Callable[[], Any]] = [sandbox.state, sandbox.requests, sandbox.state]
    for control in answers:
        control()  # raises on any non-2xx


def test_the_app_also_runs_in_process() -> None:
    from werkzeug.test import Client

    from exporter.local.sandbox.app import build_app
    from exporter.local.sandbox.config import SandboxConfig
    from exporter.local.sandbox.faults import Faults

    with build_app(SandboxConfig(api_key="k", faults=Faults(job_delay=0))) as app:
        client = Client(app)
        headers = {"Authorization": "Bearer k"}
        created = client.post("/v3/marketing/lists", json={"name": "L"}, headers=headers)
        list_id = created.json["id"] if created.json else ""
        accepted = client.put(
            "/v3/marketing/contacts",
            json={"contacts": [ONE], "list_ids": [list_id]},
            headers=headers,
        )
        deadline = time.monotonic() + 5
        while app.store.jobs_by_status()["completed"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

        assert (created.status_code, accepted.status_code) == (201, 202)
        assert app.store.list_members(list_id) == [ONE]


# --- contact exports -----------------------------------------------------------------------------


def start_export(sandbox: SandboxProcess, body: dict[str, Any]) -> str:
    answer = call(sandbox, "POST", "/v3/marketing/contacts/exports", body)
    assert answer.status == 202, answer.raw
    export_id: str = answer.body["id"]
    return export_id


def wait_for_export(sandbox: SandboxProcess, export_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = call(sandbox, "GET", f"/v3/marketing/contacts/exports/{export_id}")
        assert answer.status == 200, answer.raw
        if answer.body["status"] != "pending":
            export: dict[str, Any] = answer.body
            return export
        assert time.monotonic() < deadline, f"export {export_id} still pending"
        time.sleep(0.02)


def download(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET an export file URL as S3 would be asked: no API key unless `headers` say so."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(gzip.decompress(data).decode("utf-8"), newline="")))


def test_an_export_goes_pending_then_ready_with_gzip_csv_files(sandbox: SandboxProcess) -> None:
    sandbox.faults(export_delay=0.3)
    list_id = make_list(sandbox)
    tier = make_field(sandbox, "Tier", "Text")
    score = make_field(sandbox, "score", "Number")
    wait_for_job(sandbox, upsert(sandbox, [{"email": "zed@example.com"}]))  # not a member
    wait_for_job(
        sandbox,
        upsert(
            sandbox,
            [
                {
                    "email": "Ann@Example.com",
                    "first_name": "Ann, Jr",
                    "custom_fields": {tier: "gold", score: 12},
                },
                {"email": "bob@example.com", "custom_fields": {score: 2.5}},
            ],
            [list_id],
        ),
    )
    body = {"list_ids": [list_id], "file_type": "csv", "notifications": {"email": False}}

    started = call(sandbox, "POST", "/v3/marketing/contacts/exports", body)
    export_id = started.body["id"]
    pending = call(sandbox, "GET", f"/v3/marketing/contacts/exports/{export_id}")
    ready = wait_for_export(sandbox, export_id)
    listed = call(sandbox, "GET", "/v3/marketing/contacts/exports")
    status, headers, data = download(ready["urls"][0])

    assert started.status == 202
    assert started.body["_metadata"]["self"].endswith(f"/v3/marketing/contacts/exports/{export_id}")
    assert pending.body["status"] == "pending"
    assert "urls" not in pending.body
    assert ready["status"] == "ready"
    assert ready["contact_count"] == 2
    assert len(ready["urls"]) == 1
    assert {"created_at", "updated_at", "completed_at", "expires_at"} <= set(ready)
    assert [x["id"] for x in listed.body["result"]] == [export_id]
    assert listed.body["result"][0]["lists"] == [{"ID": list_id, "Name": "Newsletter"}]
    for answer in (started, pending, listed):
        assert_valid_response(answer)
    assert_valid_response(call(sandbox, "GET", f"/v3/marketing/contacts/exports/{export_id}"))
    assert status == 200
    assert headers["Content-Type"] == "application/gzip"
    assert "Content-Encoding" not in headers  # as S3 serves it: the client unpacks the gzip
    assert data[:2] == b"\x1f\x8b"
    rows = csv_rows(data)
    assert [r["EMAIL"] for r in rows] == ["ann@example.com", "bob@example.com"]
    assert (rows[0]["FIRST_NAME"], rows[0]["Tier"], rows[0]["score"]) == ("Ann, Jr", "gold", "12")
    assert (rows[1]["FIRST_NAME"], rows[1]["Tier"], rows[1]["score"]) == ("", "", "2.5")
    assert list(rows[0])[:2] == ["EMAIL", "FIRST_NAME"]
    assert list(rows[0])[-3:] == ["CONTACT_ID", "Tier", "score"]
    assert sandbox.requests()["GET /__sandbox/export-files/{id}/{n} 200"] == 1


def test_an_export_is_split_into_files_of_at_most_max_file_size_mb(
    sandbox: SandboxProcess,
) -> None:
    sandbox.faults(export_delay=0)
    list_id = make_list(sandbox)
    contacts = [
        {
            "email": f"user{i:05d}@example.com",
            "first_name": "F" * 50,
            "last_name": "L" * 50,
            "address_line_1": "A" * 100,
            "address_line_2": "B" * 100,
            "city": "C" * 60,
        }
        for i in range(4_000)
    ]
    wait_for_job(sandbox, upsert(sandbox, contacts, [list_id]))

    export = wait_for_export(
        sandbox, start_export(sandbox, {"list_ids": [list_id], "max_file_size": 1})
    )
    files = [gzip.decompress(download(url)[2]) for url in export["urls"]]

    assert export["contact_count"] == 4_000
    assert len(files) == 2  # about 1.9 MB of CSV
    assert all(len(f) <= 1_000_000 for f in files)
    for full, following in itertools.pairwise(files):  # each file as full as a row allows
        next_row = following.split(b"\r\n")[1] + b"\r\n"
        assert len(full) + len(next_row) > 1_000_000
    emails = [r["EMAIL"] for f in files for r in csv.DictReader(io.StringIO(f.decode()))]
    assert emails == [c["email"] for c in contacts]


def test_a_json_export_is_json_lines(sandbox: SandboxProcess) -> None:
    sandbox.faults(export_delay=0)
    list_id = make_list(sandbox)
    score = make_field(sandbox, "score", "Number")
    wait_for_job(
        sandbox,
        upsert(
            sandbox,
            [{"email": "ann@example.com", "first_name": "Ann", "custom_fields": {score: 3}}],
            [list_id],
        ),
    )

    export = wait_for_export(
        sandbox, start_export(sandbox, {"list_ids": [list_id], "file_type": "json"})
    )
    lines = gzip.decompress(download(export["urls"][0])[2]).decode().splitlines()

    assert len(lines) == 1
    row = json.loads(lines[0])
    assert (row["email"], row["first_name"], row["custom_fields"]) == (
        "ann@example.com",
        "Ann",
        {"score": 3},
    )


def test_an_export_without_list_ids_holds_every_contact(sandbox: SandboxProcess) -> None:
    sandbox.faults(export_delay=0)
    list_id = make_list(sandbox)
    wait_for_job(sandbox, upsert(sandbox, [ONE], [list_id]))
    wait_for_job(sandbox, upsert(sandbox, [{"email": "bob@example.com"}]))

    export = wait_for_export(sandbox, start_export(sandbox, {}))

    assert export["contact_count"] == 2
    assert [r["EMAIL"] for r in csv_rows(download(export["urls"][0])[2])] == [
        "ann@example.com",
        "bob@example.com",
    ]


def test_export_file_urls_need_their_signature_no_api_key_and_expire(
    sandbox: SandboxProcess,
) -> None:
    sandbox.faults(export_delay=0)
    list_id = make_list(sandbox)
    wait_for_job(sandbox, upsert(sandbox, [ONE], [list_id]))
    urls = [
        wait_for_export(sandbox, start_export(sandbox, {"list_ids": [list_id]}))["urls"][0]
        for _ in range(21)  # the sandbox keeps the files of the latest 20
    ]
    oldest, newest = urls[0], urls[-1]
    base, _, sig = newest.partition("?sig=")

    forged = download(f"{base}?sig={'x' * len(sig)}")
    unsigned = download(base)
    keyed = download(newest, {"Authorization": f"Bearer {KEY}"})
    unknown = download(f"{sandbox.url}/__sandbox/export-files/{uuid.uuid4()}/1?sig={sig}")
    expired = download(oldest)
    second = download(urls[1])

    assert (forged[0], unsigned[0]) == (403, 403)
    assert keyed[0] == 400  # S3: one auth mechanism only; so a client must not send its key
    assert b"only one auth mechanism" in keyed[2]
    assert unknown[0] == 404
    assert expired[0] == 404
    assert json.loads(expired[2])["errors"][0]["message"] == "the export file has expired"
    assert second[0] == 200


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        pytest.param(
            {"list_ids": ["not-a-uuid"]}, 400, "list_ids[0]", "must be a uuid", id="not-uuid"
        ),
        pytest.param({"file_type": "xml"}, 400, "file_type", "must be one of csv, json", id="xml"),
        pytest.param(
            {"max_file_size": "big"}, 400, "max_file_size", "must be of type integer", id="size"
        ),
        pytest.param({"max_file_size": 0}, 400, "max_file_size", "must be at least 1", id="zero"),
        pytest.param(
            {"segment_ids": ["abc"]},
            400,
            "segment_ids",
            "segments do not exist in the sandbox",
            id="segments",
        ),
        pytest.param(
            {"list_ids": [LIST_ID]},
            404,
            "list_ids",
            f"list {LIST_ID} does not exist",
            id="unknown-list",
        ),
    ],
)
def test_an_export_request_the_spec_or_the_sandbox_refuses(
    sandbox: SandboxProcess, body: dict[str, Any], status: int, field: str, message: str
) -> None:
    answer = call(sandbox, "POST", "/v3/marketing/contacts/exports", body)

    assert answer.status == status
    assert answer.errors() == [{"field": field, "message": message}]
    assert sandbox.state()["exports"] == {"pending": 0, "ready": 0, "failure": 0}


def test_an_unknown_export_is_a_404(sandbox: SandboxProcess) -> None:
    answer = call(sandbox, "GET", f"/v3/marketing/contacts/exports/{uuid.uuid4()}")

    assert answer.status == 404
    assert answer.errors() == [{"message": "export not found"}]


def test_export_fail_rate_ends_exports_in_failure(sandbox: SandboxProcess) -> None:
    sandbox.faults(export_delay=0, export_fail_rate=1)
    list_id = make_list(sandbox)

    export = wait_for_export(sandbox, start_export(sandbox, {"list_ids": [list_id]}))

    assert export["status"] == "failure"
    assert export["message"] == "the export failed (injected fault)"
    assert "urls" not in export
    assert_valid_response(call(sandbox, "GET", f"/v3/marketing/contacts/exports/{export['id']}"))


# --- list deletion -------------------------------------------------------------------------------


def test_deleting_a_list_keeps_its_contacts_unless_told(sandbox: SandboxProcess) -> None:
    kept, doomed, other = (make_list(sandbox, n) for n in ("Kept", "Doomed", "Other"))
    wait_for_job(sandbox, upsert(sandbox, [ONE], [kept, other]))
    wait_for_job(sandbox, upsert(sandbox, [{"email": "bob@example.com"}], [doomed, other]))
    found = call(
        sandbox, "POST", "/v3/marketing/contacts/search/emails", {"emails": ["bob@example.com"]}
    )
    bob = found.body["result"]["bob@example.com"]["contact"]["id"]

    gone = call(sandbox, "DELETE", f"/v3/marketing/lists/{kept}")
    again = call(sandbox, "DELETE", f"/v3/marketing/lists/{kept}")
    upload = call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": [ONE], "list_ids": [kept]})
    count_after_keep = call(sandbox, "GET", "/v3/marketing/contacts/count").body["contact_count"]
    same_name = call(sandbox, "POST", "/v3/marketing/lists", {"name": "Kept"})
    with_contacts = call(sandbox, "DELETE", f"/v3/marketing/lists/{doomed}?delete_contacts=true")

    assert (gone.status, gone.raw) == (204, b"")
    assert again.status == 404
    assert call(sandbox, "GET", f"/v3/marketing/lists/{kept}").status == 404
    assert upload.status == 400
    assert upload.errors() == [{"field": "list_ids", "message": f"list {kept} does not exist"}]
    assert count_after_keep == 2
    assert same_name.status == 201
    assert with_contacts.status == 200
    assert "job_id" in with_contacts.body
    assert_valid_response(with_contacts)
    assert call(sandbox, "GET", "/v3/marketing/contacts/count").body["contact_count"] == 1
    assert call(sandbox, "GET", f"/v3/marketing/contacts/{bob}").status == 404
    assert [m["email"] for m in sandbox.list_members(other)] == ["ann@example.com"]
    assert sandbox.requests()["DELETE /v3/marketing/lists/{id} 204"] == 1


# --- SendGrid's lag and lost answers -------------------------------------------------------------


def test_list_lag_hides_a_join_and_a_removal_until_it_has_passed(
    sandbox: SandboxProcess,
) -> None:
    lag = 0.8
    sandbox.faults(list_lag=lag, export_delay=0)
    list_id = make_list(sandbox)

    sent = time.monotonic()  # the join is applied after this, so visible after sent + lag
    job = wait_for_job(sandbox, upsert(sandbox, [ONE], [list_id]))
    found = call(
        sandbox, "POST", "/v3/marketing/contacts/search/emails", {"emails": [ONE["email"]]}
    )
    contact = found.body["result"][ONE["email"]]["contact"]
    hidden = (
        call(sandbox, "GET", f"/v3/marketing/lists/{list_id}").body["contact_count"],
        call(sandbox, "GET", f"/v3/marketing/lists/{list_id}/contacts/count").body,
        call(sandbox, "GET", "/v3/marketing/lists").body["result"][0]["contact_count"],
        sandbox.list_members(list_id),
        contact["list_ids"],
        wait_for_export(sandbox, start_export(sandbox, {"list_ids": [list_id]}))["contact_count"],
    )
    hidden_at = time.monotonic()
    time.sleep(max(0.0, hidden_at + lag + 0.1 - time.monotonic()))
    visible = sandbox.list_members(list_id)
    removal_sent = time.monotonic()
    removed = call(
        sandbox, "DELETE", f"/v3/marketing/lists/{list_id}/contacts?contact_ids={contact['id']}"
    )
    still = call(sandbox, "GET", f"/v3/marketing/lists/{list_id}/contacts/count").body
    still_at = time.monotonic()
    time.sleep(max(0.0, still_at + lag + 0.1 - time.monotonic()))

    assert job["status"] == "completed"
    assert hidden_at - sent < lag, "too slow to observe the lag"
    assert hidden == (0, {"contact_count": 0, "billable_count": 0}, 0, [], [], 0)
    assert visible == [ONE]
    assert removed.status == 202
    assert still_at - removal_sent < lag, "too slow to observe the lag"
    assert still["contact_count"] == 1
    assert sandbox.list_members(list_id) == []
    assert sandbox.state()["pending_list_changes"] == 0


def test_a_lost_answer_took_effect_but_the_client_saw_a_connection_error(
    sandbox: SandboxProcess,
) -> None:
    sandbox.faults(export_delay=0)
    list_id = make_list(sandbox)
    sandbox.faults(lose_rate=1)

    with pytest.raises(OSError) as upsert_error:
        call(sandbox, "PUT", "/v3/marketing/contacts", {"contacts": [ONE], "list_ids": [list_id]})
    with pytest.raises(OSError):
        call(sandbox, "POST", "/v3/marketing/contacts/exports", {"list_ids": [list_id]})
    counts = sandbox.requests()  # control endpoints are never lost
    sandbox.faults(lose_rate=0)
    deadline = time.monotonic() + 10
    while sandbox.state()["jobs"]["completed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)

    error = upsert_error.value
    assert not isinstance(error, urllib.error.HTTPError)
    assert isinstance(error, ConnectionError) or isinstance(
        getattr(error, "reason", None), ConnectionError
    )
    assert counts["PUT /v3/marketing/contacts lost"] == 1
    assert counts["POST /v3/marketing/contacts/exports lost"] == 1
    assert "PUT /v3/marketing/contacts 202" not in counts
    assert sandbox.list_members(list_id) == [ONE]  # the upsert took effect
    assert sandbox.state()["exports"]["ready"] == 1  # and so did the export
    assert len(call(sandbox, "GET", "/v3/marketing/contacts/exports").body["result"]) == 1


def test_new_knobs_come_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.local.sandbox.config import config_from_args

    monkeypatch.setenv("SANDBOX_LOSE_RATE", "0.25")
    monkeypatch.setenv("SANDBOX_EXPORT_FAIL_RATE", "0.5")

    config, _ = config_from_args(["--export-delay", "2", "--list-lag", "3", "--lose-rate", "0.1"])

    faults = config.faults
    assert (faults.export_delay, faults.list_lag) == (2.0, 3.0)
    assert (faults.lose_rate, faults.export_fail_rate) == (0.1, 0.5)  # flags win over SANDBOX_*
    with pytest.raises(SystemExit):
        config_from_args(["--list-lag", "-1"])


# --- state kept in a file, keys from a settings file ---------------------------------------------


def test_a_state_file_keeps_lists_contacts_and_ids_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sandbox" / "state"
    first = start_sandbox("--state-file", str(state), "--save-interval", "0.1")
    try:
        list_id = make_list(first, "kept")
        field_id = make_field(first, "tier", "Text")
        contacts = [ONE | {"custom_fields": {field_id: "gold"}}, {"email": "bob@example.com"}]
        job_id = upsert(first, contacts, [list_id])
        assert wait_for_job(first, job_id)["status"] == "completed"
        found = call(
            first, "POST", "/v3/marketing/contacts/search/emails", {"emails": [ONE["email"]]}
        )
        contact_id = found.body["result"][ONE["email"]]["contact"]["id"]
        members = first.list_members(list_id)
        assert first.state()["state_file"] == str(state)
    finally:
        first.stop()
    assert first.process.returncode == 0
    assert "sandbox state saved" in first.output()

    second = start_sandbox("--state-file", str(state))
    try:
        assert "sandbox state loaded" in second.output()
        assert second.list_members(list_id) == members
        assert call(second, "GET", f"/v3/marketing/lists/{list_id}").body["contact_count"] == 2
        assert call(second, "GET", f"/v3/marketing/contacts/{contact_id}").status == 200
        job = call(second, "GET", f"/v3/marketing/contacts/imports/{job_id}")
        assert job.body["status"] == "completed"
        second.reset()  # a reset is saved too
    finally:
        second.stop()
    third = start_sandbox("--state-file", str(state))
    try:
        assert third.state()["lists"] == []
    finally:
        third.stop()


def test_a_state_file_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a state\n")
    try:
        started = start_sandbox("--state-file", str(state))
    except SandboxError as failed:
        assert "exited with code 2" in str(failed)
        assert "not a sandbox state file" in str(failed)
    else:
        started.stop()  # never leave it running, even when this test fails
        pytest.fail("the sandbox started on a state file it cannot read")


def test_keys_from_a_settings_file_are_the_only_keys_and_follow_it(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"SENDGRID_KEY_A": "SG.a", "OTHER": "SG.other"}}))
    sandbox = start_sandbox("--keys-from", str(settings))
    try:
        assert call(sandbox, "GET", "/v3/marketing/lists", key="SG.a").status == 200
        for wrong in ("SG.other", KEY, "SG.b"):
            answer = call(sandbox, "GET", "/v3/marketing/lists", key=wrong)
            assert answer.status == 401
            assert answer.errors() == [{"message": "authorization required"}]
        state = sandbox.state()
        assert (state["api_key_required"], state["api_key_names"]) == (True, ["SENDGRID_KEY_A"])

        values = {"SENDGRID_KEY_A": "SG.a", "SENDGRID_KEY_B": "SG.b"}
        settings.write_text(json.dumps({"Values": values}))
        assert call(sandbox, "GET", "/v3/marketing/lists", key="SG.b").status == 200
    finally:
        sandbox.stop()
    assert "the accepted API keys changed (added: SENDGRID_KEY_B)" in sandbox.output()
    assert "SG.b" not in sandbox.output()


def test_a_client_that_goes_away_mid_body_gets_a_400_and_nothing_is_applied(
    sandbox: SandboxProcess,
) -> None:
    # A worker stopped mid-upload (a destination removed during its run) is an expected end of
    # a request, not a failure of the sandbox: no 500, no traceback, nothing stored.
    host, port = urlsplit(sandbox.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            b"PUT /v3/marketing/contacts HTTP/1.1\r\nHost: sandbox\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            + b'{"contacts": [{"email": "ann@example.com"}'
        )
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1024)  # whatever it answers, if anything, once it has read what there is

    def counted() -> dict[str, int]:
        return {k: n for k, n in sandbox.requests().items() if k.startswith("PUT ")}

    deadline = time.monotonic() + 5
    while not counted() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counted() == {"PUT /v3/marketing/contacts 400": 1}
    assert_unchanged(sandbox)
