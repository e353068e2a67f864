"""The local stack: Azurite, the SendGrid sandbox and the local Functions host, run together.

Each part is a child process that this module starts and stops by its PID (never by name), so
`python -m exporter up`, the demo and the end-to-end tests leave nothing behind, also on Ctrl-C or
failure. The host runs as its own process, so a test can kill it mid-batch like a crashed worker.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit

from exporter.local.azurite import AzuriteProcess, ensure_installed, start_azurite
from exporter.local.process import Child

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
START_TIMEOUT: Final = 60.0


class Stack:
    """Azurite + sandbox + host. Use as a context manager; `settings` are the app settings the
    host runs with (and that a client in this process can use to reach the same storage)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        root: Path = REPO_ROOT,
        fixed_ports: bool = False,
        sandbox_args: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
        echo: bool = False,
    ) -> None:
        self.root = root
        self.data_dir = data_dir
        self.fixed_ports = fixed_ports
        self.sandbox_args = list(sandbox_args)
        self.extra_settings = dict(settings or {})
        self.echo = echo
        self.azurite: AzuriteProcess | None = None
        self.sandbox: Child | None = None
        self.host: Child | None = None
        self.settings: dict[str, str] = {}
        self.sandbox_url = ""

    def start(self) -> Self:
        """Start every part; when one does not start (`ChildError`, `AzuriteError`), stop what
        did and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        ensure_installed(self.root)
        ports = (10000, 10001, 10002) if self.fixed_ports else (0, 0, 0)
        self.azurite = start_azurite(
            self.data_dir / "azurite", blob_port=ports[0], queue_port=ports[1], table_port=ports[2]
        )
        self.sandbox = self._start_sandbox(3030 if self.fixed_ports else 0)
        self.sandbox_url = self.sandbox.match.group(1)
        self.settings = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": self.azurite.connection_string,
            "SENDGRID_API_BASE_URL": self.sandbox_url,
            "REFRESH_SCHEDULE": "0 0 2 * * *",
            "KEY_VAULT_URI": "",
            # The sandbox applies changes at once (unless asked to lag): look at a run's list
            # a second after its jobs settle, and again 3 s after a difference (SendGrid: 60/300).
            "VERIFY_DELAY_SECONDS": "1",
            "VERIFY_LAG_SECONDS": "3",
            **self.extra_settings,
        }
        self.start_host()

    def start_host(self) -> Child:
        """(Re)start the Functions host against the running Azurite and sandbox."""
        http_port = "7071" if self.fixed_ports else "0"
        self.host = Child(
            "host",
            [
                sys.executable,
                "-m",
                "exporter.local.host",
                "--app-dir",
                str(self.root),
                "--http-port",
                http_port,
            ],
            # As in Azure (an app setting: see infra/ and the README): two malloc arenas, not
            # eight per core, so memory a worker thread freed is reused by the next one.
            env={"MALLOC_ARENA_MAX": "2", **os.environ, **self.settings},
            cwd=self.root,
            ready=re.compile(r"host started"),
            timeout=START_TIMEOUT,
            echo=self.echo,
        )
        return self.host

    def _start_sandbox(self, port: int) -> Child:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        return Child(
            "sandbox",
            [
                sys.executable,
                "-m",
                "exporter.local.sandbox",
                "--port",
                str(port),
                *self.sandbox_args,
            ],
            env=base_env,
            cwd=self.root,
            ready=re.compile(r"sandbox listening on (\S+)"),
            timeout=START_TIMEOUT,
            echo=self.echo,
        )

    def restart_sandbox(self) -> Child:
        """Stop the sandbox (by its PID) and start a new, empty one on the same port with the
        same arguments, as when SendGrid loses everything: `sandbox_url` and the host's
        settings stay valid. Faults changed at runtime are back to the startup arguments."""
        if self.sandbox is None:
            raise RuntimeError("the stack has not started a sandbox")
        port = urlsplit(self.sandbox_url).port
        if port is None:
            raise RuntimeError(f"no port in the sandbox's URL {self.sandbox_url!r}")
        self.sandbox.stop()
        self.sandbox = self._start_sandbox(port)
        return self.sandbox

    def stop(self) -> None:
        """Stop the host, the sandbox and Azurite, each by its PID (idempotent)."""
        for child in (self.host, self.sandbox):
            if child is not None:
                child.stop()
        if self.azurite is not None:
            self.azurite.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
