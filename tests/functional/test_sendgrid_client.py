"""The SendGrid client against the sandbox over real HTTP: every call, and every error type;
contact exports read back with `exporter.core.list_export`, and export file downloads (no API key,
URL policy, caps, error types) also against a plain local file server."""

from __future__ import annotations

import gc
import gzip
import http.server
import json
import logging
import socket
import threading
import time
import weakref
from typing import ClassVar

import pytest
import urllib3

from exporter.adapters import sendgrid_export_files
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.core.list_export import read_export
from exporter.ports.sendgrid import (
    ExportFileGone,
    NotFound,
    RateLimited,
    Rejected,
    TransientError,
    Unauthorized,
)
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
    import exporter.adapters.sendgrid as module

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


# --- the list's real membership: contact exports -------------------------------------------------


@pytest.fixture(scope="module")
def keyed():
    """A sandbox that takes only KEY: an export file download that carried the key would be
    refused (400, as S3 refuses two auth mechanisms), so a download that works proves it did
    not."""
    process = start_sandbox("--api-key", KEY, "--export-delay", "0.2")
    try:
        yield process
    finally:
        process.stop()


def wait_export(client, export_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        export = client.export_status(export_id)
        if export.settled or time.monotonic() > deadline:
            return export
        time.sleep(0.05)


def read_members(client, export, fields):
    members = []
    for url in export.urls:
        with client.open_export_file(url) as stream:
            reader = read_export(stream, fields)
            members.extend(reader)
            assert reader.missing == ()
    return members


def test_an_export_is_started_followed_and_read_without_the_api_key(keyed):
    keyed.reset()
    sg = client_for(keyed)
    tier = sg.create_field("Tier", "Text")
    lst = sg.create_list("exported")
    wait_settled(
        sg,
        sg.upsert(
            [lst.id],
            contacts_json(
                {
                    "email": "Ann@Example.com",
                    "first_name": "Ann",
                    "custom_fields": {tier.id: "gold"},
                },
                {"email": "bob@example.com", "city": "Zürich, CH"},
            ),
        ),
    )

    export_id = sg.start_export(lst.id)
    first = sg.export_status(export_id)
    done = wait_export(sg, export_id)
    members = read_members(sg, done, ["first_name", "city", "custom:tier"])

    assert (first.status, first.settled, first.ready, first.urls) == ("pending", False, False, ())
    assert (done.status, done.settled, done.ready) == ("ready", True, True)
    assert done.contact_count == 2
    assert len(done.urls) == 1
    assert members == [
        ("ann@example.com", ["Ann", "", "gold"]),
        ("bob@example.com", ["", "Zürich, CH", ""]),
    ]
    counts = keyed.requests()
    assert counts["GET /__sandbox/export-files/{id}/{n} 200"] == 1
    assert not any(k.startswith("GET /__sandbox/export-files") and "400" in k for k in counts)
    with pytest.raises(Unauthorized):  # and the sandbox does take keys seriously
        client_for(keyed, key="SG.another-key").export_status(export_id)


def test_a_large_export_comes_in_several_files_of_at_most_max_file_size(sg, sandbox):
    sandbox.faults(export_delay=0)
    lst = sg.create_list("big")
    emails = [f"user{i:05d}@example.com" for i in range(4_000)]
    wide = {"first_name": "F" * 50, "address_line_1": "A" * 100, "address_line_2": "B" * 100}
    wait_settled(sg, sg.upsert([lst.id], contacts_json(*({"email": e, **wide} for e in emails))))

    done = wait_export(sg, sg.start_export(lst.id, max_file_size_mb=1))
    members = read_members(sg, done, ["address_line_2"])

    assert len(done.urls) == 2
    assert [email for email, _ in members] == emails
    assert {tuple(values) for _, values in members} == {("B" * 100,)}


def test_a_failed_export_says_so(sg, sandbox):
    sandbox.faults(export_delay=0, export_fail_rate=1)
    lst = sg.create_list("failing")

    done = wait_export(sg, sg.start_export(lst.id))

    assert (done.status, done.settled, done.ready, done.urls) == ("failure", True, False, ())
    assert "failed" in done.message


def test_export_of_an_unknown_list_or_an_unknown_export_is_not_found(sg):
    with pytest.raises(NotFound) as unknown_list:
        sg.start_export("00000000-0000-4000-8000-000000000000")
    with pytest.raises(NotFound):
        sg.export_status("00000000-0000-4000-8000-000000000000")
    assert [e.field for e in unknown_list.value.errors] == ["list_ids"]


def test_an_expired_or_forged_export_file_url_is_gone(sg, sandbox):
    sandbox.faults(export_delay=0)
    lst = sg.create_list("short-lived")
    url = wait_export(sg, sg.start_export(lst.id)).urls[0]
    base, _, sig = url.partition("?sig=")

    with pytest.raises(ExportFileGone) as forged:
        sg.open_export_file(f"{base}?sig=not-{sig}")
    with pytest.raises(ExportFileGone) as unknown:
        sg.open_export_file(
            url.replace(base.split("/")[-2], "00000000-0000-4000-8000-000000000000")
        )

    assert forged.value.status == 403
    assert unknown.value.status == 404
    assert isinstance(forged.value, NotFound)
    assert "expired or is gone" in str(forged.value)
    assert sig not in str(forged.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://files.example.com/export.csv.gz?sig=SECRET",
        "file:///etc/passwd",
        "ftp://files.example.com/export.csv.gz",
        "http://127.0.0.1:1/export.csv.gz?sig=SECRET",  # the base's host, another port
        "https://user:SECRET@files.example.com/export.csv.gz",
        "//files.example.com/export.csv.gz",
        "http://[::1/export",
    ],
)
def test_export_file_urls_off_policy_are_refused_before_any_request(sg, sandbox, url):
    before = sandbox.requests()

    with pytest.raises(Rejected) as refused:
        sg.open_export_file(url)

    assert not isinstance(refused.value, NotFound)
    assert "SECRET" not in str(refused.value)
    assert "refusing" in str(refused.value) or "not a valid URL" in str(refused.value)
    assert sandbox.requests() == before


def test_https_urls_on_any_host_are_allowed(sg):
    with socket.socket() as s:  # nothing listens there: the policy let it through to connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError, match=f"export file server https://127.0.0.1:{port}"):
        sg.open_export_file(f"https://127.0.0.1:{port}/export.csv.gz?sig=x")


def test_delete_list_keeps_or_deletes_its_contacts(sg, sandbox):
    kept, doomed = sg.create_list("kept"), sg.create_list("doomed")
    wait_settled(sg, sg.upsert([kept.id], contacts_json({"email": "ann@example.com"})))
    wait_settled(sg, sg.upsert([doomed.id], contacts_json({"email": "bob@example.com"})))

    sg.delete_list(kept.id)
    sg.delete_list(doomed.id, delete_contacts=True)

    with pytest.raises(NotFound):
        sg.get_list(kept.id)
    with pytest.raises(NotFound):
        sg.delete_list(doomed.id)
    assert sandbox.state()["contacts"] == 1
    assert sg.search_emails(["ann@example.com", "bob@example.com"]).keys() == {"ann@example.com"}
    assert sandbox.requests()["DELETE /v3/marketing/lists/{id} 204"] == 1
    assert sandbox.requests()["DELETE /v3/marketing/lists/{id} 200"] == 1


def test_export_logs_carry_templates_not_ids_or_signatures(sg, sandbox, caplog):
    sandbox.faults(export_delay=0)
    caplog.set_level(logging.DEBUG)
    lst = sg.create_list("logged")
    export_id = sg.start_export(lst.id)
    url = wait_export(sg, export_id).urls[0]
    sg.open_export_file(url).close()

    # Our own lines only: urllib3 logs whole URLs at DEBUG (keep it above DEBUG in production).
    text = "\n".join(
        r.getMessage() for r in caplog.records if r.name == "exporter.adapters.sendgrid"
    )
    assert "sendgrid POST /v3/marketing/contacts/exports -> 202" in text
    assert "sendgrid GET /v3/marketing/contacts/exports/{id} -> 200" in text
    assert "export file from http://127.0.0.1" in text
    assert export_id not in text
    assert url.partition("?sig=")[2] not in text
    assert KEY not in text


# --- export file downloads against a plain file server ------------------------------------------


class _FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves what the test asks for at /<name>; remembers the headers of every request."""

    seen: ClassVar[list[dict[str, str]]] = []
    body = gzip.compress(b"EMAIL,FIRST_NAME\r\nann@example.com,Ann\r\n")

    def do_GET(self):
        type(self).seen.append(dict(self.headers))
        name = self.path.lstrip("/").partition("?")[0]
        if name == "ok":
            self._send(200, self.body)
        elif name in ("500", "410", "429", "301"):
            self._send(int(name), b"<Error/>", {"Retry-After": "7", "Location": "/ok"})
        elif name == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif name == "chunked":  # no Content-Length: only the client's own count bounds it
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif name == "cut":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body) + 1000))
            self.end_headers()
            self.wfile.write(self.body)
            self.wfile.flush()
            self.close_connection = True
        elif name == "slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.7)
        else:
            self._send(404, b"")

    def _send(self, status, body, headers=None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def file_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FileHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def files(file_server):
    """A client whose base URL is the file server (so plain http is allowed there)."""
    _FileHandler.seen = []
    client = SendGridClient(
        KEY, SendGridSettings(base_url=file_server, timeout_seconds=0.5, connect_timeout_seconds=2)
    )
    yield client, file_server
    client.close()


def test_an_export_file_is_streamed_without_the_authorization_header(files):
    client, server = files

    with client.open_export_file(f"{server}/ok?sig=x") as stream:
        data = stream.read()
    with client.open_export_file(f"{server}/ok?sig=y") as stream:
        members = list(read_export(stream, ["first_name"]))

    assert data == _FileHandler.body  # the gzip bytes as sent: the reader unpacks them
    assert members == [("ann@example.com", ["Ann"])]
    assert len(_FileHandler.seen) == 2
    for headers in _FileHandler.seen:
        assert "Authorization" not in headers
        assert KEY not in str(headers)


@pytest.mark.parametrize(
    ("name", "error", "status"),
    [
        ("410", ExportFileGone, 410),
        ("500", TransientError, 500),
        ("429", RateLimited, None),
        ("301", Rejected, 301),
    ],
)
def test_export_file_answers_map_to_error_types(files, name, error, status):
    client, server = files

    with pytest.raises(error) as caught:
        client.open_export_file(f"{server}/{name}?sig=x")

    if status is not None:
        assert caught.value.status == status
    if name == "429":
        assert caught.value.retry_after == 7
    if name == "301":
        assert not isinstance(caught.value, (NotFound, TransientError))
        assert len(_FileHandler.seen) == 1  # the redirect was not followed


def test_an_export_file_over_the_cap_is_refused(files, monkeypatch):
    client, server = files
    monkeypatch.setattr(sendgrid_export_files, "MAX_EXPORT_FILE_BYTES", 100_000)

    with pytest.raises(Rejected, match="1,000,000,000,000 bytes"):
        client.open_export_file(f"{server}/huge")
    with (
        client.open_export_file(f"{server}/chunked") as stream,
        pytest.raises(Rejected, match="larger than the 100,000 bytes"),
    ):
        while stream.read(8192):
            pass


@pytest.mark.parametrize("name", ["cut", "slow"])
def test_a_download_that_breaks_off_or_stalls_is_transient(files, name):
    client, server = files

    with client.open_export_file(f"{server}/{name}") as stream, pytest.raises(TransientError):
        while stream.read(8192):
            pass
