"""A local server (`python -m exporter.local.<name> --port 0`) run as a child process for tests.

Started through `exporter.local.process.Child`, so it is stopped by its PID (`stop()`, or the end
of a `with` block), also when its start fails. Only the standard library talks to its control
endpoints here, so a bug in the code under test cannot hide here.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from exporter.local.process import Child, ChildError

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class ServerProcess(Child):
    """A running local server and JSON calls to its control endpoints."""

    error: ClassVar[type[RuntimeError]] = RuntimeError
    """What a failed start or control call raises (with the server's recent output)."""

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        ready: re.Pattern[str],
        env_prefix: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start `python -m module --port 0 *args`; variables of the calling shell that start
        with `env_prefix` are not inherited, `env` adds variables."""
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(env_prefix)}
        child_env.update(env or {})
        try:
            super().__init__(
                name,
                [sys.executable, "-m", module, "--port", "0", *args],
                env=child_env,
                cwd=REPO,
                ready=ready,
                timeout=START_TIMEOUT,
                stop_timeout=STOP_TIMEOUT,
            )
        except ChildError as exc:
            raise self.error(str(exc)) from exc
        self.control_url = ""
        self.control_ca: Path | None = None
        """The CA of the control endpoints' certificate (HTTPS); None for plain HTTP."""

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.control_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        context = None
        if self.control_ca is not None:
            context = ssl.create_default_context(cafile=str(self.control_ca))
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise self.error(f"{method} {path} -> {exc.code}: {detail}") from exc
        except OSError as exc:
            raise self.error(f"{method} {path} failed: {exc}\n{self.output()}") from exc
