"""The web console's sign-in in the templates, checked against the app's routes and the hooks.

Used by infra/check.py (`make check-infra`) on the templates pycep parsed. The console
(`/api/console/...`) has anonymous HTTP triggers: App Service Authentication with Microsoft Entra
ID (`Microsoft.Web/sites/config` `authsettingsV2`, infra/app/auth.bicep) is what stands in front
of them in Azure, and a path it excludes reaches the app without any sign-in. So:
- an authsettingsV2 exists for the function app (on a site of kind functionapp, or on an
  `existing` one whose name every module deploying the template takes from the output of the
  module creating the app), with the platform enabled, requireAuthentication true, an
  unauthenticatedClientAction of RedirectToLoginPage or Return401 (a `cond ? a : b` may choose),
  redirectToProvider azureactivedirectory, requireHttps, forwardProxy NoProxy;
- the Entra provider is enabled (or `!empty(<client id parameter>)`), its issuer is the tenant's
  v2.0 endpoint (`tenant().tenantId`), an audience `api://<client id>` is allowed, and the
  setting named by clientSecretSettingName is an app setting of the function app;
- excludedPaths is a literal list holding exactly: the JSON API's prefixes (each route the app
  registers with authLevel function, read from the `@<bp>.route(...)` decorators under
  exporter/, is covered; each API entry covers such a route), and the platform's paths
  (PLATFORM_PATHS); never `/`, `/api`, `/api/*` or the console, and no entry may reach a route the
  app registers as anonymous (a new anonymous route under an excluded prefix fails here);
- the function app sets CONSOLE_AUTH=entra and CONSOLE_ROLE, and that role is the app role the
  postprovision hook defines (hooks/console-app-roles.json: users, a fixed GUID, enabled);
- the client id reaches the template: main.bicep's parameter is mapped in main.parameters.json
  to the azd environment variable the hook sets (`azd env set ...`), and azure.yaml runs the hook;
- every hook script parses (`bash -n`, or `sh -n` for /bin/sh scripts), is executable (azd runs
  hooks directly on Linux and macOS) and, where shellcheck is installed, passes it.
Standard library only, so the tests import it without .venv-infra.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from check_alerts import Template, accessor, find_app

SITE = "Microsoft.Web/sites"
CONFIG = "Microsoft.Web/sites/config"
ACTIONS = {"RedirectToLoginPage", "Return401"}
PLATFORM_PATHS = {
    "/runtime/webhooks/blobs": (
        "Event Grid's deliveries to the blob trigger (the blobs_extension system key, no token) "
        "would be refused"
    ),
    "/admin/*": (
        "the Functions host's admin API (master key, or the platform's own token: the portal, "
        "ARM's key listing the postdeploy hook uses) would be behind a browser sign-in"
    ),
}
"""Paths the Functions platform needs without a sign-in, and what breaks when one is missing."""
NEVER = ("", "/", "/*", "/api", "/api/*")
CONSOLE_ROUTE = "console"
HOOK = Path("hooks") / "postprovision.sh"
ROLES = Path("hooks") / "console-app-roles.json"
FIC_SETTING = "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"
SETTINGS = {"CONSOLE_AUTH": "entra"}
ROLE_SETTING = "CONSOLE_ROLE"
ENV_VARIABLE = re.compile(r"^\$\{(\w+)(?:=[^}]*)?\}$")
AZD_ENV_SET = re.compile(r"\bazd env set (\w+)\b")
HOOK_ROLE = re.compile(r"^role_value=\"([^\"]+)\"", re.M)


# --- the app's HTTP routes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One `@<blueprint>.route(...)` of the app: its route and authLevel, and where it is."""

    route: str
    auth_level: str
    where: str

    def matches(self, path: str, prefix: str) -> bool:
        """Whether a request path (no query) can reach this route."""
        return _route_regex(self.route, prefix).fullmatch(path) is not None

    def samples(self, prefix: str) -> list[str]:
        """Request paths of this route: each `{x}` as one segment, a `{*x}` empty and not."""
        head = f"/{prefix}/" if prefix else "/"
        shown = re.sub(r"\{[^}*]+\}", "x", self.route)
        if "{*" not in shown:
            return [head + shown]
        return [
            head + re.sub(r"/?\{\*[^}]+\}", "", shown),
            head + re.sub(r"\{\*[^}]+\}", "x/y", shown),
        ]


def _route_regex(route: str, prefix: str) -> re.Pattern[str]:
    head = f"/{prefix}/" if prefix else "/"
    parts = re.split(r"(/?\{\*[^}]+\}|\{[^}]+\})", route)
    return re.compile(re.escape(head) + "".join(map(_part_regex, parts)), re.IGNORECASE)


def _part_regex(part: str) -> str:
    """A route template's part: a catch-all (`/{*x}`, maybe empty), a parameter, or literal."""
    if part.startswith("/{*"):
        return "(?:/.*)?"
    if part.startswith("{*"):
        return ".*"
    return "[^/]+" if part.startswith("{") else re.escape(part)


def app_routes(app: Path) -> list[Route]:
    """Every HTTP route under `app` (exporter/, less local/) and in function_app.py beside it."""
    sources = [s for s in sorted(app.rglob("*.py")) if s.relative_to(app).parts[0] != "local"]
    sources += [p for p in [app.parent / "function_app.py"] if p.is_file()]
    routes = []
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        constants, defaults = _module_levels(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for decorator in node.decorator_list:
                if not (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr == "route"
                ):
                    continue
                owner = decorator.func.value
                default = (
                    defaults.get(owner.id, "function")
                    if isinstance(owner, ast.Name)
                    else "function"
                )
                keywords = {k.arg: k.value for k in decorator.keywords if k.arg}
                route = keywords.get("route", decorator.args[0] if decorator.args else None)
                text = node.name if route is None else "?"  # no route: the function's name
                if isinstance(route, ast.Constant) and isinstance(route.value, str):
                    text = route.value
                level = _level(keywords.get("auth_level"), constants) or default
                where = f"{_shown(source)}:{decorator.lineno}"
                routes.append(Route(str(text).strip("/"), level, where))
    return routes


def _module_levels(tree: ast.Module) -> tuple[dict[str, str], dict[str, str]]:
    """Module-level `NAME = func.AuthLevel.X` constants, and the default authLevel of each
    `bp = func.Blueprint(http_auth_level=...)` / FunctionApp (function unless given)."""
    constants: dict[str, str] = {}
    defaults: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            continue
        if (level := _level(node.value, constants)) is not None:
            constants[target.id] = level
        elif isinstance(node.value, ast.Call):
            called = node.value.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if name in ("Blueprint", "FunctionApp"):
                given = {k.arg: k.value for k in node.value.keywords if k.arg}
                defaults[target.id] = _level(given.get("http_auth_level"), constants) or "function"
    return constants, defaults


def _level(node: ast.expr | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Attribute, ast.Name)):
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id
        return node.attr.lower() if owner == "AuthLevel" else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.lower()
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def route_prefix(app: Path) -> str:
    """host.json's extensions.http.routePrefix beside the app ("api" by default)."""
    host = app.parent / "host.json"
    try:
        document = json.loads(host.read_text(encoding="utf-8")) if host.is_file() else {}
    except ValueError:
        return "api"
    prefix = ((document.get("extensions") or {}).get("http") or {}).get("routePrefix", "api")
    return str(prefix).strip("/")


# --- excludedPaths -----------------------------------------------------------------------------


def covers(entry: str, path: str) -> bool:
    """An excludedPaths entry matches its path exactly; `/x/*` matches what lies below /x/."""
    if entry.endswith("/*"):
        return path.lower().startswith(entry[:-1].lower())
    return path.lower() == entry.lower()


def excluded_path_problems(excluded: list[str], routes: list[Route], prefix: str) -> list[str]:
    """What is wrong with excludedPaths, given the app's routes under `prefix`."""
    problems = []
    keyed = [r for r in routes if r.auth_level in ("function", "admin")]
    anonymous = [r for r in routes if r.auth_level not in ("function", "admin")]
    api = f"/{prefix}" if prefix else ""
    usable = []  # the entries that may stay: what the JSON API is covered by
    for entry in excluded:
        if entry.rstrip("/") in NEVER or entry.lower().startswith(f"{api}/{CONSOLE_ROUTE}".lower()):
            problems.append(
                f"excludedPaths has {entry!r}: requests there would skip the sign-in, the "
                f"console ({api}/{CONSOLE_ROUTE}/) among them"
            )
            continue
        if "*" in entry[:-2] or (entry.endswith("*") and not entry.endswith("/*")):
            problems.append(f"excludedPaths has {entry!r}: only a trailing /* is a wildcard")
            continue
        usable.append(entry)
        reached = [r for r in anonymous if _reaches(entry, r, prefix)]
        for route in reached:
            problems.append(
                f"excludedPaths has {entry!r}, which reaches the anonymous route "
                f"{route.route!r} ({route.where}): it would answer without any sign-in or key"
            )
        if entry in PLATFORM_PATHS or reached:
            continue
        if not any(covers(entry, s) for r in keyed for s in r.samples(prefix)):
            problems.append(
                f"excludedPaths has {entry!r}, which is neither a JSON API prefix (no route with "
                f"authLevel function lies there) nor a platform path ({', '.join(PLATFORM_PATHS)})"
            )
    for route in keyed:
        for sample in route.samples(prefix):
            if not any(covers(e, sample) for e in usable):
                problems.append(
                    f"the JSON API route {route.route!r} ({route.where}, authLevel "
                    f"{route.auth_level}) is not excluded ({sample} matches no entry): callers "
                    "with a function key would be sent to the Entra sign-in page"
                )
                break
    for path, broken in PLATFORM_PATHS.items():
        if path not in excluded:
            problems.append(f"excludedPaths lacks {path!r}: {broken}")
    return problems


def _reaches(entry: str, route: Route, prefix: str) -> bool:
    """Whether some request path matched by `entry` can reach `route`."""
    if not entry.endswith("/*"):
        return route.matches(entry, prefix)
    if any(covers(entry, s) for s in route.samples(prefix)):
        return True
    head = re.split(r"\{", (f"/{prefix}/" if prefix else "/") + route.route)[0]
    stem = entry[:-1]
    # The route's literal head is a prefix of the entry's: its parameters may fill the rest.
    return "{" in route.route and stem.lower().startswith(head.lower())


# --- the templates -----------------------------------------------------------------------------


def auth_problems(templates: dict[Path, dict[str, Any]], root: Path) -> list[str]:
    """Every problem of the console's sign-in in these parsed templates and the hooks."""
    parsed = [Template(path, tree) for path, tree in templates.items()]
    problems = hook_problems(root)
    configs = [
        (t, symbol, c)
        for t in parsed
        for symbol, c in t.resources(CONFIG).items()
        if (c.get("config") or {}).get("name") == "authsettingsV2"
    ]
    if not configs:
        return [
            *problems,
            "no authsettingsV2 (App Service Authentication) on the function app: nothing signs "
            "console users in with Entra ID (infra/app/auth.bicep)",
        ]
    app = find_app(root)
    if app is None:
        return [*problems, f"cannot find the app's code (exporter/) next to {root}"]
    routes, prefix = app_routes(app), route_prefix(app)
    settings = app_settings(parsed)
    role = settings.get(ROLE_SETTING)
    for template, symbol, config in configs:
        where = f"{template.shown()} ({symbol})"
        problems += [f"{where}: {p}" for p in site_problems(template, config, parsed)]
        properties = (config.get("config") or {}).get("properties") or {}
        problems += [f"{where}: {p}" for p in validation_problems(properties, routes, prefix)]
        problems += [f"{where}: {p}" for p in provider_problems(template, properties, settings)]
        problems += [
            f"{where}: {p}" for p in client_id_problems(template, properties, parsed, root)
        ]
    for name, value in SETTINGS.items():
        if settings.get(name) != value:
            problems.append(
                f"the function app must set {name}={value} (it has {settings.get(name)!r}): the "
                "console would not ask the platform who is signed in"
            )
    if not isinstance(role, str) or not role:
        problems.append(
            f"the function app sets no {ROLE_SETTING}: the app role the console requires"
        )
    else:
        problems += role_problems(root, role)
    return problems


def site_problems(template: Template, config: dict[str, Any], parsed: list[Template]) -> list[str]:
    """The config belongs to the function app (see the module docstring)."""
    parent = (config.get("config") or {}).get("parent")
    sites = template.resources(SITE)
    if parent not in sites:
        return [f"its parent must be a {SITE} resource of {template.shown()}, not {parent!r}"]
    site = sites[parent]
    if not site.get("existing"):
        kind = str((site.get("config") or {}).get("kind", ""))
        return [] if "functionapp" in kind else [f"its parent {parent} is not a function app"]
    name = (site.get("config") or {}).get("name")
    if name not in (template.tree.get("parameters") or {}):
        return [f"the existing site {parent} must be named by a parameter"]
    users = list(modules_of(template, parsed))
    if not users:
        return [f"no module deploys {template.shown()}: the sign-in would never be configured"]
    problems = []
    for owner, symbol, module in users:
        passed = accessor(((module.get("config") or {}).get("params") or {}).get(name))
        if not (
            passed
            and len(passed) == 3
            and passed[1] == "outputs"
            and _creates_app(owner, passed, parsed)
        ):
            problems.append(
                f"{owner.shown()} ({symbol}) must pass {name} from the output of the module that "
                "creates the function app (<module>.outputs.name)"
            )
    return problems


def modules_of(
    template: Template, parsed: list[Template]
) -> list[tuple[Template, str, dict[str, Any]]]:
    found = []
    for owner in parsed:
        for symbol, module in (owner.tree.get("modules") or {}).items():
            relative = (module.get("detail") or {}).get("path")
            if relative and (owner.path.parent / relative).resolve() == template.path.resolve():
                found.append((owner, symbol, module))
    return found


def _creates_app(owner: Template, passed: list[str], parsed: list[Template]) -> bool:
    module = ((owner.tree.get("modules") or {}).get(passed[0]) or {}).get("detail") or {}
    target = (owner.path.parent / str(module.get("path", ""))).resolve()
    for template in parsed:
        if template.path.resolve() == target:
            apps = {
                s
                for s, r in template.resources(SITE).items()
                if not r.get("existing")
                and "functionapp" in str((r.get("config") or {}).get("kind", ""))
            }
            output = ((template.tree.get("outputs") or {}).get(passed[2]) or {}).get("value")
            returned = accessor(output)
            return bool(returned and returned[1:] == ["name"] and returned[0] in apps)
    return False


def validation_problems(properties: dict[str, Any], routes: list[Route], prefix: str) -> list[str]:
    problems = []
    if (properties.get("platform") or {}).get("enabled") is not True:
        problems.append("platform.enabled must be true: App Service Authentication is off")
    validation = properties.get("globalValidation") or {}
    if validation.get("requireAuthentication") is not True:
        problems.append(
            "globalValidation.requireAuthentication must be true: without it anonymous requests "
            "reach the console"
        )
    action = validation.get("unauthenticatedClientAction")
    choices = _choices(action)
    if not choices or not choices <= ACTIONS:
        problems.append(
            f"globalValidation.unauthenticatedClientAction must be RedirectToLoginPage or "
            f"Return401, not {sorted(choices) if choices else action!r}"
        )
    if validation.get("redirectToProvider") != "azureactivedirectory":
        problems.append("globalValidation.redirectToProvider must be 'azureactivedirectory'")
    excluded = validation.get("excludedPaths")
    if not isinstance(excluded, list) or not all(isinstance(e, str) for e in excluded):
        problems.append(
            "globalValidation.excludedPaths must be a literal list of paths, to be checked"
        )
    else:
        problems += excluded_path_problems(excluded, routes, prefix)
    http = properties.get("httpSettings") or {}
    if http.get("requireHttps") is not True:
        problems.append("httpSettings.requireHttps must be true: sign-in cookies over plain HTTP")
    if (http.get("forwardProxy") or {}).get("convention") != "NoProxy":
        problems.append("httpSettings.forwardProxy.convention must be NoProxy: no client-set host")
    return problems


def _choices(node: Any) -> set[str]:
    """A literal's value, or both values of a `cond ? a : b`."""
    if isinstance(node, str):
        return {node}
    operator = (node or {}).get("operator") if isinstance(node, dict) else None
    if isinstance(operator, dict) and operator.get("type") == "conditional":
        operands = operator.get("operands") or {}
        return _choices(operands.get("true_value")) | _choices(operands.get("false_value"))
    return set()


def provider_problems(
    template: Template, properties: dict[str, Any], settings: dict[str, Any]
) -> list[str]:
    entra = (properties.get("identityProviders") or {}).get("azureActiveDirectory") or {}
    registration = entra.get("registration") or {}
    client = registration.get("clientId")
    problems = []
    enabled = entra.get("enabled")
    if enabled is not True and not _not_empty_of(enabled, client):
        problems.append(
            "identityProviders.azureActiveDirectory.enabled must be true (or !empty(<client id>))"
        )
    if not isinstance(client, str) or not client:
        problems.append("the Entra registration has no clientId")
    issuer = str(registration.get("openIdIssuer", ""))
    if "${tenant().tenantId}" not in issuer or not issuer.endswith("/v2.0"):
        problems.append(
            f"openIdIssuer must be the tenant's v2.0 endpoint ('https://login.microsoftonline.com/"
            f"${{tenant().tenantId}}/v2.0'), not {issuer!r}"
        )
    audiences = (entra.get("validation") or {}).get("allowedAudiences")
    parameter = client in (template.tree.get("parameters") or {})
    expected = f"api://${{{client}}}" if parameter else f"api://{client}"
    if not isinstance(audiences, list) or expected not in audiences:
        problems.append(f"validation.allowedAudiences must allow {expected!r}: api://<client id>")
    secret = registration.get("clientSecretSettingName")
    if secret is not None and secret not in settings:
        problems.append(
            f"clientSecretSettingName {secret!r} is no app setting of the function app: the "
            "sign-in could not redeem its code"
        )
    elif secret == FIC_SETTING and not settings.get(FIC_SETTING):
        problems.append(
            f"{FIC_SETTING} must hold the client id of the app's user-assigned identity"
        )
    return problems


def _not_empty_of(node: Any, parameter: Any) -> bool:
    operator = node.get("operator") if isinstance(node, dict) else None
    if not isinstance(operator, dict) or operator.get("type") != "not":
        return False
    inner = ((operator.get("operands") or {}).get("bool_value") or {}).get("function") or {}
    return (
        inner.get("type") == "empty"
        and (inner.get("parameters") or {}).get("item_to_test") == parameter
    )


def client_id_problems(
    template: Template, properties: dict[str, Any], parsed: list[Template], root: Path
) -> list[str]:
    """The client id parameter comes from the azd environment variable the hook sets."""
    entra = (properties.get("identityProviders") or {}).get("azureActiveDirectory") or {}
    client = (entra.get("registration") or {}).get("clientId")
    if client not in (template.tree.get("parameters") or {}):
        return []  # a literal: nothing to wire
    hook = root / HOOK
    sets = set(AZD_ENV_SET.findall(hook.read_text(encoding="utf-8"))) if hook.is_file() else set()
    problems = []
    for owner, symbol, module in modules_of(template, parsed):
        passed = ((module.get("config") or {}).get("params") or {}).get(client)
        if passed not in (owner.tree.get("parameters") or {}):
            continue  # a value of the template itself
        mapping = owner.path.with_name(f"{owner.path.stem}.parameters.json")
        try:
            values = json.loads(mapping.read_text(encoding="utf-8")).get("parameters", {})
        except (OSError, ValueError):
            values = {}
        found = ENV_VARIABLE.match(str((values.get(passed) or {}).get("value", "")))
        if not found:
            problems.append(
                f"{owner.shown()} ({symbol}) passes {client} from {passed}, which "
                f"{mapping.name} does not map to an azd environment variable (${{NAME=}})"
            )
        elif found.group(1) not in sets:
            problems.append(
                f"{mapping.name} maps {passed} to ${{{found.group(1)}}}, which {HOOK} never sets "
                "(azd env set): the client id would be lost at the next azd provision"
            )
    return problems


def app_settings(parsed: list[Template]) -> dict[str, Any]:
    """The app settings of the function app(s) the templates create: name -> value."""
    found: dict[str, Any] = {}
    for template in parsed:
        for site in template.resources(SITE).values():
            config = site.get("config") or {}
            if site.get("existing") or "functionapp" not in str(config.get("kind", "")):
                continue
            listed = ((config.get("properties") or {}).get("siteConfig") or {}).get("appSettings")
            for item in listed if isinstance(listed, list) else []:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    found[item["name"]] = item.get("value")
    return found


# --- the hooks ---------------------------------------------------------------------------------


def role_problems(root: Path, role: str) -> list[str]:
    """The hook defines the app role the app requires."""
    hook, roles = root / HOOK, root / ROLES
    if not hook.is_file():
        return [f"no {HOOK}: nothing registers the console with Entra ID (app role {role})"]
    problems = []
    text = hook.read_text(encoding="utf-8")
    if ROLES.name not in text or "--app-roles" not in text:
        problems.append(f"{HOOK} does not give the registration the app roles of {ROLES}")
    stated = HOOK_ROLE.search(text)
    if not stated or stated.group(1) != role:
        problems.append(f"{HOOK}'s role_value must be {role!r} (CONSOLE_ROLE)")
    for needed, why in (
        ("/.auth/login/aad/callback", "the sign-in's redirect URI"),
        ("--enable-id-token-issuance true", "ID tokens"),
        ("api://", "the identifier URI the audience names"),
        ("federated-credential", "the federated credential standing in for a client secret"),
    ):
        if needed not in text:
            problems.append(f"{HOOK} does not set {why} ({needed})")
    try:
        defined = json.loads(roles.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [*problems, f"{ROLES}: not a JSON list of app roles ({exc})"]
    entries = (
        [r for r in defined if isinstance(r, dict) and r.get("value") == role]
        if isinstance(defined, list)
        else []
    )
    if not entries:
        return [
            *problems,
            f"{ROLES} defines no app role {role!r}: nobody could be given the console",
        ]
    entry = entries[0]
    if "User" not in (entry.get("allowedMemberTypes") or []):
        problems.append(f"{ROLES}: the role {role} must allow members of type User")
    if entry.get("isEnabled") is not True:
        problems.append(f"{ROLES}: the role {role} must be enabled (isEnabled: true)")
    try:
        uuid.UUID(str(entry.get("id")))
    except ValueError:
        problems.append(f"{ROLES}: the role {role} needs a fixed GUID id (updates keep it)")
    return problems


def hook_problems(root: Path) -> list[str]:
    """Every hook script parses, is executable and (shellcheck installed) passes shellcheck;
    azure.yaml runs the postprovision hook."""
    problems = []
    shellcheck = shutil.which("shellcheck")
    for script in sorted((root / "hooks").glob("*.sh")):
        first = script.read_text(encoding="utf-8").splitlines()[:1]
        shell = "bash" if first and "bash" in first[0] else "sh"
        if not os.access(script, os.X_OK):
            problems.append(
                f"{_shown(script)} is not executable: azd runs hooks directly on Linux and macOS "
                "(chmod +x, and commit the mode)"
            )
        done = subprocess.run(
            [shell, "-n", str(script)], capture_output=True, text=True, check=False
        )
        if done.returncode:
            problems.append(f"{_shown(script)}: {shell} -n: {done.stderr.strip()}")
        elif shellcheck:
            done = subprocess.run(
                [shellcheck, "--severity=warning", "--shell", shell, "--format=gcc", str(script)],
                capture_output=True,
                text=True,
                check=False,
            )
            problems += [f"shellcheck: {line}" for line in done.stdout.splitlines() if line.strip()]
    project = next(
        (
            p
            for p in (
                root.parent / "azure.yaml",
                Path(__file__).resolve().parent.parent / "azure.yaml",
            )
            if p.is_file()
        ),
        None,
    )
    if project is None or not re.search(
        r"^\s+postprovision:\s*\n(?:\s+\w+:.*\n)*?\s+run:\s*infra/hooks/postprovision\.sh\s*$",
        project.read_text(encoding="utf-8"),
        re.M,
    ):
        problems.append(
            "azure.yaml does not run infra/hooks/postprovision.sh as a postprovision hook"
        )
    return problems


def summary(templates: dict[Path, dict[str, Any]]) -> str:
    """One line per authsettingsV2: who signs in, what is excluded."""
    out = []
    for path, tree in templates.items():
        for symbol, config in Template(path, tree).resources(CONFIG).items():
            body = config.get("config") or {}
            if body.get("name") != "authsettingsV2":
                continue
            validation = (body.get("properties") or {}).get("globalValidation") or {}
            excluded = validation.get("excludedPaths")
            actions = sorted(_choices(validation.get("unauthenticatedClientAction")))
            out.append(
                f"  console sign-in {symbol} ({Template(path, tree).shown()}): Entra ID, "
                f"unauthenticated: {' | '.join(actions)}; "
                f"excluded: {', '.join(excluded) if isinstance(excluded, list) else '?'}"
            )
    tools = "bash -n" + (
        ", shellcheck" if shutil.which("shellcheck") else " (shellcheck not installed)"
    )
    return "\n".join([*out, f"  hooks checked with {tools}"])


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
