"""Why a service could not be reached, told from the exception chain, and the CLI's fail-fast
transport for the Azure SDK clients.

`classify` reads what azure-core (`ServiceRequestError` / `ServiceResponseError` wrapping
requests' and urllib3's errors) and urllib3 (the SendGrid transport) raise, down to the socket:
refused, DNS name not resolved, TLS failure, timeout, or another connection failure
(`exporter.core.errors.UnreachableKind`). The adapters turn it into `Unreachable` (or a subclass
that is also their port's retryable error).

`FailFastTransport` is what the CLI gives the storage and Key Vault clients (`exporter.wiring`):
a refused connection, an unknown host, a failed TLS handshake or a timeout becomes `Unreachable`
at once, without the SDK's retries (a person is waiting; trying again in a second changes none
of them); any other connection failure (a reset, a dropped keep-alive connection) stays an
`AzureError` as well, so the SDK's retry policy tries again, and after its last try the caller
sees that `Unreachable`. The function app does not use it: its clients keep their retry policy.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import urlsplit

import urllib3
from azure.core.exceptions import (
    AzureError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport._requests_basic import (  # typed; the public name is not
    RequestsTransport,
)
from azure.storage.blob import LinearRetry as BlobRetry
from azure.storage.queue import LinearRetry as QueueRetry

from exporter.core.errors import UNREACHABLE_KINDS, Unreachable, UnreachableKind
from exporter.ports.secrets import SecretUnavailable

_MAX_DEPTH: Final = 16

_TLS: Final = (ssl.SSLError, ssl.CertificateError, urllib3.exceptions.SSLError)
_DNS: Final = (socket.gaierror, urllib3.exceptions.NameResolutionError)
_TIMEOUT: Final = (
    TimeoutError,
    urllib3.exceptions.TimeoutError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: `__cause__`, `__context__`, azure-core's `inner_exception`,
    urllib3's `reason`, and exceptions among the arguments (as requests wraps urllib3)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < _MAX_DEPTH:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            current.__cause__,
            current.__context__,
            getattr(current, "inner_exception", None),
            getattr(current, "reason", None),
            *getattr(current, "args", ()),
        ]
        todo.extend(e for e in linked if isinstance(e, BaseException))


def classify(exc: BaseException) -> UnreachableKind:
    """Refused, DNS, TLS, timeout or other, from the whole chain (a TLS error first: it may
    arrive wrapped in a connection error; a handshake that timed out is a timeout)."""
    chain = list(causes(exc))
    if any(isinstance(e, _TLS) for e in chain):
        return "tls"
    if any(isinstance(e, _DNS) for e in chain):
        return "dns"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused"
    # urllib3's NewConnectionError is a ConnectTimeoutError by inheritance only.
    new_connection = urllib3.exceptions.NewConnectionError
    if any(isinstance(e, _TIMEOUT) and not isinstance(e, new_connection) for e in chain):
        return "timeout"
    return "other"


def detail(exc: BaseException, kind: UnreachableKind) -> str:
    """What the network said, short: the TLS reason, the timeout, or what the socket said."""
    chain = list(causes(exc))
    if kind == "tls":
        for e in chain:
            verify = getattr(e, "verify_message", None)
            if isinstance(e, ssl.SSLError) and (verify or e.reason):
                return str(verify or e.reason)
        return ""
    if kind == "timeout":
        for e in chain:  # urllib3 says which: "... (read timeout=8)"
            found = re.search(r"timeout=(\d+(?:\.\d+)?)\)", str(e))
            if found:
                return f"no answer within {float(found.group(1)):g} s"
        return ""
    if kind == "other":  # "No route to host", "Connection reset by peer", "RemoteDisconnected"
        last = chain[-1]
        return last.strerror if isinstance(last, OSError) and last.strerror else type(last).__name__
    return ""


def origin(url: str, *, path: bool = True) -> str:
    """`scheme://host[:port]/path` of a URL (without the path when `path` is false): no query
    (SAS tokens), no user information."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/') if path else ''}"


class _RetryableRequest(Unreachable, ServiceRequestError):
    """Unreachable, and for the SDK's retry policy a connection error it may retry."""


class _RetryableResponse(Unreachable, ServiceResponseError):
    """Unreachable, and for the SDK's retry policy an error after sending it may retry."""


def unreachable(
    service: str, endpoint: str, exc: BaseException, *, setting: str = ""
) -> Unreachable:
    """`Unreachable` for a connection failure `exc`; a reset or a dropped connection (kind
    `other`) also stays the `AzureError` it was, so an SDK retry policy retries it."""
    kind = classify(exc)
    said = detail(exc, kind)
    if kind == "other" and isinstance(exc, ServiceResponseError):
        return _RetryableResponse(service, endpoint, kind, detail=said, setting=setting)
    if kind == "other" and isinstance(exc, AzureError):
        return _RetryableRequest(service, endpoint, kind, detail=said, setting=setting)
    return Unreachable(service, endpoint, kind, detail=said, setting=setting)


class FailFastTransport(RequestsTransport):
    """azure-core's requests transport whose connection failures are `Unreachable` (see the
    module's docstring). `endpoint` is named once the client exists (its URL); until then the
    request's scheme and host stand in."""

    def __init__(self, service: str, *, setting: str = "", endpoint: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.service = service
        self.setting = setting
        self.endpoint = endpoint

    def send(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().send(*args, **kwargs)
        except (ServiceRequestError, ServiceResponseError) as exc:
            where = self.endpoint or origin(str(getattr(args[0], "url", "")), path=False)
            raise unreachable(self.service, where, exc, setting=self.setting) from exc


UPLOAD_BLOCK: Final = 1 << 20
"""The CLI uploads in 1 MiB blocks: urllib3 sends a request's body under the connect timeout,
so a short one needs small blocks (1 MiB in 5 s: any uplink over 2 Mbit/s)."""


class FailFastStorage:
    """The CLI's options for the storage clients (`Storage.from_env(options=...)`): a
    `FailFastTransport` each with short timeouts, two quick retries of what is worth retrying,
    and uploads in `UPLOAD_BLOCK`s. `name_endpoints` names the account's endpoints in its
    errors once the clients exist."""

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, setting: str = "AzureWebJobsStorage"
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.setting = setting
        self.transports: dict[str, FailFastTransport] = {}

    def __call__(self, client: str) -> dict[str, Any]:
        """Keyword arguments for the `blob`, `queue` or `table` service client."""
        transport = FailFastTransport(
            "storage",
            setting=self.setting,
            connection_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            connection_data_block_size=256 * 1024,  # the storage SDK's own
        )
        self.transports[client] = transport
        options: dict[str, Any] = {"transport": transport}
        if client == "blob":
            options["retry_policy"] = BlobRetry(backoff=1, retry_total=2, random_jitter_range=0)
            options["max_single_put_size"] = options["max_block_size"] = UPLOAD_BLOCK
        elif client == "queue":
            options["retry_policy"] = QueueRetry(backoff=1, retry_total=2, random_jitter_range=0)
        else:
            options |= {"retry_total": 2, "retry_backoff_factor": 0.5, "retry_backoff_max": 2}
        return options

    def name_endpoints(self, **urls: str) -> None:
        """`blob=`, `queue=`, `table=`: each client's URL (its query is left out)."""
        for client, url in urls.items():
            if client in self.transports:
                self.transports[client].endpoint = origin(url)


class KeyVaultUnreachable(Unreachable, SecretUnavailable):
    """Key Vault could not be reached: `Unreachable` for the CLI, `SecretUnavailable` (retry
    later; a cached value may serve meanwhile) for everyone else."""

    def __init__(self, vault_url: str, name: str, exc: BaseException) -> None:
        kind = exc.kind if isinstance(exc, Unreachable) else classify(exc)
        said = exc.detail if isinstance(exc, Unreachable) else detail(exc, kind)
        reason = f"{UNREACHABLE_KINDS[kind]}: {said}" if said else UNREACHABLE_KINDS[kind]
        super().__init__(
            "Key Vault",
            vault_url,
            kind,
            detail=said,
            setting="KEY_VAULT_URI",
            message=f"could not reach Key Vault {vault_url} to read secret {name!r} ({reason})",
        )


def key_vault_options(vault_url: str, timeouts: tuple[float, float] | None) -> dict[str, Any]:
    """The Key Vault client's timeouts: the app's (connect 5 s, read 15 s, with the SDK's two
    retries), or with `timeouts` (connect, read: the CLI's) a `FailFastTransport`."""
    if timeouts is None:
        return {"connection_timeout": 5, "read_timeout": 15}
    transport = FailFastTransport(
        "Key Vault",
        setting="KEY_VAULT_URI",
        endpoint=vault_url,
        connection_timeout=timeouts[0],
        read_timeout=timeouts[1],
    )
    return {"transport": transport}
