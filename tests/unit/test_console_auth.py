"""Who may use the console: local sessions (signed, expiring, tamper-proof), CSRF (token and
origin), Microsoft Entra ID through App Service Authentication (platform, principal, IdP, app
role), and the security headers on every answer."""

from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func
import pytest

from exporter.console import auth
from exporter.console.http import Request, parse_cookies, parse_form
from exporter.console.router import CSP, dispatch
from exporter.triggers.console import to_request
from tests.support.console import FUNCTION_KEY, HOST, ORIGIN, ConsoleClient, text
from tests.support.memory_flow import MemoryWorld

NOW = 1_800_000_000.0


@pytest.fixture
def world() -> MemoryWorld:
    return MemoryWorld.create()


@pytest.fixture
def client(world: MemoryWorld) -> ConsoleClient:
    return ConsoleClient.signed_in(world.svc, now=NOW)


def settings(**more: str) -> auth.AuthSettings:
    return auth.auth_settings({"LOCAL_FUNCTION_KEY": FUNCTION_KEY, **more})


# --- sessions ----------------------------------------------------------------------------------


def test_a_session_reads_back_until_it_expires() -> None:
    s = settings()
    token, session = auth.issue_session(s, auth.local_principal(), NOW)
    found = auth.read_session(s, token, NOW + auth.SESSION_SECONDS - 1)
    assert found == session
    assert found.principal.id == "local:function-key"
    assert found.principal.name == "local administrator"
    assert auth.read_session(s, token, NOW + auth.SESSION_SECONDS) is None


def test_each_session_has_its_own_csrf_nonce() -> None:
    s = settings()
    _, one = auth.issue_session(s, auth.local_principal(), NOW)
    _, two = auth.issue_session(s, auth.local_principal(), NOW)
    assert one.csrf != two.csrf
    assert len(one.csrf) >= 40


def _reencode(token: str, change: dict[str, Any]) -> str:
    body, _, signature = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    altered = base64.urlsafe_b64encode(json.dumps(payload | change).encode()).rstrip(b"=")
    return f"{altered.decode()}.{signature}"


@pytest.mark.parametrize(
    "change",
    [{"exp": int(NOW) + 10 * auth.SESSION_SECONDS}, {"sub": "someone-else"}, {"csrf": "mine"}],
)
def test_a_tampered_session_is_refused(change: dict[str, Any]) -> None:
    s = settings()
    token, _ = auth.issue_session(s, auth.local_principal(), NOW)
    assert auth.read_session(s, _reencode(token, change), NOW) is None


def test_a_session_signed_with_another_key_is_refused() -> None:
    token, _ = auth.issue_session(settings(), auth.local_principal(), NOW)
    other = auth.auth_settings({"LOCAL_FUNCTION_KEY": "another-function-key"})
    assert auth.read_session(other, token, NOW) is None
    own = settings(CONSOLE_SESSION_SECRET="a secret of the console's own, long enough")
    assert auth.read_session(own, token, NOW) is None


@pytest.mark.parametrize(
    "token",
    ["", "no-dot", ".", "a.b", "%%%.%%%", "x" * 5000, "eyJ2IjoyfQ.sig"],
)
def test_a_malformed_session_is_refused(token: str) -> None:
    assert auth.read_session(settings(), token, NOW) is None


def test_no_function_key_means_no_sign_in() -> None:
    s = auth.auth_settings({})
    assert s.secret is None
    assert not auth.key_matches(s, "")
    with pytest.raises(auth.ConsoleConfigError):
        auth.issue_session(s, auth.local_principal(), NOW)


def test_the_key_is_compared_whole() -> None:
    s = settings()
    assert auth.key_matches(s, FUNCTION_KEY)
    assert not auth.key_matches(s, FUNCTION_KEY[:-1])
    assert not auth.key_matches(s, FUNCTION_KEY + "x")


# --- signing in and out ------------------------------------------------------------------------


def test_sign_in_sets_a_secure_http_only_strict_cookie(world: MemoryWorld) -> None:
    client = ConsoleClient(world.svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY}, now=NOW)
    answer = client.post("/sign-in", {"key": FUNCTION_KEY, "next": "/runs"}, csrf=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/api/console/runs"
    cookie = answer.headers["Set-Cookie"]
    for part in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/api/console", "Max-Age=28800"):
        assert part in cookie.split("; ")
    assert FUNCTION_KEY not in cookie


def test_a_wrong_key_is_refused_without_a_cookie(world: MemoryWorld) -> None:
    client = ConsoleClient(world.svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY}, now=NOW)
    answer = client.post("/sign-in", {"key": "guess"}, csrf=False)
    assert answer.status == 401
    assert "Set-Cookie" not in answer.headers
    assert "not the function key" in text(answer)
    assert "guess" not in answer.text


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "/\\evil", "runs"])
def test_sign_in_never_leads_elsewhere(world: MemoryWorld, target: str) -> None:
    client = ConsoleClient(world.svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY}, now=NOW)
    answer = client.post("/sign-in", {"key": FUNCTION_KEY, "next": target}, csrf=False)
    assert answer.headers["Location"] == "/api/console/"


def test_the_sign_in_form_is_labelled(world: MemoryWorld) -> None:
    answer = ConsoleClient(world.svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY}).get("/sign-in")
    assert answer.status == 200
    assert '<label for="function-key">Function key</label>' in answer.text
    assert 'type="password"' in answer.text
    assert ">Sign in</button>" in answer.text


def test_sign_in_without_a_key_set_says_so(world: MemoryWorld) -> None:
    answer = ConsoleClient(world.svc, {}).get("/sign-in")
    assert "LOCAL_FUNCTION_KEY is not set" in answer.text


def test_sign_out_clears_the_cookie(client: ConsoleClient) -> None:
    answer = client.post("/sign-out")
    assert answer.status == 303
    assert answer.headers["Location"] == "/api/console/sign-in"
    assert answer.headers["Set-Cookie"].startswith(f"{auth.SESSION_COOKIE}=; Max-Age=0;")


# --- no session --------------------------------------------------------------------------------


def test_a_page_without_a_session_leads_to_sign_in(world: MemoryWorld) -> None:
    answer = ConsoleClient(world.svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY}).get("/destinations")
    assert answer.status == 303
    assert answer.headers["Location"] == "/api/console/sign-in?next=%2Fdestinations"


def test_json_without_a_session_is_401(world: MemoryWorld) -> None:
    client = ConsoleClient(world.svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY})
    answer = client.post("/destination-form/lists.json", {"api_key_secret": "SENDGRID_KEY_X"})
    assert answer.status == 401
    assert json.loads(answer.body) == {"error": "sign in first: no session, or it expired"}


def test_an_expired_session_leads_to_sign_in(client: ConsoleClient) -> None:
    client.now = NOW + auth.SESSION_SECONDS + 1
    assert client.get("/destinations").status == 303


# --- CSRF ---------------------------------------------------------------------------------------


def test_a_post_with_its_token_and_origin_passes(client: ConsoleClient) -> None:
    assert client.post("/sign-out").status == 303


@pytest.mark.parametrize("token", ["", "forged-token-" + "x" * 30])
def test_a_post_without_the_sessions_token_is_refused(client: ConsoleClient, token: str) -> None:
    answer = client.post("/sign-out", {"csrf": token})
    assert answer.status == 403
    assert "the form expired or came from elsewhere" in text(answer)
    assert "Set-Cookie" not in answer.headers


def test_another_sessions_token_is_refused(world: MemoryWorld, client: ConsoleClient) -> None:
    other = ConsoleClient.signed_in(world.svc, now=NOW)
    assert client.post("/sign-out", {"csrf": other.csrf}).status == 403


def test_the_token_may_come_in_a_header(client: ConsoleClient) -> None:
    answer = client.request(
        "POST", "/sign-out", headers={"Origin": ORIGIN, "X-CSRF-Token": client.csrf}
    )
    assert answer.status == 303


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:7072", "null"])
def test_a_post_from_another_origin_is_refused(client: ConsoleClient, origin: str) -> None:
    assert client.post("/sign-out", origin=origin).status == 403


def test_a_post_without_origin_or_referer_is_refused(client: ConsoleClient) -> None:
    assert client.post("/sign-out", origin=None).status == 403


def test_a_same_origin_referer_stands_in_for_origin(client: ConsoleClient) -> None:
    answer = client.request(
        "POST",
        "/sign-out",
        form={"csrf": [client.csrf]},
        headers={"Referer": f"{ORIGIN}/api/console/destinations"},
    )
    assert answer.status == 303


def test_the_sign_in_post_checks_its_origin(world: MemoryWorld) -> None:
    client = ConsoleClient(world.svc, {"LOCAL_FUNCTION_KEY": FUNCTION_KEY})
    answer = client.post(
        "/sign-in", {"key": FUNCTION_KEY}, csrf=False, origin="https://evil.example"
    )
    assert answer.status == 403
    assert "Set-Cookie" not in answer.headers


# --- Microsoft Entra ID through App Service Authentication --------------------------------------

ENTRA = {"WEBSITE_SITE_NAME": "exporter-app", "WEBSITE_AUTH_ENABLED": "True"}


def principal_header(roles: list[str], *, auth_typ: str = "aad") -> str:
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "oid-42"},
        {"typ": "preferred_username", "val": "Ada Admin"},
        {"typ": "name", "val": "Ada"},
    ] + [{"typ": "roles", "val": role} for role in roles]
    document = {
        "auth_typ": auth_typ,
        "claims": claims,
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    }
    return base64.b64encode(json.dumps(document).encode()).decode()


def entra(
    world: MemoryWorld,
    header: str | None,
    *,
    idp: str = "aad",
    env: dict[str, str] | None = None,
    method: str = "GET",
    path: str = "/destinations",
    form: dict[str, list[str]] | None = None,
    cookies: dict[str, str] | None = None,
) -> Any:
    headers = {"host": HOST, "origin": ORIGIN, "x-ms-client-principal-idp": idp}
    if header is not None:
        headers["x-ms-client-principal"] = header
    request = Request(method, path, headers=headers, form=form or {}, cookies=cookies or {})
    return dispatch(world.svc, request, env if env is not None else ENTRA, now=NOW)


def test_in_azure_the_console_takes_entra_sign_ins() -> None:
    assert auth.auth_settings({"WEBSITE_SITE_NAME": "x"}).mode == "entra"
    assert auth.auth_settings({}).mode == "local"
    assert auth.auth_settings({"WEBSITE_SITE_NAME": "x", "CONSOLE_AUTH": "local"}).mode == "local"
    assert auth.auth_settings({"CONSOLE_AUTH": "entra"}).mode == "entra"


def test_a_principal_with_the_role_is_let_in(world: MemoryWorld) -> None:
    answer = entra(world, principal_header(["Exporter.Admin"]))
    assert answer.status == 200
    assert "Ada Admin" in answer.text
    assert answer.headers["Set-Cookie"].startswith(f"{auth.CSRF_COOKIE}=")


def test_without_the_platform_nobody_is_trusted(world: MemoryWorld) -> None:
    answer = entra(world, principal_header(["Exporter.Admin"]), env={"WEBSITE_SITE_NAME": "x"})
    assert answer.status == 403
    assert "did not come through the platform" in text(answer)
    assert "WEBSITE_AUTH_ENABLED" in text(answer)


def test_without_a_principal_a_page_leads_to_the_platforms_sign_in(world: MemoryWorld) -> None:
    answer = entra(world, None)
    assert answer.status == 303
    assert answer.headers["Location"] == (
        "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fconsole%2Fdestinations"
    )


def test_without_a_principal_anything_else_is_refused(world: MemoryWorld) -> None:
    posted = entra(world, None, method="POST", path="/destinations/x/remove")
    assert posted.status == 403
    assert "X-MS-CLIENT-PRINCIPAL" in text(posted)
    live = entra(world, None, method="POST", path="/destination-form/lists.json")
    assert live.status == 403
    assert "nobody is signed in" in json.loads(live.body)["error"]


@pytest.mark.parametrize(
    "header",
    [
        "not base64 at all!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b'{"auth_typ": "aad"}').decode(),
        base64.b64encode(b'["a list"]').decode(),
        "A" * (auth.MAX_PRINCIPAL_HEADER + 4),
    ],
)
def test_a_malformed_principal_is_refused(world: MemoryWorld, header: str) -> None:
    answer = entra(world, header)
    assert answer.status == 403
    assert "cannot be read" in text(answer)


def test_another_identity_provider_is_refused(world: MemoryWorld) -> None:
    answer = entra(world, principal_header(["Exporter.Admin"], auth_typ="google"), idp="google")
    assert answer.status == 403
    assert "Microsoft Entra ID sign-ins only" in text(answer)


def test_a_principal_without_the_role_is_refused(world: MemoryWorld) -> None:
    answer = entra(world, principal_header(["Exporter.Reader"]))
    assert answer.status == 403
    assert "without the app role Exporter.Admin" in text(answer)
    assert "Ada" not in answer.text.split("<main", 1)[0]  # no navigation for them


def test_the_role_is_a_setting(world: MemoryWorld) -> None:
    env = ENTRA | {"CONSOLE_ROLE": "Segments.Operator"}
    assert entra(world, principal_header(["Exporter.Admin"]), env=env).status == 403
    assert entra(world, principal_header(["Segments.Operator"]), env=env).status == 200


def test_json_refusals_are_json(world: MemoryWorld) -> None:
    answer = entra(world, principal_header([]), method="POST", path="/destination-form/lists.json")
    assert answer.status == 403
    assert "app role" in json.loads(answer.body)["error"]


def test_entra_posts_need_the_csrf_cookies_token(world: MemoryWorld) -> None:
    header = principal_header(["Exporter.Admin"])
    nonce = "n" * 43
    cookies = {auth.CSRF_COOKIE: nonce}
    good = entra(
        world, header, method="POST", path="/sign-out", form={"csrf": [nonce]}, cookies=cookies
    )
    assert good.status == 303
    assert good.headers["Location"].startswith("/.auth/logout")
    forged = entra(
        world, header, method="POST", path="/sign-out", form={"csrf": ["m" * 43]}, cookies=cookies
    )
    assert forged.status == 403
    no_cookie = entra(world, header, method="POST", path="/sign-out", form={"csrf": [nonce]})
    assert no_cookie.status == 403


def test_a_wrong_console_auth_setting_refuses_everything(world: MemoryWorld) -> None:
    answer = entra(world, None, env={"CONSOLE_AUTH": "none"})
    assert answer.status == 500
    assert "CONSOLE_AUTH must be local or entra" in text(answer)


# --- headers and plumbing ------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(client: ConsoleClient) -> None:
    answers = [
        client.get("/destinations"),
        client.get("/no-such-page"),
        client.post("/sign-out", {"csrf": "forged"}),
        client.get("/static/console.css"),
        ConsoleClient(client.svc, client.settings).get("/destinations"),  # a redirect
    ]
    for answer in answers:
        assert answer.headers["Content-Security-Policy"] == CSP
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "Cache-Control" in answer.headers
    assert answers[0].headers["Cache-Control"] == "no-store"
    assert "'unsafe-inline'" not in CSP
    assert "script-src 'self'" in CSP
    assert "frame-ancestors 'none'" in CSP


def test_pages_have_no_inline_script_or_style(client: ConsoleClient) -> None:
    for path in ("/destinations", "/new-destination", "/sign-in"):
        page = client.get(path).text
        assert "style=" not in page
        assert "<style" not in page
        assert "<script>" not in page
        assert " on" + "click=" not in page


def test_unknown_pages_and_methods(client: ConsoleClient) -> None:
    assert client.get("/no-such-page").status == 404
    answer = client.request("GET", "/sign-out")
    assert answer.status == 405
    assert answer.headers["Allow"] == "POST"


def test_static_files_come_from_an_allow_list(client: ConsoleClient) -> None:
    css = client.get("/static/console.css")
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    js = client.get("/static/destinations.js")
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert client.get("/static/auth.py").status == 404
    assert client.get("/static/..").status == 404


def test_head_answers_without_a_body(client: ConsoleClient) -> None:
    answer = client.request("HEAD", "/destinations")
    assert answer.status == 200
    assert answer.body == b""


def test_the_trigger_converts_a_functions_request() -> None:
    body = b"csrf=abc&name=a%20b&name=c&empty="
    req = func.HttpRequest(
        method="post",
        url="https://exporter.example/api/console/destinations/x/edit",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "exporter_console=tok; other=1; broken",
            "X-Forwarded-Proto": "https",
        },
        params={"q": "1"},
        route_params={"path": "destinations/x/edit"},
        body=body,
    )
    request = to_request(req)
    assert request is not None
    assert request.method == "POST"
    assert request.path == "/destinations/x/edit"
    assert request.query == {"q": "1"}
    assert request.cookies == {"exporter_console": "tok", "other": "1"}
    assert request.form == {"csrf": ["abc"], "name": ["a b", "c"], "empty": [""]}
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.https


def test_the_trigger_maps_the_root_and_refuses_large_bodies() -> None:
    root = func.HttpRequest(method="GET", url="http://h/api/console", body=b"", route_params={})
    converted = to_request(root)
    assert converted is not None
    assert converted.path == "/"
    big = func.HttpRequest(
        method="POST", url="http://h/api/console/x", body=b"x" * (256 * 1024 + 1)
    )
    assert to_request(big) is None


def test_forms_and_cookies_parse_leniently() -> None:
    assert parse_form(b"a=1", "text/plain") == {}
    assert parse_form(b"a=1&a=2", "application/x-www-form-urlencoded; charset=utf-8") == {
        "a": ["1", "2"]
    }
    assert parse_form(b"&".join([b"a=1"] * 3000), "application/x-www-form-urlencoded") == {}
    assert parse_cookies('a=1; a=2; b="q"; =x; c') == {"a": "1", "b": "q"}


def test_signed_in_the_sign_in_page_leads_on(client: ConsoleClient) -> None:
    answer = client.get("/sign-in", next="/runs")
    assert answer.status == 303
    assert answer.headers["Location"] == "/api/console/runs"


def test_every_sign_in_is_a_new_session(world: MemoryWorld) -> None:
    one = ConsoleClient.signed_in(world.svc, now=NOW)
    two = ConsoleClient.signed_in(world.svc, now=NOW)
    assert one.cookie != two.cookie
    assert one.csrf != two.csrf
