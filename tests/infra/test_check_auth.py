"""The web console's sign-in (App Service Authentication with Entra ID, infra/app/auth.bicep)
and its app registration (infra/hooks/postprovision.sh), and `make check-infra` failing, naming
what is wrong, when either is weakened or falls out of step with the app.

The first tests call infra/check_auth.py directly (standard library only: no .venv-infra
needed) on the app's routes and on made-up ones. Then the hook runs against a stub `az` and
`azd` on PATH that keep a little state (nothing reaches Azure). The last tests run the checker
as `make check-infra` does, on copies of infra/ (and of exporter/), as they are and broken:
three checkov runs in all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.infra.test_check_infra import INFRA_PYTHON, Checked, check, copy_infra, edit

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
AUTH = INFRA / "app" / "auth.bicep"
HOOK = INFRA / "hooks" / "postprovision.sh"
ROLE_ID = "5b667e2f-9ee1-4d01-bdf7-f31d5d2a8f29"

pytestmark = pytest.mark.infra

needs_infra_venv = pytest.mark.skipif(
    not INFRA_PYTHON.exists() and not os.environ.get("CI"),
    reason="no .venv-infra yet: `make check-infra` creates it (in CI these tests always run)",
)


@pytest.fixture(scope="module")
def check_auth() -> ModuleType:
    if str(INFRA) not in sys.path:
        sys.path.insert(0, str(INFRA))  # check_auth imports check_alerts, beside it
    spec = importlib.util.spec_from_file_location("check_auth", INFRA / "check_auth.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def excluded_paths() -> list[str]:
    """auth.bicep's excludedPaths, as the template lists them."""
    text = AUTH.read_text(encoding="utf-8")
    listed = re.search(r"excludedPaths: \[\n(.*?)\n\s*\]", text, re.DOTALL)
    assert listed, "no excludedPaths list in auth.bicep"
    return re.findall(r"^\s*'([^']+)'", listed.group(1), re.MULTILINE)


# --- the app's routes and excludedPaths, without checkov ---------------------------------------


def test_the_apps_routes_are_read_with_their_auth_level(check_auth: ModuleType) -> None:
    routes = check_auth.app_routes(REPO / "exporter")
    keyed = {r.route.split("/")[0] for r in routes if r.auth_level == "function"}
    assert keyed == {"destinations", "runs", "snapshots"}
    assert {"runs", "runs/{run_id}", "snapshots/{*name}"} <= {r.route for r in routes}
    anonymous = [r for r in routes if r.auth_level == "anonymous"]
    assert all(r.route.split("/")[0] == "console" for r in anonymous), anonymous
    assert check_auth.route_prefix(REPO / "exporter") == "api"


def test_auth_levels_are_read_however_they_are_written(
    check_auth: ModuleType, tmp_path: Path
) -> None:
    app = tmp_path / "exporter"
    (app / "local").mkdir(parents=True)
    (app / "local" / "host.py").write_text(
        'import azure.functions as func\nbp = func.Blueprint()\n@bp.route(route="dev")\n'
        "def dev(req): ...\n"
    )
    (app / "open.py").write_text(
        "import azure.functions as func\n"
        "bp = func.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "LEVEL = func.AuthLevel.FUNCTION\n"
        '@bp.route(route="status")\ndef status(req): ...\n'
        '@bp.route(route="/keyed/{id}/", auth_level=LEVEL)\ndef keyed(req): ...\n'
        '@bp.route(auth_level="Admin")\ndef named_by_function(req): ...\n'
    )
    (tmp_path / "function_app.py").write_text(
        'import azure.functions as func\napp = func.FunctionApp()\n@app.route(route="hello")\n'
        "def hello(req): ...\n"
    )
    (tmp_path / "host.json").write_text('{"extensions": {"http": {"routePrefix": "x"}}}')
    found = {r.route: r.auth_level for r in check_auth.app_routes(app)}
    assert found == {
        "status": "anonymous",  # the blueprint's default
        "keyed/{id}": "function",  # a module constant; slashes trimmed
        "named_by_function": "admin",  # no route: the function's name
        "hello": "function",  # FunctionApp's default
    }
    assert check_auth.route_prefix(app) == "x"


def test_the_excluded_paths_as_deployed_fit_the_apps_routes(check_auth: ModuleType) -> None:
    excluded = excluded_paths()
    assert "/runtime/webhooks/blobs" in excluded
    assert not any(e.startswith("/api/console") for e in excluded)
    routes = check_auth.app_routes(REPO / "exporter")
    assert check_auth.excluded_path_problems(excluded, routes, "api") == []


def test_an_entry_matches_its_path_exactly_and_a_trailing_star_what_lies_below(
    check_auth: ModuleType,
) -> None:
    covers = check_auth.covers
    assert covers("/api/runs", "/api/runs") and covers("/api/runs", "/API/Runs")
    assert not covers("/api/runs", "/api/runs/1")
    assert covers("/api/runs/*", "/api/runs/1") and covers("/api/runs/*", "/api/runs/1/2")
    assert not covers("/api/runs/*", "/api/runs") and not covers("/api/runs/*", "/api/runsx")


def test_excluded_paths_that_open_the_console_or_leave_the_api_out_are_named(
    check_auth: ModuleType,
) -> None:
    excluded = [e for e in excluded_paths() if e not in ("/api/runs/*", "/runtime/webhooks/blobs")]
    excluded += ["/api/console/*", "/", "/api/*", "/api/reports", "/api/snap*"]
    routes = check_auth.app_routes(REPO / "exporter")
    problems = "\n".join(check_auth.excluded_path_problems(excluded, routes, "api"))
    for expected in [
        "excludedPaths has '/api/console/*': requests there would skip the sign-in",
        "excludedPaths has '/': requests there would skip the sign-in",
        "excludedPaths has '/api/*': requests there would skip the sign-in",
        "excludedPaths has '/api/reports', which is neither a JSON API prefix",
        "excludedPaths has '/api/snap*': only a trailing /* is a wildcard",
        "the JSON API route 'runs/{run_id}' (exporter/triggers/api.py:",
        "callers with a function key would be sent to the Entra sign-in page",
        "excludedPaths lacks '/runtime/webhooks/blobs': Event Grid's deliveries",
    ]:
        assert expected in problems, f"{expected!r} not in:\n{problems}"


@pytest.mark.parametrize(
    ("route", "entry"),
    [
        ("runs/{run_id}/badge", "/api/runs/*"),  # under an excluded prefix
        ("runs", "/api/runs"),  # the excluded path itself
        ("{tenant}/status", "/api/runs/*"),  # a leading parameter reaches every prefix
        ("snapshots/{*rest}", "/api/snapshots"),  # a catch-all may be empty
    ],
)
def test_an_anonymous_route_an_entry_reaches_is_named(
    check_auth: ModuleType, route: str, entry: str
) -> None:
    routes = [
        *check_auth.app_routes(REPO / "exporter"),
        check_auth.Route(route, "anonymous", "exporter/triggers/new.py:7"),
    ]
    problems = check_auth.excluded_path_problems(excluded_paths(), routes, "api")
    assert (
        f"excludedPaths has {entry!r}, which reaches the anonymous route {route!r} "
        "(exporter/triggers/new.py:7): it would answer without any sign-in or key"
    ) in problems, problems


def test_the_hook_defines_the_role_the_app_requires(check_auth: ModuleType, tmp_path: Path) -> None:
    assert check_auth.role_problems(INFRA, "Exporter.Admin") == []
    roles = json.loads((INFRA / "hooks" / "console-app-roles.json").read_text())
    assert roles[0]["id"] == ROLE_ID and roles[0]["allowedMemberTypes"] == ["User"]

    root = tmp_path / "infra"
    shutil.copytree(INFRA / "hooks", root / "hooks")
    roles[0] |= {"allowedMemberTypes": ["Application"], "id": "admin", "isEnabled": False}
    (root / "hooks" / "console-app-roles.json").write_text(json.dumps(roles))
    problems = "\n".join(check_auth.role_problems(root, "Exporter.Admin"))
    assert "the role Exporter.Admin must allow members of type User" in problems
    assert "the role Exporter.Admin must be enabled" in problems
    assert "the role Exporter.Admin needs a fixed GUID id" in problems
    problems = "\n".join(check_auth.role_problems(root, "Exporter.Operator"))
    assert "postprovision.sh's role_value must be 'Exporter.Operator'" in problems
    assert "defines no app role 'Exporter.Operator'" in problems


def test_a_hook_that_does_not_parse_or_run_is_named(check_auth: ModuleType, tmp_path: Path) -> None:
    assert check_auth.hook_problems(INFRA) == []
    root = tmp_path / "infra"
    shutil.copytree(INFRA / "hooks", root / "hooks")
    broken = root / "hooks" / "postdeploy.sh"
    broken.write_text(broken.read_text() + "\nif [ -n x ]; then\n")
    (root / "hooks" / "postprovision.sh").chmod(0o644)
    (tmp_path / "azure.yaml").write_text("name: x\nservices: {}\n")
    problems = "\n".join(check_auth.hook_problems(root))
    assert "postdeploy.sh: sh -n:" in problems
    assert "postprovision.sh is not executable: azd runs hooks directly" in problems
    assert "azure.yaml does not run infra/hooks/postprovision.sh" in problems


# --- the postprovision hook, against a stub az -------------------------------------------------

STUB_AZ = r'''#!/usr/bin/env python3
"""A stand-in for the Azure CLI: records each call, answers from a JSON state file."""
import json, os, sys, uuid
args = sys.argv[1:]
state_file = os.environ["STUB_STATE"]
state = json.load(open(state_file))
with open(os.environ["STUB_CALLS"], "a") as calls:
    calls.write(json.dumps(args) + "\n")
def opt(name):
    return args[args.index(name) + 1] if name in args else None
def out(text=""):
    if text:
        print(text)
    json.dump(state, open(state_file, "w"))
    sys.exit(0)
def fail(message):
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(1)
words, query = " ".join(args[:3]), opt("--query") or ""
if args[:2] == ["cloud", "show"]:
    out("https://login.microsoftonline.com" if "activeDirectory" in query else "https://graph.microsoft.com/")
apps, app_id = state.setdefault("apps", {}), opt("--id")
if words == "ad app show":
    if app_id not in apps:
        fail("Resource does not exist")
    out(apps[app_id].get("role_id", "") if "appRoles" in query else app_id)
if words == "ad app list":
    out(next((i for i, a in apps.items() if a["name"] == opt("--display-name")), ""))
if words == "ad app create":
    if state.get("deny"):
        fail("Insufficient privileges to complete the operation.")
    new = str(uuid.uuid4())
    apps[new] = {"name": opt("--display-name")}
    out(new)
if words == "ad app update":
    roles = json.load(open(opt("--app-roles")[1:]))
    apps[app_id].update(role_id=roles[0]["id"], redirect=opt("--web-redirect-uris"))
    out()
if words == "ad sp show":
    if "sp" not in apps.get(app_id, {}):
        fail("Resource does not exist")
    out(apps[app_id]["sp"])
if words == "ad sp create":
    apps[app_id]["sp"] = "sp-" + app_id[:8]
    out(apps[app_id]["sp"])
if words == "ad sp update":
    out()
if args[:3] == ["ad", "app", "federated-credential"]:
    if args[3] == "list":
        out(apps[app_id].get("fic", ""))
    apps[app_id]["fic"] = json.loads(opt("--parameters"))["subject"]
    out()
if words == "ad signed-in-user show":
    out("me-object-id")
if args[:1] == ["rest"]:
    if opt("--method") == "GET":
        out(state.get("assigned", ""))
    state["assigned"] = json.loads(opt("--body"))["appRoleId"]
    out()
if args[:3] == ["deployment", "group", "create"]:
    out()
fail("the stub does not know: " + " ".join(args))
'''

AZD_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_TENANT_ID": "11111111-1111-1111-1111-111111111111",
    "AZURE_RESOURCE_GROUP": "rg-test",
    "AZURE_FUNCTION_APP_NAME": "func-exporter-abc",
    "AZURE_FUNCTION_APP_URL": "https://func-exporter-abc.azurewebsites.net",
    "AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID": "22222222-2222-2222-2222-222222222222",
}


class StubCli:
    """`az` and `azd` stand-ins in a folder of their own, and what they were asked."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.state, self.calls = folder, folder / "state.json", folder / "calls"
        (folder / "az").write_text(STUB_AZ, encoding="utf-8")
        (folder / "azd").write_text(f'#!/bin/sh\necho "azd $*" >> "{self.calls}"\n')
        for tool in ("az", "azd"):
            (folder / tool).chmod(0o755)
        self.state.write_text("{}")

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        self.calls.write_text("")
        return subprocess.run(
            ["bash", str(HOOK)],
            cwd=REPO,
            env={
                "PATH": f"{self.folder}:/usr/bin:/bin",
                "STUB_STATE": str(self.state),
                "STUB_CALLS": str(self.calls),
                **AZD_ENV,
                **env,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def asked(self) -> list[str]:
        lines = self.calls.read_text(encoding="utf-8").splitlines()
        return [line if line.startswith("azd ") else " ".join(json.loads(line)) for line in lines]

    def apps(self) -> dict[str, Any]:
        return dict(json.loads(self.state.read_text())["apps"])


def test_the_hook_registers_the_console_and_turns_the_sign_in_on(tmp_path: Path) -> None:
    cli = StubCli(tmp_path)
    done = cli.run()
    assert done.returncode == 0, done.stdout + done.stderr
    [(app_id, app)] = cli.apps().items()
    assert app["name"] == "Exporter console (func-exporter-abc)"
    assert app["redirect"] == "https://func-exporter-abc.azurewebsites.net/.auth/login/aad/callback"
    assert (
        app["role_id"] == ROLE_ID
        and app["sp"]
        and app["fic"] == AZD_ENV["AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID"]
    )
    asked = "\n".join(cli.asked())
    for expected in [
        f"ad app update --id {app_id} --only-show-errors --web-redirect-uris",
        "--enable-id-token-issuance true",
        f"--identifier-uris api://{app_id}",
        "--app-roles @" + str(INFRA / "hooks" / "console-app-roles.json"),
        f"ad sp update --id {app_id} --set appRoleAssignmentRequired=true",
        '"issuer": "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0"',
        '"audiences": ["api://AzureADTokenExchange"]',
        f"azd env set AZURE_CONSOLE_CLIENT_ID {app_id}",
        "deployment group create --only-show-errors --output none",
        "--name console-auth --template-file",
        f"clientId={app_id}",
        "rest --method POST --uri https://graph.microsoft.com/v1.0/servicePrincipals/sp-",
    ]:
        assert expected in asked, f"{expected!r} not in:\n{asked}"
    assert "auth.bicep" in asked.split("--template-file")[1].split()[0]
    assert "https://func-exporter-abc.azurewebsites.net/api/console/" in done.stdout
    assert "Enterprise applications" in done.stdout and ROLE_ID in done.stdout
    assert "gave you the app role Exporter.Admin" in done.stdout


def test_the_hook_run_again_changes_nothing(tmp_path: Path) -> None:
    cli = StubCli(tmp_path)
    assert cli.run().returncode == 0
    [app_id] = cli.apps()
    done = cli.run(AZURE_CONSOLE_CLIENT_ID=app_id)
    assert done.returncode == 0, done.stdout + done.stderr
    asked = cli.asked()
    assert list(cli.apps()) == [app_id]
    for needless in (
        "ad app create",
        "ad sp create",
        "federated-credential create",
        "azd env",
        "deployment group create",
        "rest --method POST",
    ):
        assert not any(needless in a for a in asked), f"{needless!r} asked again: {asked}"
    assert any(a.startswith(f"ad app update --id {app_id}") for a in asked)  # kept up to date


def test_the_hook_finds_its_registration_by_name_when_the_env_lost_it(tmp_path: Path) -> None:
    cli = StubCli(tmp_path)
    assert cli.run().returncode == 0
    [app_id] = cli.apps()
    done = cli.run(AZURE_CONSOLE_CLIENT_ID="33333333-3333-3333-3333-333333333333")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is no app registration of this tenant" in done.stderr
    assert list(cli.apps()) == [app_id]
    assert f"azd env set AZURE_CONSOLE_CLIENT_ID {app_id}" in cli.asked()


def test_the_hook_says_the_console_stays_closed_when_entra_refuses(tmp_path: Path) -> None:
    cli = StubCli(tmp_path)
    cli.state.write_text('{"deny": true}')
    done = cli.run()
    assert done.returncode == 1
    assert "Insufficient privileges" in done.stderr
    assert (
        "The console stays closed" in done.stderr and "azd hooks run postprovision" in done.stderr
    )
    assert not any("deployment group create" in a for a in cli.asked())


def test_a_registration_managed_by_hand_is_left_alone(tmp_path: Path) -> None:
    cli = StubCli(tmp_path)
    done = cli.run(CONSOLE_APP_REGISTRATION="manual")
    assert done.returncode == 0
    assert "managed by hand" in done.stdout and cli.asked() == []


# --- make check-infra on broken copies ---------------------------------------------------------


@pytest.fixture(scope="module")
def weakened(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """One flaw per property the checker promises, each in a place of its own."""
    infra = copy_infra(tmp_path_factory.mktemp("weakened"))
    auth, function = infra / "app" / "auth.bicep", infra / "app" / "function.bicep"
    edit(auth, "requireAuthentication: true", "requireAuthentication: false")
    edit(auth, "empty(clientId) ? 'Return401' : 'RedirectToLoginPage'", "'AllowAnonymous'")
    edit(auth, "'/runtime/webhooks/blobs'", "'/runtime/webhooks/eventgrid'")
    edit(auth, "        '/api/runs/*'\n", "        '/api/console/*'\n")
    edit(auth, "${tenant().tenantId}/v2.0'", "common'")
    edit(auth, "requireHttps: true", "requireHttps: false")
    edit(
        function,
        "{ name: 'CONSOLE_AUTH', value: 'entra' }",
        "{ name: 'CONSOLE_AUTH', value: 'local' }",
    )
    edit(function, "value: 'Exporter.Admin' }", "value: 'Exporter.Operator' }")
    edit(infra / "main.parameters.json", "${AZURE_CONSOLE_CLIENT_ID=}", "${CONSOLE_CLIENT=}")
    (infra / "hooks" / "postprovision.sh").chmod(0o644)
    return check(infra)


@pytest.fixture(scope="module")
def anonymous_route(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """The templates as they are, except for the site main.bicep names, next to a copy of the
    code with a new anonymous route under /api/runs."""
    root = tmp_path_factory.mktemp("anonymous")
    infra = copy_infra(root)
    edit(
        infra / "main.bicep",
        "functionAppName: functionApp.outputs.name",
        "functionAppName: 'func-x'",
    )
    app = root / "exporter"
    shutil.copytree(REPO / "exporter", app, ignore=shutil.ignore_patterns("__pycache__"))
    api = app / "triggers" / "api.py"
    api.write_text(
        api.read_text(encoding="utf-8")
        + '\n\n@bp.route(route="runs/{run_id}/badge", auth_level=func.AuthLevel.ANONYMOUS)\n'
        "def run_badge(req: func.HttpRequest) -> func.HttpResponse:\n"
        '    return func.HttpResponse("ok")\n',
        encoding="utf-8",
    )
    return check(infra)


@needs_infra_venv
def test_the_sign_in_as_it_is_passes_and_is_listed(tmp_path: Path) -> None:
    done = check(copy_infra(tmp_path))
    assert done.returncode == 0, done.output
    assert "console sign-in auth (" in done.output
    assert "unauthenticated: RedirectToLoginPage | Return401" in done.output
    assert "excluded: /api/destinations, /api/destinations/*, /api/runs" in done.output


@needs_infra_venv
def test_a_weakened_sign_in_fails_naming_each_flaw(weakened: Checked) -> None:
    assert weakened.returncode == 1, weakened.output
    out = weakened.output
    for expected in [
        "(auth): globalValidation.requireAuthentication must be true",
        "(auth): globalValidation.unauthenticatedClientAction must be RedirectToLoginPage or "
        "Return401, not ['AllowAnonymous']",
        "(auth): excludedPaths lacks '/runtime/webhooks/blobs'",
        "(auth): excludedPaths has '/runtime/webhooks/eventgrid', which is neither a JSON API",
        "(auth): excludedPaths has '/api/console/*': requests there would skip the sign-in",
        "(auth): the JSON API route 'runs/{run_id}'",
        "(auth): openIdIssuer must be the tenant's v2.0 endpoint",
        "(auth): httpSettings.requireHttps must be true",
        "the function app must set CONSOLE_AUTH=entra (it has 'local')",
        "postprovision.sh's role_value must be 'Exporter.Operator'",
        "console-app-roles.json defines no app role 'Exporter.Operator'",
        "main.parameters.json maps consoleClientId to ${CONSOLE_CLIENT}, which "
        "hooks/postprovision.sh never sets",
        "postprovision.sh is not executable",
    ]:
        assert expected in out, f"{expected!r} not in:\n{out}"


@needs_infra_venv
def test_an_anonymous_route_under_an_excluded_prefix_fails(anonymous_route: Checked) -> None:
    assert anonymous_route.returncode == 1, anonymous_route.output
    out = anonymous_route.output
    assert (
        "excludedPaths has '/api/runs/*', which reaches the anonymous route 'runs/{run_id}/badge' ("
    ) in out, out
    assert "main.bicep (consoleAuth) must pass functionAppName from the output of the module" in out
