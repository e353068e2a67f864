"""Run the Key Vault stand-in as a subprocess for tests, and drive its control endpoints.

Only the standard library talks to the stand-in here (control calls go to the authority host,
`localhost`, trusting the stand-in's CA), so a bug in the code under test cannot hide here.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import IO, Any, Self

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
_LISTENING = re.compile(
    r"keyvault listening on (?P<vault>https://\S+) authority=(?P<authority>https://\S+) "
    r"tenant=(?P<tenant>\S+) ca=(?P<ca>.+)"
)


class KeyVaultError(RuntimeError):
    """The stand-in did not start, or a control call failed; carries its recent output."""


class KeyVaultProcess:
    """A running stand-in: `vault_url`, `authority`, `tenant` and `ca` for the client under
    test, control calls for the test."""

    def __init__(
        self, process: subprocess.Popen[str], output: deque[str], pumps: list[threading.Thread]
    ) -> None:
        self.process = process
        self.vault_url = ""
        self.authority = ""
        self.tenant = ""
        self.ca = Path()
        self._output = output
        self._pumps = pumps

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        """The last lines the stand-in wrote (its request log), for failure messages."""
        return "\n".join(self._output)

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

    def stop(self) -> None:
        """SIGTERM by PID, wait up to 5 s, then kill; safe to call more than once."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pump in self._pumps:
            pump.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.authority + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise KeyVaultError(f"{method} {path} -> {exc.code}: {detail}") from exc
        except OSError as exc:
            raise KeyVaultError(f"{method} {path} failed: {exc}\n{self.output()}") from exc


def _pump(stream: IO[str], output: deque[str], lines: queue.Queue[str] | None) -> None:
    """Keep reading so the stand-in never blocks on a full pipe; remember the last lines."""
    for line in stream:
        output.append(line.rstrip("\n"))
        if lines is not None:
            lines.put(line)
    if lines is not None:
        lines.put("")


def start_keyvault(*args: str, cert_dir: Path | None = None) -> KeyVaultProcess:
    """Start `python -m exporter.local.keyvault --port 0 *args` and wait for its first line.
    KEYVAULT_* variables of the calling shell are not inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    command = [sys.executable, "-m", "exporter.local.keyvault", "--port", "0", *args]
    if cert_dir is not None:
        command += ["--cert-dir", str(cert_dir)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: deque[str] = deque(maxlen=200)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(stream, output, sink), daemon=True)
        for stream, sink in ((process.stdout, lines), (process.stderr, None))
    ]
    for pump in pumps:
        pump.start()
    keyvault = KeyVaultProcess(process, output, pumps)
    try:
        line = lines.get(timeout=START_TIMEOUT)
    except queue.Empty:
        keyvault.stop()
        raise KeyVaultError(
            f"the Key Vault stand-in did not start within {START_TIMEOUT:.0f} s:\n"
            f"{keyvault.output()}"
        ) from None
    match = _LISTENING.fullmatch(line.strip())
    if match is None:
        keyvault.stop()
        what = f"printed {line!r} first" if line else f"exited with {process.returncode}"
        raise KeyVaultError(f"the Key Vault stand-in {what}:\n{keyvault.output()}")
    keyvault.vault_url = match["vault"]
    keyvault.authority = match["authority"]
    keyvault.tenant = match["tenant"]
    keyvault.ca = Path(match["ca"])
    return keyvault


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
