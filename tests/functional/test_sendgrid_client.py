"""The SendGrid client against the sandbox over real HTTP: every call, and every error type."""

from __future__ import annotations

import gc
import json
import logging
import socket
import threading
import time
import weakref

import pytest
import urllib3

from exporter.sendgrid import (
    NotFound,
    RateLimited,
    Rejected,
    SendGridClient,
    TransientError,
    Unauthorized,
)
from exporter.settings import SendGridSettings
from tests.support.sandbox import start_sandbox

pytestmark = pytest.mark.functional

KEY = "SG.test-key-that-must-never-leak"


def client_for(sandbox, key=KEY, timeout=10.0):
    return SendGridClient(key, SendGridSettings(base_url=sandbox.url, timeout_seconds=timeout))


def contacts_json(*contacts):
    return json.dumps(list(contacts), ensure_ascii=False, separators=(",", ":"))


def wait_settled(client, job_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.import_status(job_id)
        if job.settled or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


@pytest.fixture
def sg(sandbox):
    return client_for(sandbox)


def test_upsert_then_the_job_completes_with_created_and_updated_counts(sg, sandbox):
    lst = sg.create_list("Loyal customers")
    first = sg.upsert(
        [lst.id],
        contacts_json(
            {"email": "ana@example.com", "first_name": "Ana"},
            {"email": "zoë.kim@example.org".replace("ë", "e"), "city": "Zürich"},
        ),
    )
    job = wait_settled(sg, first)
    assert (job.status, job.requested, job.created, job.updated, job.errored) == (
        "completed",
        2,
        2,
        0,
        0,
    )
    second = sg.upsert([lst.id], contacts_json({"email": "ana@example.com", "last_name": "Ruiz"}))
    job = wait_settled(sg, second)
    assert (job.status, job.created, job.updated) == ("completed", 0, 1)
    assert sg.list_count(lst.id) == 2
    members = {m["email"]: m for m in sandbox.list_members(lst.id)}
    assert members["ana@example.com"]["first_name"] == "Ana"  # omitted fields stay
    assert members["ana@example.com"]["last_name"] == "Ruiz"
    assert members["zoe.kim@example.org"]["city"] == "Zürich"


def test_import_status_is_pending_before_the_job_settles(sandbox):
    sandbox.faults(job_delay=2.0)
    sg = client_for(sandbox)
    lst = sg.create_list("slow")
    job = sg.import_status(sg.upsert([lst.id], contacts_json({"email": "a@example.com"})))
    assert job.status == "pending"
    assert not job.settled


def test_import_job_with_errored_contacts_reports_them(sg):
    field = sg.create_field("score", "Number")
    lst = sg.create_list("scored")
    job = wait_settled(
        sg,
        sg.upsert(
            [lst.id],
            contacts_json(
                {"email": "a@example.com", "custom_fields": {field.id: 3}},
                {"email": "b@example.com", "custom_fields": {field.id: "abc"}},
            ),
        ),
    )
    assert (job.status, job.created, job.errored) == ("errored", 1, 1)
    assert job.errors_url


def test_unknown_job_is_not_found(sg):
    with pytest.raises(NotFound):
        sg.import_status("00000000-0000-4000-8000-000000000000")


def test_field_definitions_resolve_names_to_ids(sg):
    tier = sg.create_field("tier", "Text")
    defs = sg.field_definitions()
    assert defs.custom["tier"].id == tier.id
    assert defs.custom["tier"].field_type == "Text"
    assert "first_name" in defs.reserved
    with pytest.raises(Rejected):
        sg.create_field("tier", "Text")  # duplicate name


def test_lists_get_find_and_page(sg):
    created = [sg.create_list(f"list {i}") for i in range(5)]
    assert sg.get_list(created[2].id).name == "list 2"
    assert sg.find_list("list 4") == sg.get_list(created[4].id)
    assert sg.find_list("no such list") is None
    import exporter.sendgrid as module

    saved = module.LIST_PAGE_SIZE
    module.LIST_PAGE_SIZE = 2  # five lists in three pages
    try:
        assert [lst.name for lst in sg.lists()] == [f"list {i}" for i in range(5)]
    finally:
        module.LIST_PAGE_SIZE = saved
    with pytest.raises(NotFound):
        sg.get_list("00000000-0000-4000-8000-000000000000")


def test_search_in_chunks_and_remove_from_list_without_deleting_contacts(sg, sandbox):
    lst = sg.create_list("members")
    emails = [f"user{i}@example.com" for i in range(150)]
    job = wait_settled(sg, sg.upsert([lst.id], contacts_json(*({"email": e} for e in emails))))
    assert job.created == 150

    wanted = [e.upper() for e in emails[:120]] + [f"ghost{i}@example.com" for i in range(100)]
    ids = sg.search_emails(wanted)
    assert sorted(ids) == sorted(emails[:120])  # lower-cased keys, ghosts absent
    assert sg.search_emails(["nobody@example.com"]) == {}

    jobs = sg.remove_from_list(lst.id, list(ids.values()))
    assert len(jobs) == 2  # 120 ids: two requests of at most 100
    assert sg.list_count(lst.id) == 30
    assert sandbox.state()["contacts"] == 150  # removed from the list, not from the account
    searches = sandbox.requests()
    assert sum(n for k, n in searches.items() if "search/emails" in k) == 4  # 220 emails + 1


def test_rate_limit_429_carries_the_reset_time_and_the_client_then_holds_back(sandbox):
    sandbox.faults(rate_limit=2, rate_window=30)
    first = client_for(sandbox)
    first.create_list("one")
    first.create_list("two")  # answered with X-RateLimit-Remaining: 0
    sent = sum(sandbox.requests().values())
    with pytest.raises(RateLimited) as held:
        first.create_list("three")  # known to be over the limit: not sent at all
    assert held.value.status is None
    assert 1 <= held.value.retry_after <= 31
    assert sum(sandbox.requests().values()) == sent

    fresh = client_for(sandbox)  # knows nothing yet: the server answers 429
    with pytest.raises(RateLimited) as caught:
        fresh.create_list("three")
    assert caught.value.status == 429
    assert 1 <= caught.value.retry_after <= 31
    assert sum(sandbox.requests().values()) == sent + 1


def test_injected_429_is_rate_limited_for_about_a_second(sg, sandbox):
    sandbox.faults(throttle_rate=1.0)
    with pytest.raises(RateLimited) as caught:
        sg.create_list("x")
    assert 1 <= caught.value.retry_after <= 2
    assert isinstance(caught.value, TransientError)


def test_5xx_is_transient(sg, sandbox):
    sandbox.faults(error_rate=1.0)
    with pytest.raises(TransientError) as caught:
        sg.upsert(["00000000-0000-4000-8000-000000000000"], contacts_json({"email": "a@b.co"}))
    assert caught.value.status == 500
    assert not isinstance(caught.value, RateLimited)


def test_timeout_is_transient(sandbox):
    sandbox.faults(latency_ms=1500)
    sg = client_for(sandbox, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransientError, match="within the timeout"):
        sg.list_count("00000000-0000-4000-8000-000000000000")
    assert time.monotonic() - started < 1.4


def test_dropped_connection_is_transient(sg, sandbox):
    sandbox.faults(drop_rate=1.0)
    with pytest.raises(TransientError, match="cannot reach SendGrid") as caught:
        sg.create_list("x")
    assert caught.value.status is None


def test_nothing_listening_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sg = SendGridClient(KEY, SendGridSettings(base_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(TransientError):
        sg.list_count("x")


def test_400_surfaces_sendgrid_errors(sg):
    with pytest.raises(Rejected) as caught:
        sg.upsert(["not-a-uuid"], contacts_json({"email": "a@example.com"}))
    assert caught.value.status == 400
    assert [e.field for e in caught.value.errors] == ["list_ids[0]"]
    assert "list_ids[0]" in str(caught.value)


def test_invalid_email_fails_the_whole_request_and_the_message_hides_the_address(sg):
    lst = sg.create_list("l")
    with pytest.raises(Rejected) as caught:
        sg.upsert(
            [lst.id],
            contacts_json({"email": "good@example.com"}, {"email": "secret.person@@example.com"}),
        )
    assert caught.value.errors[0].field == "contacts[1].email"
    assert "secret.person" not in str(caught.value)


def test_401_is_unauthorised_and_never_shows_the_key():
    with start_sandbox("--api-key", "the-right-key") as keyed:
        sg = client_for(keyed, key=KEY)
        with pytest.raises(Unauthorized) as caught:
            sg.create_list("x")
        assert caught.value.status == 401
        assert "Marketing Campaigns scopes" in str(caught.value)
        for text in (str(caught.value), repr(caught.value), repr(sg), repr(caught.value.errors)):
            assert KEY not in text
            assert "test-key" not in text
        assert client_for(keyed, key="the-right-key").create_list("x").name == "x"


def test_an_empty_key_is_refused_before_any_call():
    with pytest.raises(Unauthorized):
        SendGridClient("  ")


def test_logs_carry_neither_key_nor_addresses(sg, caplog):
    caplog.set_level(logging.DEBUG)
    lst = sg.create_list("logged")
    wait_settled(sg, sg.upsert([lst.id], contacts_json({"email": "private.person@example.com"})))
    ids = sg.search_emails(["private.person@example.com"])
    sg.remove_from_list(lst.id, ids.values())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "sendgrid PUT /v3/marketing/contacts -> 202" in text
    assert "private.person" not in text
    assert KEY not in text and "test-key" not in text


def test_close_drops_its_own_pool_and_a_later_call_reconnects(sandbox, monkeypatch):
    """close() releases the client's host pools (urllib3 closes a pool's connections when it is
    released); the client stays usable (one replaced on key rotation may still be finishing a
    batch on another thread)."""
    made = []

    class Recorded(urllib3.PoolManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(urllib3, "PoolManager", Recorded)
    sg = client_for(sandbox)
    lst = sg.create_list("closing")
    (pool,) = made
    host = weakref.ref(pool.connection_from_url(sandbox.url))
    assert host() is not None

    sg.close()
    sg.close()  # twice is fine
    gc.collect()
    assert len(pool.pools) == 0 and host() is None  # released, its connections closed

    assert sg.get_list(lst.id).name == "closing"  # works after close, on a new connection
    assert len(pool.pools) == 1


def test_close_leaves_a_pool_it_was_given_to_its_owner(sandbox):
    shared = urllib3.PoolManager(retries=False)
    settings = SendGridSettings(base_url=sandbox.url, timeout_seconds=10)
    one = SendGridClient(KEY, settings, pool=shared)
    other = SendGridClient(KEY, settings, pool=shared)
    lst = one.create_list("shared")
    host = shared.connection_from_url(sandbox.url)
    one.close()
    assert shared.connection_from_url(sandbox.url) is host  # not cleared
    assert other.get_list(lst.id).name == "shared"


def test_close_under_calls_in_flight_fails_none_of_them(sg):
    lst = sg.create_list("busy")
    outcomes: list[str] = []

    def call() -> None:
        for _ in range(20):
            try:
                sg.get_list(lst.id)
                outcomes.append("ok")
            except TransientError as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        sg.close()
        time.sleep(0.001)
    for t in threads:
        t.join()
    assert outcomes == ["ok"] * 80
