"""Run the SendGrid sandbox as a subprocess for tests, and drive its control endpoints.

Used by the sandbox's own tests and by the SendGrid client's tests: keep this API stable.
Only the standard library talks to the sandbox here, so a bug in our client cannot hide here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.support.server import ServerProcess

_LISTENING = re.compile(r"sandbox listening on (http://\S+)")


class SandboxError(RuntimeError):
    """The sandbox did not start, or a control call failed; carries its recent output."""


class SandboxProcess(ServerProcess):
    """A running sandbox: `url` for the client under test, control calls for the test; stopped
    by PID (`stop()`: SIGTERM, wait up to 5 s, then kill; safe to call more than once)."""

    error = SandboxError

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            "the sandbox",
            "exporter.local.sandbox",
            ["--job-delay", "0.05", *args],
            ready=_LISTENING,
            env_prefix="SANDBOX_",
            env=env,
        )
        self.url = self.match.group(1)
        self.control_url = self.url

    def faults(self, **changes: float) -> dict[str, Any]:
        """Change faults (error_rate, throttle_rate, latency_ms, drop_rate, contact_error_rate,
        job_fail_rate, job_delay, rate_limit, rate_window, export_delay, export_fail_rate,
        list_lag, lose_rate); returns the whole new set.

        drop_rate closes the connection before the request is handled (nothing changes);
        lose_rate after it is handled (it took effect, the answer is lost); list_lag delays
        list membership changes (joins by upsert jobs, removals) in counts, members, contacts'
        `list_ids` and exports; export_delay is how long an export stays pending."""
        result: dict[str, Any] = self._control("POST", "/__sandbox/faults", changes)
        return result

    def reset(self) -> None:
        """Clear all state, counters and rate windows; faults back to the startup values."""
        self._control("POST", "/__sandbox/reset", {})

    def state(self) -> dict[str, Any]:
        """{"lists": [{"id", "name", "contact_count"}], "contacts": n, "jobs": {status: n},
        "exports": {status: n}, "pending_list_changes": n, "custom_fields": [...],
        "faults": {...}, "seed", "api_key_required"}."""
        result: dict[str, Any] = self._control("GET", "/__sandbox/state")
        return result

    def list_members(self, list_id: str) -> list[dict[str, Any]]:
        """The list's members as {"email", fields..., "custom_fields" by name}, by email."""
        result: list[dict[str, Any]] = self._control("GET", f"/__sandbox/lists/{list_id}/contacts")
        return result

    def requests(self) -> dict[str, int]:
        """Counts of /v3 requests and export file downloads by "METHOD /path-template STATUS",
        for example {"PUT /v3/marketing/contacts 202": 3, "PUT /v3/marketing/contacts dropped": 1,
        "POST /v3/marketing/contacts/exports lost": 1,
        "GET /__sandbox/export-files/{id}/{n} 200": 2}."""
        result: dict[str, int] = self._control("GET", "/__sandbox/requests")
        return result


def start_sandbox(*args: str, env: Mapping[str, str] | None = None) -> SandboxProcess:
    """Start `python -m exporter.local.sandbox --port 0 --job-delay 0.05 *args` and wait for it.

    Later flags win, so `args` can override the job delay. `env` adds variables (such as
    SANDBOX_API_KEY); SANDBOX_* variables of the calling shell are not inherited.
    """
    return SandboxProcess(*args, env=env)
