"""Why a service could not be reached, read from exception chains as azure-core, requests and
urllib3 build them (the live cases are in tests/functional/test_cli_unreachable.py)."""

from __future__ import annotations

import socket
import ssl

import pytest
import urllib3
from azure.core.exceptions import (
    AzureError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

from exporter.adapters.connectivity import (
    KeyVaultUnreachable,
    classify,
    detail,
    origin,
    unreachable,
)
from exporter.adapters.sendgrid_transport import SendGridUnreachable
from exporter.core.errors import Unreachable
from exporter.ports.secrets import SecretUnavailable
from exporter.ports.sendgrid import TransientError


def wrapped(inner: BaseException, outer: type[AzureError] = ServiceRequestError) -> AzureError:
    """As azure-core's requests transport raises it: `ServiceRequestError(err, error=err)`
    around the urllib3 error raised from the socket's."""
    middle = urllib3.exceptions.NewConnectionError(None, f"failed: {inner}")  # type: ignore[arg-type]
    middle.__cause__ = inner
    return outer(middle, error=middle)


@pytest.mark.parametrize(
    ("inner", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "refused"),
        (socket.gaierror(-2, "Name or service not known"), "dns"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "tls"),
        (TimeoutError("timed out"), "timeout"),
        (ConnectionResetError(104, "Connection reset by peer"), "other"),
        (OSError(113, "No route to host"), "other"),
    ],
)
def test_the_kind_is_read_from_the_whole_chain(inner: BaseException, kind: str) -> None:
    assert classify(wrapped(inner)) == kind


def test_a_tls_handshake_that_timed_out_is_a_timeout() -> None:
    error = ServiceResponseTimeoutError("Read timed out. (read timeout=5)")
    assert classify(error) == "timeout"
    assert detail(error, "timeout") == "no answer within 5 s"


def test_a_certificate_problem_says_what_the_verification_said() -> None:
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    assert classify(wrapped(cert)) == "tls"
    assert detail(wrapped(cert), "tls") == "self-signed certificate"


def test_the_endpoint_shown_has_no_query_and_no_user() -> None:
    url = "https://user:pw@acct.blob.core.windows.net:443/c/b?sv=2024&sig=SECRET"
    assert origin(url) == "https://acct.blob.core.windows.net:443/c/b"
    assert origin(url, path=False) == "https://acct.blob.core.windows.net:443"


def test_other_failures_stay_retryable_azure_errors() -> None:
    reset = unreachable(
        "storage", "http://x", wrapped(ConnectionResetError(), ServiceResponseError)
    )
    assert isinstance(reset, Unreachable) and isinstance(reset, ServiceResponseError)
    refused = unreachable("storage", "http://x", wrapped(ConnectionRefusedError()))
    assert isinstance(refused, Unreachable) and not isinstance(refused, AzureError)
    assert refused.summary == "storage is unreachable at http://x (connection refused)"


def test_each_adapter_error_keeps_its_family() -> None:
    sendgrid = SendGridUnreachable(
        "http://127.0.0.1:1", "GET /v3/x", wrapped(ConnectionRefusedError())
    )
    assert isinstance(sendgrid, TransientError) and sendgrid.status is None
    assert sendgrid.kind == "refused" and sendgrid.setting == "SENDGRID_API_BASE_URL"
    assert "cannot reach SendGrid at http://127.0.0.1:1 for GET /v3/x" in str(sendgrid)
    vault = KeyVaultUnreachable("https://v.vault.azure.net", "SENDGRID-KEY-A", sendgrid)
    assert isinstance(vault, SecretUnavailable) and vault.kind == "refused"
    assert str(vault).startswith("could not reach Key Vault https://v.vault.azure.net")


def test_another_failure_says_what_the_socket_said() -> None:
    assert detail(wrapped(OSError(113, "No route to host")), "other") == "No route to host"
    assert detail(wrapped(ConnectionResetError()), "other") == "ConnectionResetError"
