"""The web console's HTTP trigger: every `/api/console/...` request, converted to the
console's own request, answered by `exporter.console.router.dispatch`, converted back.

ANONYMOUS at the Functions level: the console authenticates itself (`exporter.console.auth`:
the local function key, or Microsoft Entra ID through App Service Authentication). A body over
`MAX_BODY_BYTES` is refused before it is parsed.
"""

from __future__ import annotations

import os

import azure.functions as func

import exporter.console.pages  # noqa: F401  # registers the pages' routes
from exporter.admin.requests import MAX_BODY_BYTES
from exporter.console import router
from exporter.console.http import Request, Response, parse_cookies, parse_form
from exporter.triggers import services

bp = func.Blueprint()
METHODS = ["GET", "HEAD", "POST"]


# `{*path}` may be empty: /api/console and /api/console/ land here too.
@bp.route(route="console/{*path}", methods=METHODS, auth_level=func.AuthLevel.ANONYMOUS)
def console(req: func.HttpRequest) -> func.HttpResponse:
    request = to_request(req)
    if request is None:
        answer = Response.html("<!doctype html><title>Too large</title><p>Too large.</p>", 413)
    else:
        answer = router.dispatch(services(), request, os.environ)
    return func.HttpResponse(answer.body, status_code=answer.status, headers=answer.headers)


def to_request(req: func.HttpRequest) -> Request | None:
    """The console's request, or None when the body is over `MAX_BODY_BYTES`."""
    headers = {k.lower(): v for k, v in req.headers.items()}
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        return None
    path = req.route_params.get("path") or ""
    return Request(
        method=req.method.upper(),
        path="/" + path.strip("/"),
        query=dict(req.params.items()),
        headers=headers,
        cookies=parse_cookies(headers.get("cookie", "")),
        form=parse_form(body, headers.get("content-type", "")),
        body=body,
        url=req.url,
    )
