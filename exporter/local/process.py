"""Child processes of the local stack and the tests, and the foreground loop of the local servers.

A child's stdout and stderr share one pipe that a thread keeps reading, so the child never blocks
on a full pipe and a failure can show its last lines. It counts as started once it prints a line
matching a pattern, and it is stopped by its PID (SIGTERM, wait, SIGKILL), never by name, so
other instances on the machine are left alone. The servers started this way (the sandbox, the
Key Vault stand-in, the local host) run `serve_until_signal`, so SIGTERM stops them cleanly.
"""

from __future__ import annotations

import logging
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final, Self

OUTPUT_LINES: Final = 200
STOP_TIMEOUT: Final = 10.0
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ChildError(RuntimeError):
    """A child exited, or did not print its ready line in time; it has been stopped, and the
    message ends with its last output."""


def stop_process(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM by PID, wait up to `timeout` s, then SIGKILL and wait as long again; nothing
    when it has exited already, so it is safe to call more than once."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class Child:
    """A child process whose output is kept (the last `OUTPUT_LINES` lines) and optionally
    echoed; constructed once the child printed a line in which `ready` is found (`match`)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        ready: re.Pattern[str],
        timeout: float,
        echo: bool = False,
        stop_timeout: float = STOP_TIMEOUT,
        notice: re.Pattern[str] | None = None,
    ) -> None:
        """`notice`: lines in which it is found are shown (on stderr) even without `echo`."""
        self.name = name
        self.stop_timeout = stop_timeout
        self._echo = echo
        self._notice = notice
        self._output: deque[str] = deque(maxlen=OUTPUT_LINES)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._waiting = True
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), name=f"{name}-output", daemon=True
        )
        try:
            self._reader.start()
            self.match = self._wait_for(ready, timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        """The last lines the child wrote, for failure messages."""
        return "\n".join(self._output)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as when a worker machine dies: no clean-up runs in the child."""
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=10)
        self._close()

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM by PID, wait `timeout` s (default `stop_timeout`), then SIGKILL; safe to call
        more than once."""
        stop_process(self.process, self.stop_timeout if timeout is None else timeout)
        self._close()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._output.append(line.rstrip("\n"))
            if self._waiting:
                self._lines.put(line)
            if self._echo or (self._notice is not None and self._notice.search(line)):
                sys.stderr.write(f"[{self.name}] {line}")
        self._lines.put(None)  # the end of its output: the child has exited

    def _wait_for(self, ready: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        line: str | None = ""
        while line is not None and (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            found = None if line is None else ready.search(line)
            if found:
                self._waiting = False
                return found
        self.stop()
        why = (
            f"exited with code {self.process.returncode}"
            if line is None
            else f"did not start within {timeout:.0f} s"
        )
        raise ChildError(f"{self.name} {why}; its last output:\n{self.output()}")

    def _close(self) -> None:
        """Let the reader reach the end of the output, then close the pipe (unless something
        the child started still holds it open)."""
        if self._reader.is_alive():
            self._reader.join(timeout=5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()


def configure_logging(level: int | str) -> None:
    """Log lines to stderr (stdout is for the line a parent process waits for)."""
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)


def serve_until_signal(
    start: Callable[[], object],
    stop: Callable[[], object],
    banner: Callable[[], str],
    *,
    poll: float = 1.0,
) -> None:
    """`start()`, print `banner()` (the line a parent process waits for), then wait for SIGTERM
    or SIGINT and `stop()`. Nothing is stopped when `start` raises: it cleans up after itself."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start()
    try:
        print(banner(), flush=True)
        while not stopping.wait(poll):
            pass
    finally:
        stop()
