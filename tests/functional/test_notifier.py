"""The notifier (exporter/adapters/webhooks.py) against a real HTTP receiver on localhost: one
POST with the headers given, the answer's status, Retry-After and a bounded excerpt; no answer
as `TargetUnreachable`, a URL that may not be posted to as `TargetRefused`; never the URL in an
error (it is a secret)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from exporter.adapters.webhooks import WebhookNotifier
from exporter.ports.notifier import TargetRefused, TargetUnreachable
from tests.support.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_a_post_reaches_the_receiver_with_its_headers(receiver: Receiver) -> None:
    notifier = WebhookNotifier(timeout=5)
    body = json.dumps({"event": "list_ready"}).encode()
    answer = notifier.post(f"{receiver.url}/hook/secret-token", body, {"X-Exporter-Event": "x"})
    assert (answer.status, answer.ok, answer.transient, answer.detail) == (204, True, False, "")
    (got,) = receiver.posts()
    assert (got.path, got.body) == ("/hook/secret-token", body)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Exporter-Event"] == "x"
    assert got.headers["User-Agent"] == "segment-sendgrid-exporter"
    notifier.close()


def test_an_error_answer_is_reported_with_an_excerpt(receiver: Receiver) -> None:
    receiver.statuses["/down"] = 503
    receiver.statuses["/bad"] = 400
    notifier = WebhookNotifier(timeout=5)
    down = notifier.post(f"{receiver.url}/down", b"{}", {})
    assert (down.status, down.transient, down.detail) == (503, True, "receiver says 503")
    bad = notifier.post(f"{receiver.url}/bad", b"{}", {})
    assert (bad.status, bad.transient) == (400, False)


def test_no_answer_is_target_unreachable_without_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    notifier = WebhookNotifier(timeout=1, connect_timeout=1)
    with pytest.raises(TargetUnreachable) as caught:
        notifier.post(f"http://127.0.0.1:{port}/hook/secret-token", b"{}", {})
    assert "secret-token" not in str(caught.value) and str(port) not in str(caught.value)


def test_a_slow_target_times_out(receiver: Receiver) -> None:
    receiver.delay = 2.0
    notifier = WebhookNotifier(timeout=0.3)
    with pytest.raises(TargetUnreachable, match="timed out") as caught:
        notifier.post(f"{receiver.url}/slow/secret-token", b"{}", {})
    assert "secret-token" not in str(caught.value)


def test_a_silent_server_that_accepts_and_hangs_up_is_unreachable() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def hang_up() -> None:
        conn, _ = server.accept()
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    try:
        with pytest.raises(TargetUnreachable, match="could not reach the target"):
            WebhookNotifier(timeout=2).post(f"http://127.0.0.1:{port}/x", b"{}", {})
    finally:
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/secret-token",
        "ftp://hooks.example.com/secret-token",
        "https://user:secret-token@hooks.example.com/x",
        "not a url",
    ],
)
def test_a_url_that_may_not_be_posted_to_is_refused_unsent(url: str) -> None:
    with pytest.raises(TargetRefused) as caught:
        WebhookNotifier().post(url, b"{}", {})
    assert "secret-token" not in str(caught.value)
