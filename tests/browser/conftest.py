"""The browser tests' harness: the local stack (Azurite, the SendGrid sandbox, the Functions host)
with the web console, and Debian's Chromium driven by Playwright.

Chromium comes from Debian's packages (`make browser` installs it; `make test` runs that first):
Playwright's wheel carries its driver, and no browser is ever downloaded (`executable_path`).
One stack and one browser serve a test module; each test gets its own browser context (cookies),
page and 1280x800 viewport. Everything is stopped by its PID or closed in `finally`, also when a
test fails.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import ResourceNotFoundError
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from exporter.adapters.azure_storage import Storage
from exporter.admin.exports import upload_checked
from exporter.core.sample_pools import DOMAINS
from exporter.core.samples import SampleSummary, generate
from exporter.flow.services import Services
from exporter.local.process import Child
from exporter.local.stack import REPO_ROOT, Stack
from exporter.model.versions import SnapshotVersion
from exporter.wiring import services_from_env

KEY: Final = "SG.browser-console-key"
"""The one API key the sandbox accepts; never to appear in a page, an answer or a log."""
KEY_SETTING: Final = "SENDGRID_KEY_CONSOLE"
FUNCTION_KEY: Final = "browser-console-function-key"
LAUNCH_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
VIEWPORT: Final[ViewportSize] = {"width": 1280, "height": 800}
TIMEOUT_MS: Final = 15_000
"""How long an action or an expectation waits (Playwright's are 30 s and 5 s): the machine may
be busy with the other test files."""
SCREENSHOTS: Final = REPO_ROOT / "docs" / "screenshots"
ADMIN_ROLE: Final = "Exporter.Admin"
PRINCIPAL_DOMAIN: Final = "contoso.example"
"""The domain of the Entra ID users the tests make up (their names are addresses)."""


def chromium_path() -> str:
    """Debian's Chromium, or the test fails saying how to install it (never downloaded)."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None
    )
    if found is None:
        pytest.fail(
            "Chromium is missing: `make browser` installs Debian's package "
            "(apt-get install --no-install-recommends chromium)"
        )
    return found


@dataclass
class Console:
    """The running stack, seen from a test: where the console is, and the admin code's view."""

    stack: Stack
    base: str  # http://127.0.0.1:PORT (no route prefix)
    svc: Services
    storage: Storage
    tmp: Path
    extra_hosts: list[Child] = field(default_factory=list)

    def url(self, path: str = "/", base: str | None = None) -> str:
        return f"{base or self.base}/api/console{path}"

    def segment(
        self, segment: str, rows: int, *, seed: int = 7, name: str = "snapshot.csv"
    ) -> tuple[SnapshotVersion, SampleSummary, Path]:
        """A generated sample (exporter.core.samples) uploaded with the admin code as snapshot
        `name` of `segment`; returns once the host's blob trigger has seen it. A segment no
        destination selects yet is then exported on demand only; a selected one has its run
        from the trigger."""
        path = self.tmp / segment / name
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = generate(path, rows, seed, invalid_rate=0.04, duplicate_rate=0.03)
        version = upload_checked(self.svc, path, segment, force=True).version
        hosts = self.storage.blobs.get_container_client("azure-webjobs-hosts")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                seen = [b.name for b in hosts.list_blobs() if b.name.endswith(f"/{version.name}")]
            except ResourceNotFoundError:  # created with the host's first receipt
                seen = []
            if any(version.etag.strip('"') in n for n in seen):
                return version, summary, path
            time.sleep(0.2)
        raise AssertionError("the blob trigger did not see the snapshot")

    @contextlib.contextmanager
    def other_host(self, **settings: str | None) -> Iterator[str]:
        """Another host on the same Azurite and sandbox, with `settings` over the stack's (None
        removes one), for the time of a `with`; yields its base URL. Stopped by PID at the end
        of the block, also on failure (and again with the stack: stopping twice is safe); its
        log is checked with the stack's."""
        other = copy.copy(self.stack)
        other.settings = dict(self.stack.settings)
        for name, value in settings.items():
            if value is None:
                other.settings.pop(name, None)
            else:
                other.settings[name] = value
        child = other.start_host()
        self.extra_hosts.append(child)
        try:
            found = re.search(r"HTTP on (http://\S+)", child.match.string)
            assert found, child.match.string
            yield found.group(1)
        finally:
            child.stop()

    def sandbox_members(self, list_id: str) -> set[str]:
        """The addresses the sandbox's list holds."""
        url = f"{self.stack.sandbox_url}/__sandbox/lists/{list_id}/contacts"
        with urllib.request.urlopen(url, timeout=30) as answer:
            return {m["email"] for m in json.load(answer)}

    def logs(self) -> str:
        hosts = [self.stack.host, *self.extra_hosts]
        return "\n".join(h.output() for h in hosts if h is not None)


def http(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request without a browser (no cookies, no redirects followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The local stack with the console, one per module; its hosts' logs are checked at the end:
    no API key, no function key and no plain address in any line."""
    tmp = tmp_path_factory.mktemp("console")
    settings = {
        KEY_SETTING: KEY,
        "LOCAL_FUNCTION_KEY": FUNCTION_KEY,
        "MAX_BATCH_CONTACTS": "40",  # a few batches: the progress bar moves in steps
        # A run lasts a few seconds however fast the machine: its page opens on it in flight.
        "VERIFY_DELAY_SECONDS": "3",
        "VERIFY_LAG_SECONDS": "2",
    }
    sandbox_args = ["--api-key", KEY, "--job-delay", "0.2"]
    stack = Stack(tmp / "stack", settings=settings, sandbox_args=sandbox_args)
    running: Console | None = None
    try:
        stack.start()
        assert stack.host is not None
        found = re.search(r"HTTP on (http://\S+)", stack.host.match.string)
        assert found, stack.host.match.string
        running = Console(
            stack,
            found.group(1),
            services_from_env(stack.settings),
            Storage.from_env(stack.settings),
            tmp,
        )
        yield running
        log = running.logs()
    finally:
        for child in running.extra_hosts if running else []:
            child.stop()
        stack.stop()
    for secret in (KEY, FUNCTION_KEY):
        assert secret not in log, "a key in the host's log"
    domains = {*DOMAINS, PRINCIPAL_DOMAIN}
    address = re.compile(r"[\w.+-]+@(" + "|".join(map(re.escape, domains)) + r")\b", re.I)
    assert not address.search(log.replace("***@", "")), "a plain address in the host's log"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    manager = sync_playwright()
    driver = manager.start()
    try:
        yield driver
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless, started by Playwright and closed with the module."""
    launched = playwright.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test, 1280x800."""
    made = browser.new_context(viewport=VIEWPORT)
    made.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that fails the test on any JavaScript error or CSP violation it reports, and on
    any request to anywhere but the local host (nothing is loaded from the internet)."""
    opened = context.new_page()
    problems: list[str] = []
    context.on(
        "request",
        lambda request: (
            None
            if urlsplit(request.url).hostname in ("127.0.0.1", "localhost")
            or request.url.startswith(("data:", "blob:"))
            else problems.append(f"a request elsewhere: {request.url}")
        ),
    )
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    opened.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    yield opened
    assert not problems, problems


def sign_in(page: Page, console: Console, key: str = FUNCTION_KEY) -> None:
    """Sign in through the sign-in page, as a developer would with the local function key."""
    page.goto(console.url("/"))
    page.get_by_label("Function key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def screenshot(page: Page, name: str) -> Path:
    """A PNG of the page as shown (1280x800) in docs/screenshots/, for the README."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def principal(user: str, roles: list[str]) -> str:
    """An `X-MS-CLIENT-PRINCIPAL` as App Service Authentication passes it (base64 JSON)."""
    claims = [
        {"typ": "name", "val": user},
        {"typ": "preferred_username", "val": user},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "oid-1"},
        *({"typ": "roles", "val": role} for role in roles),
    ]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(document).encode()).decode()
