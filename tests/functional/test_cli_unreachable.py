"""The CLI when storage, SendGrid or Key Vault cannot be reached: within seconds, one line
`error: <service> is unreachable at <URL> (<why>): <what to do>`, exit 1, no traceback; and
a refused connection, an unknown host, a failed TLS handshake and a timeout told apart.

Each bad endpoint is made here and undone after its test, also when it fails: a port nothing
listens on, a name under `.invalid` (RFC 6761: never resolves), a socket that listens and
never answers, a plain-HTTP server spoken to over https. The CLI runs in this process
(`exporter.cli.main`) with a settings file naming the endpoint.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.local.azurite import AzuriteProcess
from exporter.model.destinations import Consent, Destination
from exporter.wiring import services_from_env
from tests.support.azurite import unique_name

pytestmark = pytest.mark.functional

BOUND = 15.0
"""Seconds a command may take to give up: the CLI waits 5 s for a connection (or a TLS
handshake) and 8 s for an answer, so ~8 s at most; the rest is slack for a busy machine."""

KINDS = ("refused", "dns", "timeout", "tls")
HTTP_KINDS = (*KINDS, "other")
"""Over plain HTTP a server that hangs up is "other" (over https it fails the handshake)."""

SAID = {
    "refused": "(connection refused)",
    "dns": "(DNS: host name not resolved)",
    "timeout": "(timed out",
    "tls": "(TLS handshake failed",
    "other": "(connection failed: RemoteDisconnected)",
}

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key: public, and useless outside Azurite.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
KEY = "SG.unreachable-test-key"
SETTINGS_NAMES = (
    "AzureWebJobsStorage",
    "SENDGRID_API_BASE_URL",
    "SENDGRID_TIMEOUT_SECONDS",
    "SENDGRID_CONNECT_TIMEOUT_SECONDS",
    "KEY_VAULT_URI",
)
LIST_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


# --- bad endpoints ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _silent() -> Iterator[int]:
    """A port that accepts connections (the kernel does) and never answers."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(32)
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


@contextlib.contextmanager
def _plain_http() -> Iterator[int]:
    """A server that answers whatever it is sent with plain HTTP: a TLS client gets an answer
    that is no TLS record (wrong version number)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(32)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):  # until the client hangs up: no reset
                        pass

    thread = threading.Thread(target=serve, name="plain-http", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


@contextlib.contextmanager
def _hang_up() -> Iterator[int]:
    """A server that reads each request and closes the connection without a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(32)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.recv(65536)

    thread = threading.Thread(target=serve, name="hang-up", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


@contextlib.contextmanager
def bad_endpoint(kind: str, scheme: str = "http", host: str = "unreachable") -> Iterator[str]:
    """A base URL (scheme, host, port) that fails with `kind`."""
    if kind == "refused":
        yield f"{scheme}://127.0.0.1:{_closed_port()}"
    elif kind == "dns":
        yield f"{scheme}://{host}.exporter-test.invalid:10000"
    elif kind == "timeout":
        with _silent() as port:
            yield f"{scheme}://127.0.0.1:{port}"
    elif kind == "other":
        with _hang_up() as port:
            yield f"http://127.0.0.1:{port}"
    else:
        with _plain_http() as port:
            yield f"https://127.0.0.1:{port}"


# --- running the CLI ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _settings_from_the_file_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment wins over the settings file: keep it out of these settings."""
    for name in SETTINGS_NAMES:
        monkeypatch.delenv(name, raising=False)


def settings_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / f"settings-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")
    return path


def storage_at(base: str) -> str:
    """A connection string whose blob, queue and table endpoints are all at `base`."""
    endpoint = f"{base}/{ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint};QueueEndpoint={endpoint};TableEndpoint={endpoint};"
    )


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str, float]:
    capsys.readouterr()
    started = time.monotonic()
    code = main([str(a) for a in args])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    return code, out, err, elapsed


def one_error_line(code: int, err: str, elapsed: float, *words: str) -> str:
    assert "Traceback" not in err, err
    assert code == 1, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert KEY not in err
    assert elapsed < BOUND, f"took {elapsed:.1f} s: {lines[0]}"
    return lines[0]


# --- storage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_storage_unreachable(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with bad_endpoint(kind, host="storage") as base:
        settings = settings_file(tmp_path, AzureWebJobsStorage=storage_at(base))
        code, out, err, elapsed = cli(capsys, "runs", "list", "--settings", settings)
    line = one_error_line(
        code, err, elapsed, f"storage is unreachable at {base}/{ACCOUNT} ", SAID[kind]
    )
    assert out == ""
    assert "AzureWebJobsStorage" in line and str(settings) in line
    if kind == "refused":
        assert "start it with `exporter up`" in line


@pytest.mark.parametrize(
    "command",
    [
        ("runs", "show", "20260101T000000-any-0123456789"),
        ("destinations", "list"),
        ("destinations", "show", "any"),
        ("destinations", "test", "any"),
        ("destinations", "remove", "any", "--yes"),
        ("export", "{file}", "--segment", "any"),
    ],
)
def test_every_storage_command_fails_fast_without_storage(
    command: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "people.csv"
    snapshot.write_text("email\nann@example.com\n", encoding="utf-8")
    with bad_endpoint("refused") as base:
        settings = settings_file(tmp_path, AzureWebJobsStorage=storage_at(base))
        args = [a.format(file=snapshot) for a in command]
        code, _, err, elapsed = cli(capsys, *args, "--settings", settings)
    one_error_line(code, err, elapsed, "storage is unreachable", "(connection refused)")


# --- SendGrid and Key Vault (storage is Azurite) ---------------------------------------------


def add_destination(
    capsys: pytest.CaptureFixture[str], settings: Path, secret: str
) -> tuple[int, str, str, float]:
    return cli(
        capsys,
        "destinations",
        "add",
        unique_name("unreachable"),
        "--api-key-secret",
        secret,
        "--segment",
        "people",
        "--list-id",
        LIST_ID,
        "--consent-by",
        "test",
        "--settings",
        settings,
    )


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_sendgrid_unreachable(
    kind: str, azurite: AzuriteProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with bad_endpoint(kind, host="sendgrid") as base:
        settings = settings_file(
            tmp_path,
            AzureWebJobsStorage=azurite.connection_string,
            SENDGRID_API_BASE_URL=base,
            SENDGRID_KEY_UNREACHABLE=KEY,
        )
        code, _, err, elapsed = add_destination(capsys, settings, "SENDGRID_KEY_UNREACHABLE")
    line = one_error_line(code, err, elapsed, f"SendGrid is unreachable at {base} ", SAID[kind])
    assert "SENDGRID_API_BASE_URL" in line
    assert "key" not in line.lower()  # not blamed


@pytest.mark.parametrize("kind", KINDS)
def test_key_vault_unreachable(
    kind: str, azurite: AzuriteProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with bad_endpoint(kind, scheme="https", host="vault") as base:
        settings = settings_file(
            tmp_path, AzureWebJobsStorage=azurite.connection_string, KEY_VAULT_URI=base
        )
        code, _, err, elapsed = add_destination(capsys, settings, "SENDGRID-KEY-UNREACHABLE")
    line = one_error_line(code, err, elapsed, f"Key Vault is unreachable at {base} ", SAID[kind])
    assert "KEY_VAULT_URI" in line


def test_destinations_test_does_not_blame_the_key_for_an_unreachable_sendgrid(
    azurite: AzuriteProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name("unreachable-test")
    values = {"AzureWebJobsStorage": azurite.connection_string, "SENDGRID_KEY_UNREACHABLE": KEY}
    services_from_env(values).destinations.put(
        Destination(
            name=name,
            display_name=name,
            list_id=LIST_ID,
            api_key_secret="SENDGRID_KEY_UNREACHABLE",
            segments=["people"],
            consent=Consent(accepted_by="test", accepted_at=datetime.now(UTC)),
        )
    )
    with bad_endpoint("refused") as base:
        settings = settings_file(tmp_path, SENDGRID_API_BASE_URL=base, **values)
        code, out, err, elapsed = cli(capsys, "destinations", "test", name, "--settings", settings)
        json_code, json_out, _, _ = cli(
            capsys, "destinations", "test", name, "--json", "--settings", settings
        )
    assert code == 1 and json_code == 1, (out, err)
    assert err == "" and elapsed < BOUND
    lines = out.splitlines()
    assert lines[0].startswith("FAIL sendgrid"), out
    assert f"unreachable at {base} (connection refused)" in lines[0]
    assert "SENDGRID_API_BASE_URL" in lines[0]
    checks = {line.split()[1]: line for line in lines}
    for check in ("api_key", "list", "custom_fields"):
        assert "not checked: SendGrid unreachable" in checks[check], out
    assert "did not work" not in out and "refused the API key" not in out
    assert "within the timeout" not in out
    report = json.loads(json_out)
    assert [c["name"] for c in report["checks"]] == ["sendgrid", "api_key", "list", "custom_fields"]
    assert report["ok"] is False
