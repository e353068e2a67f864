"""Signing in and out. Locally: the function key, then a signed session cookie (`auth`). With
Microsoft Entra ID the platform signs people in: the sign-in page only leads on, and signing out
is the platform's `/.auth/logout`."""

from __future__ import annotations

import logging

from exporter.console import auth
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.render import url
from exporter.console.router import route

log = logging.getLogger("exporter.console")


@route("GET", "/sign-in", public=True)
def sign_in_page(ctx: Context) -> Response:
    settings = auth.auth_settings(ctx.settings)
    target = safe_next(ctx.request.query.get("next", ""))
    if settings.mode == "entra" or ctx.principal is not None:
        return Response.redirect(url(target))
    return _form(ctx, settings, target, problem="")


@route("POST", "/sign-in", public=True)
def sign_in(ctx: Context) -> Response:
    settings = auth.auth_settings(ctx.settings)
    target = safe_next(ctx.request.value("next"))
    if settings.mode == "entra":
        return Response.redirect(url(target))
    if not auth.key_matches(settings, ctx.request.value("key")):
        log.info("console sign-in refused: not the function key")
        problem = "That is not the function key of this host."
        return _form(ctx, settings, target, problem=problem, status=401)
    token, _ = auth.issue_session(settings, auth.local_principal(), ctx.now)
    log.info("console sign-in: %s", auth.LOCAL_ID)
    answer = Response.redirect(url(target))
    answer.headers["Set-Cookie"] = auth.session_cookie(token)
    return answer


@route("POST", "/sign-out")
def sign_out(ctx: Context) -> Response:
    if ctx.user.mode == "entra":
        return Response.redirect("/.auth/logout?post_logout_redirect_uri=" + url("/"))
    answer = Response.redirect(url("/sign-in"))
    answer.headers["Set-Cookie"] = auth.cleared_session_cookie()
    return answer


def _form(
    ctx: Context, settings: auth.AuthSettings, target: str, *, problem: str, status: int = 200
) -> Response:
    return ctx.render(
        "sign_in.html",
        http_status=status,
        next=target,
        problem=problem,
        configured=settings.secret is not None,
    )


def safe_next(target: str) -> str:
    """Where to go after signing in: a console path, never another site (`//evil`, `/\\evil`,
    a scheme)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(c in target for c in "\r\n\t") or len(target) > 1000:
        return "/"
    return target
