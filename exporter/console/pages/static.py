"""The console's static files (`/api/console/static/{name}`): a fixed allow-list, read from
the package, cached by the browser for an hour. No asset comes from the internet."""

from __future__ import annotations

from functools import cache
from typing import Final

from exporter.admin.errors import NotFoundError
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.render import STATIC
from exporter.console.router import route

ALLOWED: Final = {
    "console.css": "text/css; charset=utf-8",
    "destinations.js": "text/javascript; charset=utf-8",
    "runs.js": "text/javascript; charset=utf-8",
    "runs.css": "text/css; charset=utf-8",
    "run.js": "text/javascript; charset=utf-8",
    "overview.js": "text/javascript; charset=utf-8",
}


@route("GET", "/static/{name}", public=True)
def static_file(ctx: Context, name: str) -> Response:
    content_type = ALLOWED.get(name)
    body = _read(name) if content_type else None
    if content_type is None or body is None:
        raise NotFoundError(f"no static file {name[:60]!r}")
    return Response(
        200, body, {"Content-Type": content_type, "Cache-Control": "private, max-age=3600"}
    )


@cache
def _read(name: str) -> bytes | None:
    path = STATIC / name
    return path.read_bytes() if path.is_file() else None
