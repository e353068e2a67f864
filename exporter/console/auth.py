"""Who may use the console, and CSRF.

Two modes (setting `CONSOLE_AUTH`; by default `entra` where `WEBSITE_SITE_NAME` says the app
runs in Azure, else `local`):

- `local`: a sign-in with the local function key (`LOCAL_FUNCTION_KEY`, compared in constant
  time) sets the cookie `exporter_console`: a token signed with HMAC-SHA256 (the secret is
  `CONSOLE_SESSION_SECRET`, else derived from the function key, so a new key ends every
  session) holding the principal, its expiry (8 hours) and the session's CSRF nonce. Secure,
  HttpOnly, SameSite=Strict, Path=/api/console (browsers keep Secure cookies on
  http://127.0.0.1 and localhost: loopback is a secure context).
- `entra`: App Service Authentication (Microsoft Entra ID) signs people in before a request
  reaches the app, and passes the principal in `X-MS-CLIENT-PRINCIPAL` (base64 JSON). The
  platform strips that header from what clients send only when it is enabled, so a request is
  refused unless `WEBSITE_AUTH_ENABLED` is true, the header is there and well formed, the IdP is
  `aad`, and the principal holds the app role `CONSOLE_ROLE` (default `Exporter.Admin`). The
  CSRF nonce lives in the cookie `exporter_console_csrf` (double submit).

Every state-changing request carries the CSRF token (form field `csrf` or header
`X-CSRF-Token`, compared in constant time) and an `Origin` (else `Referer`) naming the host the
request was sent to. No secret is ever logged or shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlencode, urlsplit

from exporter.console.http import Request

Mode = Literal["local", "entra"]

SESSION_COOKIE: Final = "exporter_console"
CSRF_COOKIE: Final = "exporter_console_csrf"
COOKIE_PATH: Final = "/api/console"
SESSION_SECONDS: Final = 8 * 3600
LOCAL_ID: Final = "local:function-key"
LOCAL_NAME: Final = "local administrator"
DEFAULT_ROLE: Final = "Exporter.Admin"
MAX_COOKIE: Final = 4096
MAX_PRINCIPAL_HEADER: Final = 64 << 10
"""Bytes of `X-MS-CLIENT-PRINCIPAL` read at most (a principal with many groups is large)."""
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_REFUSED: Final = "the form expired or came from elsewhere: reload the page and try again"

_SESSION_CONTEXT: Final = b"exporter console session v1"
_ROLE_CLAIMS: Final = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_NAME_CLAIMS: Final = (
    "preferred_username",
    "name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
)
_ID_CLAIMS: Final = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")


class ConsoleConfigError(Exception):
    """A console setting is wrong: the console refuses every request, saying which."""


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    name: str
    roles: tuple[str, ...]
    mode: Mode

    @property
    def identity(self) -> str:
        """Who did it, as a record says it (a consent's `accepted_by`): name and id."""
        return f"{self.name} ({self.id})"[:200]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not use the console (403)."""

    reason: str
    sign_in: bool = False
    """Nobody is signed in yet (the platform lets anonymous requests through to the app): a
    page leads to the platform's sign-in instead."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    mode: Mode
    function_key: str
    secret: bytes | None
    """Signs sessions (local mode); None: no function key, so nobody can sign in."""
    role: str
    platform_auth: bool
    """`WEBSITE_AUTH_ENABLED`: App Service Authentication is on (entra mode)."""


def auth_settings(settings: Mapping[str, str]) -> AuthSettings:
    given = settings.get("CONSOLE_AUTH", "").strip().lower()
    if given not in ("", "local", "entra"):
        raise ConsoleConfigError("CONSOLE_AUTH must be local or entra")
    in_azure = bool(settings.get("WEBSITE_SITE_NAME", "").strip())
    mode: Mode = "entra" if given == "entra" or (not given and in_azure) else "local"
    key = settings.get("LOCAL_FUNCTION_KEY", "")
    own = settings.get("CONSOLE_SESSION_SECRET", "")
    secret: bytes | None = None
    if own:
        secret = hashlib.sha256(_SESSION_CONTEXT + b"\0" + own.encode()).digest()
    elif key:
        secret = hmac.new(key.encode(), _SESSION_CONTEXT, hashlib.sha256).digest()
    return AuthSettings(
        mode=mode,
        function_key=key,
        secret=secret,
        role=settings.get("CONSOLE_ROLE", "").strip() or DEFAULT_ROLE,
        platform_auth=settings.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true",
    )


# --- local: the function key and a signed session ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires: int


def key_matches(auth: AuthSettings, given: str) -> bool:
    """Whether `given` is the local function key (constant time; never with no key set)."""
    if not auth.function_key:
        return False
    return hmac.compare_digest(given.encode(), auth.function_key.encode())


def local_principal() -> Principal:
    return Principal(LOCAL_ID, LOCAL_NAME, (), "local")


def issue_session(auth: AuthSettings, principal: Principal, now: float) -> tuple[str, Session]:
    """A signed session token (the cookie's value) and what it holds."""
    if auth.secret is None:
        raise ConsoleConfigError("LOCAL_FUNCTION_KEY is not set: nobody can sign in")
    session = Session(principal, secrets.token_urlsafe(32), int(now) + SESSION_SECONDS)
    payload = {
        "v": 1,
        "sub": principal.id,
        "name": principal.name,
        "exp": session.expires,
        "csrf": session.csrf,
    }
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_sign(auth.secret, body)}", session


def read_session(auth: AuthSettings, token: str, now: float) -> Session | None:
    """The session a token holds, or None: unsigned, signed with another secret, altered,
    expired or malformed."""
    if auth.secret is None or not token or len(token) > MAX_COOKIE:
        return None
    body, sep, signature = token.partition(".")
    if not sep or not hmac.compare_digest(signature.encode(), _sign(auth.secret, body).encode()):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        return None
    expires, csrf = payload.get("exp"), payload.get("csrf")
    sub, name = payload.get("sub"), payload.get("name")
    if not isinstance(expires, int) or expires <= now:
        return None
    if not all(isinstance(v, str) and v for v in (csrf, sub, name)):
        return None
    return Session(Principal(str(sub), str(name), (), "local"), str(csrf), expires)


def session_cookie(value: str, *, max_age: int = SESSION_SECONDS) -> str:
    return _cookie(SESSION_COOKIE, value, max_age)


def cleared_session_cookie() -> str:
    return _cookie(SESSION_COOKIE, "", 0)


def csrf_cookie(value: str) -> str:
    return _cookie(CSRF_COOKIE, value, SESSION_SECONDS)


def _cookie(name: str, value: str, max_age: int) -> str:
    return (
        f"{name}={value}; Max-Age={max_age}; Path={COOKIE_PATH}; Secure; HttpOnly; SameSite=Strict"
    )


def _sign(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- entra: the principal App Service Authentication passes --------------------------------


def entra_principal(auth: AuthSettings, request: Request) -> Principal | Refusal:
    """The signed-in principal the platform vouches for, or why the request is refused."""
    if not auth.platform_auth:
        return Refusal(
            "the request did not come through the platform: App Service Authentication is "
            "not enabled for this app (WEBSITE_AUTH_ENABLED is not true), so no identity in "
            "it can be trusted"
        )
    header = request.headers.get("x-ms-client-principal", "")
    if not header:
        return Refusal(
            "nobody is signed in: the request carries no principal from the platform "
            "(X-MS-CLIENT-PRINCIPAL); sign in with Microsoft Entra ID",
            sign_in=True,
        )
    claims = _claims(header)
    if claims is None:
        return Refusal("the signed-in principal the request carries cannot be read")
    document, values = claims
    idp = request.headers.get("x-ms-client-principal-idp", "") or str(document.get("auth_typ"))
    if idp.lower() != "aad":
        return Refusal("the console takes Microsoft Entra ID sign-ins only (the IdP is not aad)")
    role_typ = str(document.get("role_typ") or "")
    name_typ = str(document.get("name_typ") or "")
    roles = tuple(v for typ, v in values if typ in (role_typ, *_ROLE_CLAIMS))
    name = _first(values, (name_typ, *_NAME_CLAIMS)) or request.headers.get(
        "x-ms-client-principal-name", ""
    )
    oid = _first(values, _ID_CLAIMS) or request.headers.get("x-ms-client-principal-id", "")
    if not oid:
        return Refusal("the signed-in principal has no object id")
    if auth.role not in roles:
        return Refusal(
            f"you are signed in, but without the app role {auth.role}: ask an administrator "
            "to assign it to you (Enterprise applications > the app > Users and groups)"
        )
    return Principal(oid[:100], (name or oid)[:100], roles, "entra")


def _claims(header: str) -> tuple[dict[str, Any], list[tuple[str, str]]] | None:
    if len(header) > MAX_PRINCIPAL_HEADER:
        return None
    try:
        document = json.loads(base64.b64decode(header, validate=False))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        return None
    values = [
        (c["typ"], c["val"])
        for c in document["claims"]
        if isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str)
    ]
    return document, values


def _first(values: list[tuple[str, str]], types: tuple[str, ...]) -> str:
    for wanted in types:
        for typ, value in values:
            if wanted and typ == wanted and value.strip():
                return value.strip()
    return ""


def platform_sign_in(target: str) -> str:
    """The platform's Microsoft Entra ID sign-in, back to `target` (a console URL) after."""
    return "/.auth/login/aad?" + urlencode({"post_login_redirect_uri": target})


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def valid_csrf_cookie(value: str) -> bool:
    return 32 <= len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


# --- CSRF -------------------------------------------------------------------------------------


def csrf_problem(request: Request, expected: str | None) -> str | None:
    """Why a state-changing request is refused, or None. `expected` None: no token is checked
    (the sign-in form, before there is a session), only where the request came from."""
    if not same_origin(request):
        return CSRF_REFUSED
    if expected is None:
        return None
    given = request.value("csrf") or request.headers.get("x-csrf-token", "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        return CSRF_REFUSED
    return None


def same_origin(request: Request) -> bool:
    """Whether `Origin` (else `Referer`) names the host the request was sent to."""
    origin = request.headers.get("origin", "")
    if not origin or origin == "null":
        origin = request.headers.get("referer", "")
    host = request.host.lower()
    return bool(origin and host) and urlsplit(origin).netloc.lower() == host
