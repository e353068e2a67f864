"""The console's routes and `dispatch`: who is signed in, CSRF, the handler, error pages,
security headers on every answer.

A page module registers its handlers with `@route("GET", "/runs/{run_id}")`; a handler takes
the `Context` and the path's parameters and returns a `Response`. The administration's typed
errors become pages (or JSON for `.json` paths) with the status the HTTP API gives them: 400
invalid input, 404 unknown, 409 conflict, 413 too large, 502 SendGrid refused the key or list,
503 SendGrid (or Key Vault, or storage) unreachable or busy.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from exporter.admin.errors import (
    ConflictError,
    NotFoundError,
    RemovalIncomplete,
    SendGridRefused,
    TooLarge,
)
from exporter.console import auth
from exporter.console.context import Context
from exporter.console.http import Request, Response
from exporter.console.render import render, url
from exporter.core.errors import InputError, Unreachable
from exporter.core.redact import mask_emails
from exporter.flow.services import Services
from exporter.ports.secrets import SecretUnavailable
from exporter.ports.sendgrid import RateLimited, TransientError

log = logging.getLogger("exporter.console")

Handler = Callable[..., Response]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_PARAMETER: Final = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler
    public: bool
    """Needs no signed-in principal (the sign-in page, static files)."""


_ROUTES: list[Route] = []


def route(method: str, pattern: str, *, public: bool = False) -> Callable[[Handler], Handler]:
    """Register `handler(ctx, **params) -> Response` for `method` on `pattern`
    (`/runs/{run_id}`: a parameter is one path segment)."""

    def register(handler: Handler) -> Handler:
        regex = re.compile(
            "".join(
                f"(?P<{part[1:-1]}>[^/]+)" if _PARAMETER.fullmatch(part) else re.escape(part)
                for part in re.split(r"(\{[a-z_][a-z0-9_]*\})", pattern)
            )
        )
        _ROUTES.append(Route(method.upper(), pattern, regex, handler, public))
        return handler

    return register


def routes() -> list[Route]:
    _load_pages()
    return list(_ROUTES)


def _load_pages() -> None:
    # The pages register themselves on import; they import this module, so not at its top.
    importlib.import_module("exporter.console.pages")


def dispatch(
    svc: Services, request: Request, settings: Mapping[str, str], *, now: float | None = None
) -> Response:
    """Answer one console request (see the module's docstring)."""
    _load_pages()
    now = time.time() if now is None else now
    path = request.path.rstrip("/") or "/"
    method = "GET" if request.method.upper() == "HEAD" else request.method.upper()
    try:
        settings_ = auth.auth_settings(settings)
    except auth.ConsoleConfigError as exc:
        return _finish(request, _error(request, 500, "The console is not configured", str(exc)))
    found, allowed = _match(method, path)
    if found is None:
        if allowed:
            refused = _error(request, 405, "Method not allowed", "this page takes no such request")
            refused.headers["Allow"] = ", ".join(sorted(allowed))
            return _finish(request, refused)
        return _finish(request, _error(request, 404, "Not found", "there is no such page"))
    handler, params, public = found
    answer = _authorised(
        svc,
        request=request,
        settings_=settings_,
        settings=settings,
        now=now,
        public=public,
        method=method,
    )
    if isinstance(answer, Response):
        return _finish(request, answer)
    ctx, set_cookie = answer
    try:
        response = handler(ctx, **params)
    except Exception as exc:  # every error becomes a page, never a traceback
        response = _failure(request, exc, ctx.principal, ctx.csrf_token)
    if set_cookie and "Set-Cookie" not in response.headers:
        response.headers["Set-Cookie"] = set_cookie
    return _finish(request, response)


def _match(method: str, path: str) -> tuple[tuple[Handler, dict[str, str], bool] | None, set[str]]:
    allowed: set[str] = set()
    for candidate in _ROUTES:
        found = candidate.regex.fullmatch(path)
        if found is None:
            continue
        if candidate.method == method:
            return (candidate.handler, found.groupdict(), candidate.public), allowed
        allowed.add(candidate.method)
    return None, allowed


def _authorised(
    svc: Services,
    *,
    request: Request,
    settings_: auth.AuthSettings,
    settings: Mapping[str, str],
    now: float,
    public: bool,
    method: str,
) -> Response | tuple[Context, str | None]:
    """The handler's context (and a cookie to set), or the answer that refuses the request."""
    principal: auth.Principal | None = None
    csrf: str | None = None
    set_cookie: str | None = None
    if settings_.mode == "entra":
        found = auth.entra_principal(settings_, request)
        if isinstance(found, auth.Refusal):
            if found.sign_in and not public and method == "GET" and not request.wants_json():
                return Response.redirect(auth.platform_sign_in(url(request.path)))
            if not public:
                return _error(request, 403, "Access refused", found.reason)
        else:
            principal = found
        csrf = request.cookies.get(auth.CSRF_COOKIE, "")
        if not auth.valid_csrf_cookie(csrf):
            csrf = auth.new_csrf()
            set_cookie = auth.csrf_cookie(csrf)
    else:
        session = auth.read_session(settings_, request.cookies.get(auth.SESSION_COOKIE, ""), now)
        if session is not None:
            principal, csrf = session.principal, session.csrf
        elif not public:
            return _sign_in_first(request, method)
    if method in auth.UNSAFE_METHODS:
        problem = auth.csrf_problem(request, None if principal is None else csrf)
        if problem is not None:
            log.info("console refused a %s to %s: CSRF check failed", method, request.path)
            return _error(request, 403, "Request refused", problem)
    return Context(svc, request, principal, csrf or "", settings, now), set_cookie


def _sign_in_first(request: Request, method: str) -> Response:
    if request.wants_json() or method != "GET":
        return Response.json({"error": "sign in first: no session, or it expired"}, 401)
    target = request.path if request.path.startswith("/") else "/"
    return Response.redirect(url("/sign-in") + "?" + urlencode({"next": target}))


def status_of(exc: BaseException) -> tuple[int, str] | None:
    """The status and title an expected error answers with (as the HTTP API maps it), or None
    for anything else (a bug: 500, logged)."""
    if isinstance(exc, NotFoundError):
        return 404, "Not found"
    if isinstance(exc, ConflictError):
        return 409, "Conflict"
    if isinstance(exc, TooLarge):
        return 413, "Too large"
    if isinstance(exc, InputError):
        return 400, "Invalid request"
    if isinstance(exc, SendGridRefused):
        return 502, "SendGrid refused"
    if isinstance(exc, RateLimited):
        return 503, "SendGrid is busy"
    if isinstance(exc, (TransientError, Unreachable, SecretUnavailable)):
        return 503, "Unavailable"
    if isinstance(exc, RemovalIncomplete):
        return 503, "Removal incomplete"
    return None


def _failure(
    request: Request, exc: Exception, principal: auth.Principal | None = None, csrf: str = ""
) -> Response:
    """An exception as a page (or JSON) with the status the HTTP API gives it."""
    message = mask_emails(str(exc))
    headers: dict[str, str] = {}
    known = status_of(exc)
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif isinstance(exc, RemovalIncomplete):
        headers["Retry-After"] = "5"
    if known is not None:
        status, title = known
    else:
        log.error(
            "console request %s %s failed: %s: %s",
            request.method,
            request.path,
            type(exc).__name__,
            message,
        )
        status, title = 500, "Something went wrong"
        message = "the console could not answer this request; the app's log says why"
    if status < 500:
        log.info("console answered %s: %s", status, message)
    answer = _error(request, status, title, message, principal=principal, csrf=csrf)
    answer.headers.update(headers)
    return answer


def _error(
    request: Request,
    status: int,
    title: str,
    message: str,
    *,
    principal: auth.Principal | None = None,
    csrf: str = "",
) -> Response:
    if request.wants_json():
        return Response.json({"error": message}, status)
    values = {"title": title, "message": message, "status": status, "principal": principal}
    page = render("error.html", values | {"csrf": csrf, "path": request.path})
    return Response.html(page, status)


def _finish(request: Request, response: Response) -> Response:
    """Security headers on every answer; pages and JSON are never cached."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    if request.method.upper() == "HEAD":
        response.body = b""
    return response
