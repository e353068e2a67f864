"""What a /v3 handler gets (a `Call`) and gives: SendGrid's answers, JSON, and its error shape
(`{"errors": [{"field": ..., "message": ...}]}`, at most 100 errors)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from werkzeug.wrappers import Request, Response

from exporter.local.sandbox.faults import Faults
from exporter.local.sandbox.store import SandboxStore

MAX_ERRORS: Final = 100
"""At most this many errors in one 400 answer."""

Problem = tuple[str | None, str]
"""(field or None, message): one entry of a SendGrid `errors` array."""


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        mimetype="application/json",
        headers=dict(headers or {}),
    )


def errors_response(status: int, problems: Iterable[Problem]) -> Response:
    """SendGrid's error shape; `field` is left out (never null) when there is none."""
    items = [
        {"field": f, "message": m} if f is not None else {"message": m}
        for f, m in list(problems)[:MAX_ERRORS]
    ]
    return json_response(status, {"errors": items})


def error_response(status: int, message: str, field: str | None = None) -> Response:
    return errors_response(status, [(field, message)])


@dataclass(frozen=True, slots=True)
class Call:
    """One /v3 request, validated against the spec, as its handler gets it."""

    request: Request
    params: tuple[str, ...]
    """The path parameters, in order."""
    body: Any
    base: str
    """Scheme and host the client used, no trailing slash: the base of `_metadata` links."""
    store: SandboxStore
    faults: Faults
    wake: Callable[[], None]
    """Wakes the job thread: a job or an export was queued."""


Handler = Callable[[Call], Response]
