"""What a page handler gets: the services, the request, who is signed in, the CSRF token, and
how to answer (a page, JSON, a redirect)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.console.auth import Principal
from exporter.console.http import Request, Response
from exporter.console.render import render, url
from exporter.flow.services import Services


@dataclass
class Context:
    svc: Services
    request: Request
    principal: Principal | None
    """None only on the public routes (sign-in, static files)."""
    csrf_token: str
    settings: Mapping[str, str] = field(default_factory=dict)
    now: float = 0.0
    """Seconds since the epoch, as the dispatcher took it (tests fix it)."""

    @property
    def user(self) -> Principal:
        """The signed-in principal (every route but the public ones has one)."""
        if self.principal is None:
            raise RuntimeError("no principal on a route that needs one")
        return self.principal

    def render(self, template: str, *, http_status: int = 200, **values: Any) -> Response:
        """A page: the template with `values`, plus what every page shows (who is signed
        in, the CSRF token for its forms, the current path for the navigation); `http_status`
        for a page that answers an error (a form shown again with what was wrong)."""
        page = {
            "principal": self.principal,
            "csrf": self.csrf_token,
            "path": self.request.path,
            **values,
        }
        return Response.html(render(template, page), http_status)

    def json(self, value: Any, status: int = 200) -> Response:
        return Response.json(value, status)

    def redirect(self, path: str) -> Response:
        """303 See Other to a console path (`/destinations/x`)."""
        return Response.redirect(url(path))
