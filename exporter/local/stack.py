"""The local stack: Azurite, the SendGrid sandbox and the local Functions host, run together.

Each part is a child process that this module starts and stops by its PID (never by name), so
`python -m exporter up`, the demo and the end-to-end tests leave nothing behind, also on Ctrl-C or
failure. The host runs as its own process, so a test can kill it mid-batch like a crashed worker.

`Stack.for_up` is the stack of `exporter up`, run as a developer rehearses against SendGrid:
the sandbox keeps its state in a file beside Azurite's data (`--state-file`), so lists and
contacts outlive a restart as the storage does (`reset_data` deletes both: `up --fresh`); it
accepts exactly the API keys written in `local.settings.json` (`--keys-from`: the file stands
for the account's keys), so a wrong key gets SendGrid's 401, also one the host gets from the
environment instead; and the host follows that file (API keys and
`AzureWebJobs.<name>.Disabled` apply at once, other changes log "restart `exporter up` to apply
X"). Its own settings (schedule, verification delays, no Key Vault) are defaults the file
overrides; only where storage and SendGrid are (Azurite, the sandbox) is set by the stack. The
other stacks (demo, tests) keep the sandbox in memory, accept any key and set their settings
over the file's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit

from exporter.local.azurite import HOST as LOCALHOST
from exporter.local.azurite import AzuriteProcess, ensure_installed, start_azurite
from exporter.local.process import STOP_TIMEOUT, Child

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
START_TIMEOUT: Final = 60.0
FIXED_PORTS: Final = {"Azurite": (10000, 10001, 10002), "sandbox": (3030,), "host": (7071,)}
DEFAULTS: Final = {
    "REFRESH_SCHEDULE": "0 0 2 * * *",
    "KEY_VAULT_URI": "",
    # The sandbox applies changes at once (unless asked to lag): look at a run's list a second
    # after its jobs settle, and again 3 s after a difference (SendGrid: 60/300).
    "VERIFY_DELAY_SECONDS": "1",
    "VERIFY_LAG_SECONDS": "3",
}
"""The stack's settings besides where storage and SendGrid are."""
SANDBOX_STOP_TIMEOUT: Final = 60.0
"""Time a sandbox that keeps its state gets to save it at stop (a million contacts: ~1 s)."""
UP_RESTART_HINT: Final = "restart `exporter up`"
_NOTICE: Final = re.compile(
    r"restart `exporter up`|settings changed|accepted API keys changed|in force stay"
)
"""Host and sandbox lines shown even when the stack does not echo its parts' output."""


class Stack:
    """Azurite + sandbox + host. Use as a context manager; `settings` are the app settings the
    host runs with (and that a client in this process can use to reach the same storage).

    `settings_file` (a local.settings.json; `for_up`): the host reads and follows it, the
    stack's `DEFAULTS` yield to it, and the sandbox accepts exactly its API keys.
    `keep_sandbox_state`: the sandbox keeps its state in `sandbox_state_file`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        root: Path = REPO_ROOT,
        fixed_ports: bool = False,
        sandbox_args: Sequence[str] = (),
        settings: Mapping[str, str] | None = None,
        echo: bool = False,
        settings_file: Path | None = None,
        keep_sandbox_state: bool = False,
        restart_hint: str = "restart the host",
    ) -> None:
        self.root = root
        self.data_dir = data_dir
        self.fixed_ports = fixed_ports
        self.sandbox_args = list(sandbox_args)
        self.extra_settings = dict(settings or {})
        self.echo = echo
        self.settings_file = settings_file
        self.keep_sandbox_state = keep_sandbox_state
        self.restart_hint = restart_hint
        self.azurite: AzuriteProcess | None = None
        self.sandbox: Child | None = None
        self.host: Child | None = None
        self.settings: dict[str, str] = {}
        self.sandbox_url = ""

    @classmethod
    def for_up(
        cls,
        data_dir: Path,
        *,
        root: Path = REPO_ROOT,
        settings_file: Path | None = None,
        fixed_ports: bool = True,
        echo: bool = False,
    ) -> Stack:
        """The stack of `exporter up` (see the module's docstring); `settings_file` defaults to
        `root`'s local.settings.json."""
        return cls(
            data_dir,
            root=root,
            fixed_ports=fixed_ports,
            echo=echo,
            settings_file=settings_file or root / "local.settings.json",
            keep_sandbox_state=True,
            restart_hint=UP_RESTART_HINT,
        )

    @property
    def azurite_dir(self) -> Path:
        return self.data_dir / "azurite"

    @property
    def sandbox_state_file(self) -> Path:
        return self.data_dir / "sandbox" / "state"

    def reset_data(self) -> list[Path]:
        """Delete Azurite's data and the sandbox's state, together (`up --fresh`); only while
        nothing of this stack runs. Returns what was deleted."""
        deleted = []
        if self.azurite_dir.exists():
            shutil.rmtree(self.azurite_dir)
            deleted.append(self.azurite_dir)
        folder = self.sandbox_state_file.parent
        if folder.is_dir():
            for leftover in folder.glob(f".{self.sandbox_state_file.name}.*.tmp"):
                leftover.unlink(missing_ok=True)
        if self.sandbox_state_file.exists():
            self.sandbox_state_file.unlink()
            deleted.append(self.sandbox_state_file)
        return deleted

    def ports_in_use(self) -> list[tuple[str, int]]:
        """The fixed ports something already listens on (another `up`?); [] without them."""
        if not self.fixed_ports:
            return []
        taken = []
        for part, ports in FIXED_PORTS.items():
            for port in ports:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((LOCALHOST, port), timeout=0.5),
                ):
                    taken.append((part, port))
        return taken

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
        self.settings = {**DEFAULTS, **self._wiring(), **self.extra_settings}
        self.start_host()

    def _wiring(self) -> dict[str, str]:
        """The settings that point the app at this stack: they win over the settings file."""
        assert self.azurite is not None
        return {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": self.azurite.connection_string,
            "SENDGRID_API_BASE_URL": self.sandbox_url,
        }

    def start_host(self) -> Child:
        """(Re)start the Functions host against the running Azurite and sandbox."""
        http_port = "7071" if self.fixed_ports else "0"
        command = [
            sys.executable,
            "-m",
            "exporter.local.host",
            "--app-dir",
            str(self.root),
            "--http-port",
            http_port,
            "--restart-hint",
            self.restart_hint,
        ]
        settings = self.settings
        if self.settings_file is not None:
            if self.settings_file.is_file():
                command += ["--settings", str(self.settings_file)]
            command += [f"--default={name}={value}" for name, value in DEFAULTS.items()]
            settings = {**self._wiring(), **self.extra_settings}
        self.host = Child(
            "host",
            command,
            # As in Azure (an app setting: see infra/ and the README): two malloc arenas, not
            # eight per core, so memory a worker thread freed is reused by the next one.
            env={"MALLOC_ARENA_MAX": "2", **os.environ, **settings},
            cwd=self.root,
            ready=re.compile(r"host started"),
            timeout=START_TIMEOUT,
            echo=self.echo,
            notice=_NOTICE,
        )
        return self.host

    def _start_sandbox(self, port: int) -> Child:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        command = [sys.executable, "-m", "exporter.local.sandbox", "--port", str(port)]
        if self.settings_file is not None:
            command += ["--keys-from", str(self.settings_file)]
        if self.keep_sandbox_state:
            command += ["--state-file", str(self.sandbox_state_file)]
        return Child(
            "sandbox",
            [*command, *self.sandbox_args],
            env=env,
            cwd=self.root,
            ready=re.compile(r"sandbox listening on (\S+)"),
            timeout=START_TIMEOUT,
            echo=self.echo,
            stop_timeout=SANDBOX_STOP_TIMEOUT if self.keep_sandbox_state else STOP_TIMEOUT,
            notice=_NOTICE,
        )

    @property
    def host_url(self) -> str:
        """Where the host's HTTP triggers listen (without the route prefix), "" before start."""
        if self.host is None:
            return ""
        found = re.search(r"HTTP on (http://\S+)", self.host.output())
        return found.group(1) if found else ""

    def sandbox_state(self) -> dict[str, object]:
        """The sandbox's `/__sandbox/state` (lists, contacts, jobs, the key names it accepts)."""
        with urllib.request.urlopen(f"{self.sandbox_url}/__sandbox/state", timeout=10) as answer:
            state: dict[str, object] = json.loads(answer.read())
        return state

    def restart_sandbox(self) -> Child:
        """Stop the sandbox (by its PID) and start a new one on the same port with the same
        arguments: empty, as when SendGrid loses everything, unless it keeps its state
        (`keep_sandbox_state`). `sandbox_url` and the host's settings stay valid. Faults
        changed at runtime are back to the startup arguments."""
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
