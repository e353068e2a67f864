"""Run the SendGrid sandbox as a subprocess for tests, and drive its control endpoints.

Used by the sandbox's own tests and by the SendGrid client's tests: keep this API stable.
Only the standard library talks to the sandbox here, so a bug in our client cannot hide here.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import IO, Any, Self

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
_LISTENING = re.compile(r"sandbox listening on (http://\S+)")


class SandboxError(RuntimeError):
    """The sandbox did not start, or a control call failed; carries its recent output."""


class SandboxProcess:
    """A running sandbox: `url` for the client under test, control calls for the test."""

    def __init__(
        self,
        process: subprocess.Popen[str],
        url: str,
        output: deque[str],
        pumps: list[threading.Thread],
    ) -> None:
        self.process = process
        self.url = url
        self._output = output
        self._pumps = pumps

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """The last lines the sandbox wrote (its request log), for failure messages."""
        return "\n".join(self._output)

    def faults(self, **changes: float) -> dict[str, Any]:
        """Change faults (error_rate, throttle_rate, latency_ms, drop_rate, contact_error_rate,
        job_fail_rate, job_delay, rate_limit, rate_window); returns the whole new set."""
        result: dict[str, Any] = self._control("POST", "/__sandbox/faults", changes)
        return result

    def reset(self) -> None:
        """Clear all state, counters and rate windows; faults back to the startup values."""
        self._control("POST", "/__sandbox/reset", {})

    def state(self) -> dict[str, Any]:
        """{"lists": [{"id", "name", "contact_count"}], "contacts": n, "jobs": {status: n},
        "custom_fields": [...], "faults": {...}, "seed", "api_key_required"}."""
        result: dict[str, Any] = self._control("GET", "/__sandbox/state")
        return result

    def list_members(self, list_id: str) -> list[dict[str, Any]]:
        """The list's members as {"email", fields..., "custom_fields" by name}, by email."""
        result: list[dict[str, Any]] = self._control("GET", f"/__sandbox/lists/{list_id}/contacts")
        return result

    def requests(self) -> dict[str, int]:
        """Counts of /v3 requests by "METHOD /path-template STATUS", for example
        {"PUT /v3/marketing/contacts 202": 3, "PUT /v3/marketing/contacts dropped": 1}."""
        result: dict[str, int] = self._control("GET", "/__sandbox/requests")
        return result

    def stop(self) -> None:
        """Terminate (SIGTERM), wait up to 5 s, then kill; safe to call more than once."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pump in self._pumps:  # they end at EOF, now that the process has exited
            pump.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise SandboxError(f"{method} {path} -> {exc.code}: {detail}") from exc
        except OSError as exc:
            raise SandboxError(f"{method} {path} failed: {exc}\n{self.output()}") from exc


def _pump(stream: IO[str], output: deque[str], lines: queue.Queue[str] | None) -> None:
    """Keep reading so the sandbox never blocks on a full pipe; remember the last lines."""
    for line in stream:
        output.append(line.rstrip("\n"))
        if lines is not None:
            lines.put(line)
    if lines is not None:
        lines.put("")  # end of output: the process has exited


def start_sandbox(*args: str, env: dict[str, str] | None = None) -> SandboxProcess:
    """Start `python -m exporter.local.sandbox --port 0 --job-delay 0.05 *args` and wait for it.

    Later flags win, so `args` can override the job delay. `env` adds variables (such as
    SANDBOX_API_KEY); SANDBOX_* variables of the calling shell are not inherited.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    child_env.update(env or {})
    command = [
        sys.executable,
        "-m",
        "exporter.local.sandbox",
        "--port",
        "0",
        "--job-delay",
        "0.05",
        *args,
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=child_env,
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
    sandbox = SandboxProcess(process, "", output, pumps)
    try:
        line = lines.get(timeout=START_TIMEOUT)
    except queue.Empty:
        sandbox.stop()
        raise SandboxError(
            f"the sandbox did not start within {START_TIMEOUT:.0f} s:\n{sandbox.output()}"
        ) from None
    match = _LISTENING.fullmatch(line.strip())
    if match is None:
        sandbox.stop()
        what = f"printed {line!r} first" if line else f"exited with {process.returncode}"
        raise SandboxError(f"the sandbox {what}:\n{sandbox.output()}")
    sandbox.url = match.group(1)
    return sandbox
