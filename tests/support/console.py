"""The web console driven in-process: requests through `exporter.console.router.dispatch` (what
the HTTP trigger calls), signed in with a real session cookie, POSTs with the session's CSRF
token and a same-origin `Origin`, on any `Services` (the in-memory world of
`tests.support.memory_flow`)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from exporter.console import auth
from exporter.console.http import Request, Response
from exporter.console.router import dispatch
from exporter.flow.services import Services

FUNCTION_KEY: Final = "console-test-function-key-0123456789"
HOST: Final = "127.0.0.1:7071"
ORIGIN: Final = f"http://{HOST}"


@dataclass
class ConsoleClient:
    svc: Services
    settings: dict[str, str] = field(default_factory=dict)
    now: float = field(default_factory=time.time)
    cookie: str = ""
    csrf: str = ""

    @classmethod
    def signed_in(
        cls, svc: Services, settings: Mapping[str, str] | None = None, **options: float
    ) -> ConsoleClient:
        """A client holding the session a sign-in with the function key gives."""
        client = cls(svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY, **(settings or {})}, **options)
        answer = client.post("/sign-in", {"key": FUNCTION_KEY}, csrf=False)
        assert answer.status == 303, answer.text
        client.cookie = session_cookie(answer)
        client.csrf = client.session().csrf
        return client

    def session(self) -> auth.Session:
        found = auth.read_session(auth.auth_settings(self.settings), self.cookie, self.now)
        assert found is not None
        return found

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        form: Mapping[str, str | list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        values = {k: v if isinstance(v, list) else [v] for k, v in (form or {}).items()}
        sent = {"host": HOST, **{k.lower(): v for k, v in (headers or {}).items()}}
        cookies = {auth.SESSION_COOKIE: self.cookie} if self.cookie else {}
        request = Request(
            method=method,
            path=path,
            query=dict(query or {}),
            headers=sent,
            cookies=cookies,
            form=values,
            url=f"{ORIGIN}/api/console{path}",
        )
        return dispatch(self.svc, request, self.settings, now=self.now)

    def get(self, path: str, **query: str) -> Response:
        return self.request("GET", path, query=query)

    def post(
        self,
        path: str,
        form: Mapping[str, str | list[str]] | None = None,
        *,
        csrf: bool = True,
        origin: str | None = ORIGIN,
    ) -> Response:
        values = dict(form or {})
        if csrf:
            values.setdefault("csrf", self.csrf)
        headers = {"Origin": origin} if origin else {}
        return self.request("POST", path, form=values, headers=headers)


def session_cookie(answer: Response) -> str:
    """The session token a response sets."""
    found = re.match(rf"{auth.SESSION_COOKIE}=([^;]*);", answer.headers.get("Set-Cookie", ""))
    assert found, answer.headers
    return found.group(1)


def text(answer: Response) -> str:
    """A page's text without tags, whitespace folded (what a reader sees, roughly)."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", answer.text)).strip())
