"""Run the Key Vault stand-in as a subprocess for tests, and drive its control endpoints.

Only the standard library talks to the stand-in here (control calls go to the authority host,
`localhost`, trusting the stand-in's CA), so a bug in the code under test cannot hide here.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

_LISTENING = re.compile(
    r"keyvault listening on (?P<vault>https://\S+) authority=(?P<authority>https://\S+) "
    r"tenant=(?P<tenant>\S+) ca=(?P<ca>.+)"
)


class KeyVaultError(RuntimeError):
    """The stand-in did not start, or a control call failed; carries its recent output."""


class KeyVaultProcess(ServerProcess):
    """A running stand-in: `vault_url`, `authority`, `tenant` and `ca` for the client under
    test, control calls for the test; stopped by PID (`stop()`: SIGTERM, wait up to 5 s, then
    kill; safe to call more than once)."""

    error = KeyVaultError

    def __init__(self, *args: str, cert_dir: Path | None = None) -> None:
        if cert_dir is not None:
            args = (*args, "--cert-dir", str(cert_dir))
        super().__init__(
            "the Key Vault stand-in",
            "exporter.local.keyvault",
            args,
            ready=_LISTENING,
            env_prefix="KEYVAULT_",
        )
        self.vault_url = self.match["vault"]
        self.authority = self.match["authority"]
        self.tenant = self.match["tenant"]
        self.ca = Path(self.match["ca"])
        self.control_url, self.control_ca = self.authority, self.ca

    def requests(self) -> dict[str, int]:
        """Counts by "METHOD /path STATUS", e.g. {"GET /secrets/key/ 200": 1}."""
        result: dict[str, int] = self._control("GET", "/__keyvault/requests")
        return result

    def vault_calls(self) -> int:
        """How many requests reached the vault's secret endpoints (any status)."""
        return sum(n for key, n in self.requests().items() if " /secrets/" in key)

    def put_secret(self, name: str, value: str) -> str:
        """A new version of `name`, set without a token (seeding); returns the version."""
        result: dict[str, str] = self._control(
            "PUT", f"/__keyvault/secrets/{name}", {"value": value}
        )
        return result["version"]

    def faults(self, *, error_rate: float) -> None:
        """Answer this share of vault requests with 503 (spread evenly)."""
        self._control("POST", "/__keyvault/faults", {"error_rate": error_rate})

    def revoke_tokens(self) -> None:
        """Forget every token issued so far: the vault answers them with 401."""
        self._control("POST", "/__keyvault/revoke-tokens", {})


def start_keyvault(*args: str, cert_dir: Path | None = None) -> KeyVaultProcess:
    """Start `python -m exporter.local.keyvault --port 0 *args` and wait for its listening line.
    KEYVAULT_* variables of the calling shell are not inherited."""
    return KeyVaultProcess(*args, cert_dir=cert_dir)


def resolve_localhost_subdomains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `<name>.localhost` resolve to loopback in this process, as RFC 6761 (6.3) asks of
    resolvers and as systemd-resolved and macOS do; glibc with only /etc/hosts does not.

    The vault must live on a subdomain of its token audience (the SDK checks that the vault's
    host ends with `.<resource domain>`, as `<name>.vault.azure.net` ends with
    `.vault.azure.net`), so `localhost` itself cannot be the vault's host. This stands in for a
    hosts-file entry: everything above name resolution (TLS with SNI and hostname checks, the
    SDK, the credential) runs unchanged.
    """
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
