"""Faults on demand, and the dice that decide them.

500s, 429s, latency, dropped connections (before the request is handled: nothing changes), lost
answers (after it is handled: it took effect, but the client sees a connection error), errored
contacts, failed jobs, failed exports, and SendGrid's lag (`list_lag`: list membership changes
become visible to counts, members, a contact's `list_ids` and exports only that many seconds
later). The startup values come from flags (see `config`); `/__sandbox/faults` changes them at
runtime; `--seed` makes the dice reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request


@dataclass(frozen=True, slots=True)
class Faults:
    """What the sandbox does to requests and jobs; changeable at runtime via /__sandbox/faults."""

    error_rate: float = 0.0
    throttle_rate: float = 0.0
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    contact_error_rate: float = 0.0
    job_fail_rate: float = 0.0
    job_delay: float = 0.5
    rate_limit: int = 600
    rate_window: float = 60.0
    export_delay: float = 0.5
    """Seconds a contact export stays `pending`."""
    export_fail_rate: float = 0.0
    """Fraction of contact exports that end `failure`."""
    list_lag: float = 0.0
    """Seconds before a list membership change (a join by an upsert job, a removal) is visible."""
    lose_rate: float = 0.0
    """Fraction of /v3 requests handled (they take effect) whose answer is never sent."""

    def __post_init__(self) -> None:
        for name in (
            "error_rate",
            "throttle_rate",
            "drop_rate",
            "contact_error_rate",
            "job_fail_rate",
            "export_fail_rate",
            "lose_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_ms", "job_delay", "export_delay", "list_lag"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied; unknown names or bad values raise `ValueError`, a
        value that is not a number `TypeError`."""
        known = {f.name: f.type for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number")
            if name != "rate_limit":
                values[name] = float(value)
            elif value == int(value):
                values[name] = int(value)
            else:
                raise ValueError("rate_limit must be a whole number")
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DroppedConnection(ConnectionAbortedError):
    """Raised to the WSGI server so it sends nothing (werkzeug treats it as a dropped client).
    `outcome` is "dropped" (before handling) or "lost" (after)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(f"connection closed by the sandbox without an answer ({outcome})")
        self.outcome = outcome


class Dice:
    """The fault dice: seeded for reproducible runs, safe to roll from any thread."""

    def __init__(self, seed: int | None) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def roll(self, rate: float) -> bool:
        """True with probability `rate` (no roll for 0 or 1)."""
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            return self._rng.random() < rate

    def reseed(self) -> None:
        """Back to the sequence of the start."""
        with self._lock:
            self._rng.seed(self._seed)


def drop_connection(request: Request, outcome: str = "dropped") -> None:
    """Read the request (discarding what is left of it), then close the connection without
    a byte of answer, so the client sees a connection error and not a response."""
    try:
        while request.stream.read(1 << 16):
            pass
    except RequestEntityTooLarge:
        pass  # werkzeug drains the rest after the app returns
    sock = request.environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise DroppedConnection(outcome)
