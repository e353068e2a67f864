"""Azurite, the Azure Storage emulator, installed from the repo's package.json and run by PID.

The local stack and the tests need blob, queue and table storage without an Azure account.
Azurite is an npm package (pinned in package.json to 3.35.0, the last release for Node 20), so it
is installed with npm into `node_modules/` and started as a child process that this module owns:
it is stopped by its PID, never by name, so other Azurite instances on the machine are left alone.

Ports: 0 (the default) lets Azurite bind a free port itself and report it on stdout, which cannot
race with another process the way "find a free port, then start" can. Data goes under the given
folder (the stack uses `.azurite/`, git-ignored), with Azurite's stdout and stderr next to it.
The account is the public development account every Azure tool knows (`devstoreaccount1`);
`AZURITE_ACCOUNTS` is removed from the child's environment so that account always works.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from exporter.local.process import stop_process

DEV_ACCOUNT_NAME: Final = "devstoreaccount1"
# Azurite's documented, public development key: not a secret.
DEV_ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 10.0
_SERVICES: Final = ("Blob", "Queue", "Table")
_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at \S+:(\d+)"
)


class AzuriteError(RuntimeError):
    """Azurite could not be installed or started; the message says what to do about it."""


def azurite_executable(repo_root: Path) -> Path:
    """Where `npm ci` puts the azurite command."""
    name = "azurite.cmd" if os.name == "nt" else "azurite"
    return repo_root / "node_modules" / ".bin" / name


def ensure_installed(repo_root: Path) -> Path:
    """Return the azurite executable, installing package.json's pins with npm if it is missing.

    `npm ci` installs exactly package-lock.json; without a lock file, `npm install` writes one.
    """
    executable = azurite_executable(repo_root)
    if executable.exists():
        return executable
    lock = repo_root / "package-lock.json"
    command = ["npm", "ci" if lock.exists() else "install", "--no-audit", "--no-fund"]
    shown = " ".join(command)
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteError(
            f"Azurite is not installed and npm is not on PATH: install Node.js 20 and npm, "
            f"then run `{shown}` in {repo_root}"
        )
    try:
        result = subprocess.run(
            [npm, *command[1:]],
            cwd=repo_root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise AzuriteError(f"`{shown}` could not run in {repo_root}: {exc}") from exc
    if result.returncode != 0:
        raise AzuriteError(
            f"`{shown}` failed with exit code {result.returncode} in {repo_root}:\n"
            f"{_tail(result.stdout + result.stderr)}"
        )
    if not executable.exists():
        raise AzuriteError(f"`{shown}` succeeded but {executable} is missing: check package.json")
    return executable


class AzuriteProcess:
    """A running Azurite: its PID, ports and connection string; `stop()` ends it by PID."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        data_dir: Path,
        blob_port: int,
        queue_port: int,
        table_port: int,
    ) -> None:
        self._process = process
        self.data_dir = data_dir
        self.blob_port = blob_port
        self.queue_port = queue_port
        self.table_port = table_port

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def connection_string(self) -> str:
        """The development account with explicit endpoints, as Azure SDKs and hosts take it."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT_NAME};"
            f"AccountKey={DEV_ACCOUNT_KEY};"
            f"BlobEndpoint=http://{HOST}:{self.blob_port}/{DEV_ACCOUNT_NAME};"
            f"QueueEndpoint=http://{HOST}:{self.queue_port}/{DEV_ACCOUNT_NAME};"
            f"TableEndpoint=http://{HOST}:{self.table_port}/{DEV_ACCOUNT_NAME};"
        )

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def alive(self) -> bool:
        return self._process.poll() is None

    def stderr_tail(self) -> str:
        """The end of what Azurite wrote to stderr (and stdout), for error messages."""
        return _read_tail(self.data_dir / "azurite.stderr.log") or _read_tail(
            self.data_dir / "azurite.stdout.log"
        )

    def stop(self) -> None:
        """Terminate by PID, wait, kill if it does not exit; safe to call more than once."""
        stop_process(self._process, STOP_TIMEOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_azurite(
    data_dir: Path,
    *,
    blob_port: int = 0,
    queue_port: int = 0,
    table_port: int = 0,
    executable: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> AzuriteProcess:
    """Start Azurite on 127.0.0.1 with its data in `data_dir`; return once all ports accept.

    `executable` defaults to the repo's `node_modules/.bin/azurite` (see `ensure_installed`).
    """
    if executable is None:
        executable = azurite_executable(Path(__file__).resolve().parents[2])
    if not executable.exists():
        raise AzuriteError(f"{executable} is missing: run `npm ci --no-audit --no-fund` first")
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(executable),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--location",
        str(data_dir),
        "--blobHost",
        HOST,
        "--blobPort",
        str(blob_port),
        "--queueHost",
        HOST,
        "--queuePort",
        str(queue_port),
        "--tableHost",
        HOST,
        "--tablePort",
        str(table_port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"}
    stdout_path = data_dir / "azurite.stdout.log"
    stderr_path = data_dir / "azurite.stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env
        )
    azurite = AzuriteProcess(process, data_dir, blob_port, queue_port, table_port)
    try:
        _wait_until_listening(azurite, stdout_path, timeout)
    except BaseException:
        azurite.stop()
        raise
    return azurite


def _wait_until_listening(azurite: AzuriteProcess, stdout_path: Path, timeout: float) -> None:
    wanted = {"Blob": azurite.blob_port, "Queue": azurite.queue_port, "Table": azurite.table_port}
    deadline = time.monotonic() + timeout
    while True:
        if not azurite.alive():
            raise AzuriteError(
                f"Azurite (pid {azurite.pid}) exited with code {azurite.returncode} "
                f"while starting:\n{azurite.stderr_tail()}"
            )
        if any(port == 0 for port in wanted.values()):
            for service, port in _LISTENING.findall(_read_tail(stdout_path, 64 * 1024)):
                if wanted[service] == 0:
                    wanted[service] = int(port)
        if all(port and _accepts(port) for port in wanted.values()):
            azurite.blob_port = wanted["Blob"]
            azurite.queue_port = wanted["Queue"]
            azurite.table_port = wanted["Table"]
            return
        if time.monotonic() > deadline:
            waiting = ", ".join(s for s in _SERVICES if not wanted[s] or not _accepts(wanted[s]))
            raise AzuriteError(
                f"Azurite (pid {azurite.pid}) did not listen within {timeout:.0f} s "
                f"(still waiting for: {waiting}):\n{azurite.stderr_tail()}"
            )
        time.sleep(0.05)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_tail(path: Path, size: int = 4096) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
