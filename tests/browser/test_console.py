"""The web console in a browser (Debian's Chromium, driven by Playwright) against the local host,
the SendGrid sandbox and Azurite: sign in with the function key, add a destination through the
whole flow (key by reference, a list from the account, the consent, Connect, a mapping chosen
from a snapshot's columns, the preview, a dry run), export it and watch the run succeed live,
open its rejects, remove it; and the refusals (no session, a forged CSRF token or another
origin, Microsoft Entra ID mode without the role or without the platform in front).

The tests run in order and build on each other (one stack per module, `Story`): the destination
added by one is exported by the next. Screenshots of the main pages go to docs/screenshots/.
"""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest
from playwright.sync_api import Locator, Page, expect

from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.destinations import get_destination
from exporter.admin.errors import NotFoundError
from exporter.admin.runs import find_runs
from exporter.core.contacts import EMAIL_RE
from exporter.core.samples import SampleSummary
from exporter.model.runs import RunRecord
from tests.browser.conftest import (
    ADMIN_ROLE,
    FUNCTION_KEY,
    KEY,
    KEY_SETTING,
    PRINCIPAL_DOMAIN,
    Console,
    http,
    principal,
    screenshot,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SEGMENT: Final = "loyal-customers"
ROWS: Final = 240
NAME: Final = "loyal-sendgrid"
DISPLAY: Final = "Loyal customers (SendGrid)"
LIST: Final = "Loyal customers"
CONSENT: Final = re.compile(r"^I agree")
LIVE_TIMEOUT: Final = 90_000


@dataclass
class Story:
    """What the tests built so far, in order."""

    summary: SampleSummary
    path: Path
    list_id: str
    run_id: str = ""
    latest: SampleSummary | None = None
    done: set[str] = field(default_factory=set)

    def needs(self, step: str) -> None:
        if step not in self.done:
            pytest.fail(f"this test builds on {step!r}, which did not pass")


@pytest.fixture(scope="module")
def story(console: Console) -> Story:
    """A stored snapshot of SEGMENT (a generated sample with invalid and duplicate rows) and a
    list in the SendGrid account (the sandbox) to pick in the form."""
    _, summary, path = console.segment(SEGMENT, ROWS)
    console.segment("other-segment", 5, seed=3)  # a second choice in the Segment select
    client = SendGridClient(KEY, SendGridSettings(base_url=console.stack.sandbox_url))
    try:
        client.create_list("Someone else's list")
        chosen = client.create_list(LIST)
        client.create_field("loyalty_tier", "Text")  # the account has the custom field
    finally:
        client.close()
    return Story(summary, path, chosen.id)


@pytest.fixture
def signed_in(page: Page, console: Console) -> Page:
    sign_in(page, console)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page


def no_key_in(page: Page) -> None:
    content = page.content()
    assert KEY not in content, "an API key in a page"
    assert FUNCTION_KEY not in content, "the function key in a page"


def pick(control: Locator, value: str) -> None:
    """Choose `value` in a select (by value or label), or type it into a text field."""
    if control.evaluate("e => e.tagName") == "SELECT":
        try:
            control.select_option(value=value, timeout=2_000)
        except Exception:
            control.select_option(label=value)
    else:
        control.fill(value)


# --- (a) sign in ----------------------------------------------------------------------------


def test_sign_in_with_the_function_key(page: Page, console: Console) -> None:
    answer = page.goto(console.url("/runs"))
    assert answer is not None
    assert "/api/console/sign-in" in page.url, "a page without a session leads to sign-in"
    headers = answer.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert page.evaluate(UNNAMED) == [] and page.evaluate(CONTRAST) == []

    page.get_by_label("Function key").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the function key")
    assert not page.context.cookies(), "a refused sign-in sets no session"

    page.get_by_label("Function key").fill(FUNCTION_KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/api/console/runs$"))  # back where it was going
    for link in ("Overview", "Destinations", "Runs"):
        expect(page.get_by_role("navigation").get_by_role("link", name=link)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_text("local administrator")).to_be_visible()
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/api/console"
    assert page.evaluate("document.cookie") == "", "the session is out of JavaScript's reach"
    no_key_in(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Function key")).to_be_visible()
    page.goto(console.url("/destinations"))
    expect(page.get_by_label("Function key")).to_be_visible()  # signed out: sign in again


# --- (f) refusals ---------------------------------------------------------------------------


def test_no_session_is_refused(console: Console, story: Story) -> None:
    status, headers, _ = http("GET", console.url("/destinations"))
    assert status in (302, 303)
    assert headers["location"].startswith("/api/console/sign-in")
    status, headers, body = http("GET", console.url("/runs/some-run/progress.json"))
    assert status == 401 and headers["content-type"].startswith("application/json"), body
    status, _, _ = http(
        "POST",
        console.url(f"/destinations/{NAME}/export"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data=b"csrf=x",
    )
    assert status == 401
    # A session cookie that is not signed by this host is no session.
    forged = "eyJ2IjoxLCJzdWIiOiJ4IiwibmFtZSI6IngiLCJleHAiOjk5OTk5OTk5OTksImNzcmYiOiJ4In0.c2ln"
    status, _, _ = http(
        "GET", console.url("/destinations"), headers={"Cookie": f"exporter_console={forged}"}
    )
    assert status in (302, 303)


def test_forged_csrf_and_other_origins_are_refused(signed_in: Page, console: Console) -> None:
    page = signed_in
    page.goto(console.url("/destinations"))
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token, "every form carries the CSRF token"
    origin = console.base
    target = console.url("/sign-out")  # harmless when it is let through

    def post(form: dict[str, str | float | bool], headers: dict[str, str]) -> int:
        answer = page.request.post(target, form=form, headers=headers, max_redirects=0)
        assert KEY not in answer.text()
        return answer.status

    assert post({"csrf": "forged-" + token[7:]}, {"Origin": origin}) == 403
    assert post({}, {"Origin": origin}) == 403
    assert post({"csrf": token}, {"Origin": "https://evil.example"}) == 403
    assert post({"csrf": token}, {"Origin": "null", "Referer": "https://evil.example/x"}) == 403
    assert post({"csrf": token}, {}) == 403, "neither Origin nor Referer"
    # A state-changing action with a forged token changes nothing.
    answer = page.request.post(
        console.url("/destinations/ghost/remove"),
        form={"csrf": "forged", "confirm": "ghost"},
        headers={"Origin": origin},
        max_redirects=0,
    )
    assert answer.status == 403
    # The right token from this origin is let through: signed out.
    assert post({"csrf": token}, {"Origin": origin}) in (302, 303)


def test_entra_mode_needs_the_platform_and_the_role(console: Console) -> None:
    def get(at: str, headers: dict[str, str], path: str = "/destinations") -> tuple[int, str]:
        status, answer, body = http("GET", console.url(path, base=at), headers=headers)
        return status, answer.get("location", "") or body.decode()

    admin = {"X-MS-CLIENT-PRINCIPAL": principal(f"ada@{PRINCIPAL_DOMAIN}", [ADMIN_ROLE])}
    reader = {"X-MS-CLIENT-PRINCIPAL": principal(f"bob@{PRINCIPAL_DOMAIN}", ["Exporter.Reader"])}
    with console.other_host(CONSOLE_AUTH="entra", WEBSITE_AUTH_ENABLED="True") as base:
        status, body = get(base, reader)
        assert status == 403 and ADMIN_ROLE in body, body
        # Nobody signed in: a page leads to the platform's sign-in, JSON is refused.
        status, location = get(base, {})
        assert status in (302, 303) and location.startswith("/.auth/login/aad?"), location
        assert get(base, {}, "/runs/x/progress.json")[0] == 403
        status, body = get(base, admin)
        assert status == 200, body
        assert f"ada@{PRINCIPAL_DOMAIN}" in body  # the signed-in name in the nav
        # The function key signs nobody in where Entra ID is in front.
        status, _, _ = http(
            "POST",
            console.url("/sign-in", base=base),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": base},
            data=f"key={FUNCTION_KEY}".encode(),
        )
        assert status in (302, 303)
        assert get(base, {}, "/runs.json")[0] == 403
    # The same request where App Service Authentication is not in front: anyone could have
    # written that header.
    with console.other_host(CONSOLE_AUTH="entra", WEBSITE_AUTH_ENABLED=None) as bare:
        status, body = get(bare, admin)
        assert status == 403 and "did not come through the platform" in body, body


# --- (b) add a destination through the whole flow -------------------------------------------


def test_add_destination_through_the_whole_flow(
    signed_in: Page, console: Console, story: Story
) -> None:
    page = signed_in
    page.get_by_role("navigation").get_by_role("link", name="Destinations").click()
    page.get_by_role("link", name="Add destination").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Add destination")

    # 1. Display name; the name follows it until typed.
    page.get_by_label("Display name").fill(DISPLAY)
    expect(page.get_by_label("Name", exact=True)).to_have_value("loyal-customers-sendgrid")
    page.get_by_label("Name", exact=True).fill(NAME)

    # 2. The key by reference, the list from the account's lists.
    pick(page.get_by_label("API key setting"), KEY_SETTING)
    page.get_by_role("button", name="Load lists").click()
    lists = page.get_by_label("List", exact=True)
    expect(lists.locator(f"option[value='{story.list_id}']")).to_have_count(1)
    expect(lists.locator("option")).to_have_count(3)  # "choose", the two lists of the account
    lists.select_option(value=story.list_id)

    # 3. The consent, as the seed words it; who and when are not typed.
    consent = page.get_by_label(CONSENT)
    label = consent.evaluate("e => e.labels[0].textContent")
    assert "SendGrid" in label and "personal data" in label, label
    consent.check()

    # 4. Connect: each check shown, all ok.
    page.get_by_role("button", name="Connect").click()
    checks = page.get_by_role("region", name="Connection test")
    expect(checks.get_by_role("listitem").first).to_be_visible()
    items = checks.get_by_role("listitem").all_inner_texts()
    assert len(items) >= 2 and all("ok" in item for item in items), items
    assert not any("failed" in item for item in items), items

    # 5. Data matching: the segment's latest snapshot's columns for each field.
    page.get_by_label("Segment", exact=True).select_option(SEGMENT)
    # Choosing the segment reads its columns again: wait for that answer before choosing.
    expect(page.locator("#columns-status")).not_to_contain_text("Reading")
    email = page.get_by_label("Email column")
    expect(email.locator("option[value='PrimaryEmail']")).to_have_count(1)
    columns = email.locator("option").evaluate_all("os => os.map(o => o.value).filter(Boolean)")
    assert columns == ["CustomerId", *HEADER_AFTER_ID], columns  # the header, in its order
    for label_text in (
        "First name column",
        "Last name column",
        "Country column",
        "State column",
        "City column",
        "Postal code column",
    ):
        expect(page.get_by_label(label_text)).to_be_visible()
    email.select_option("PrimaryEmail")
    page.get_by_label("First name column").select_option("FirstName")
    page.get_by_label("Last name column").select_option("")
    page.get_by_label("Country column").select_option("CountryRegion")
    # Columns read again (the segment chosen again) keep every choice, "not mapped" included.
    page.get_by_label("Segment", exact=True).select_option(SEGMENT)
    expect(page.locator("#columns-status")).not_to_contain_text("Reading")
    expect(page.get_by_label("Last name column")).to_have_value("")
    expect(page.get_by_label("First name column")).to_have_value("FirstName")
    page.get_by_role("button", name="Add custom field").click()
    page.get_by_label("Custom field name").fill("loyalty_tier")
    page.get_by_label("Custom field type").select_option("Text")
    page.get_by_label("Custom field column").select_option("LoyaltyTier")

    # The preview: the first 20 contacts as SendGrid will receive them.
    preview = page.get_by_role("region", name="Preview")
    mapped = page.locator("select[name^=map_]").evaluate_all(
        "ss => ss.filter(s => s.value).map(s => s.name.slice(4))"
    )
    assert "last_name" not in mapped and "country" in mapped, mapped
    # Updated as the mapping changed: each mapped field once, the email first.
    expect(preview.locator("thead th")).to_have_count(len(mapped) + 1)
    expect(preview.locator("thead th").first).to_have_text("email")
    expect(preview.locator("thead th", has_text="last_name")).to_have_count(0)
    heads = preview.locator("thead th").all_inner_texts()
    assert sorted(heads) == sorted([*mapped, "loyalty_tier"]), heads
    expect(preview.locator("tbody tr")).to_have_count(20)
    table = [row.locator("td").all_inner_texts() for row in preview.locator("tbody tr").all()]
    expected = expected_rows(story.path, 20)
    assert [r[0] for r in table] == [e["email"] for e in expected]
    names = [r[heads.index("first_name")] for r in table]
    assert names == [e["first_name"] for e in expected]
    tiers = [r[heads.index("loyalty_tier")] for r in table]
    assert tiers == [e["loyalty_tier"] for e in expected]
    no_key_in(page)
    # The mapping chosen from the snapshot's columns, and the preview under it.
    page.evaluate("document.activeElement.blur()")
    top = "e => { e.scrollIntoView({block: 'start'}); window.scrollBy(0, -12); }"
    page.locator("#columns-status").evaluate(top)
    screenshot(page, "add-destination")
    preview.evaluate(top)
    screenshot(page, "add-destination-preview")

    # The dry run of the whole snapshot: valid, rejected by reason, duplicates.
    page.get_by_role("button", name="Dry run").click()
    result = page.get_by_role("region", name="Dry run result")
    expect(result.locator("dl")).to_be_visible()
    facts = dict(
        zip(
            result.locator("dt").all_inner_texts(),
            result.locator("dd").all_inner_texts(),
            strict=True,
        )
    )
    s = story.summary
    assert facts["Rows"] == str(s.rows)
    assert facts["Valid"] == str(s.valid)
    assert facts["Rejected"] == str(s.invalid + s.blank)
    assert facts["Duplicates"] == str(s.duplicates)
    expect(result).to_contain_text("invalid_email")

    # 6. Options as in the CLI.
    page.get_by_label("Sync mode").select_option("upsert")
    page.get_by_label("Profile cap").fill("5000")
    page.get_by_label("Removal guard").fill("40")
    page.get_by_label("Full refresh every").fill("7")
    before = datetime.now(UTC)
    page.get_by_role("button", name="Save destination").click()
    expect(page).to_have_url(re.compile(rf"/api/console/destinations/{NAME}(\?.*)?$"))
    expect(page.get_by_role("status")).to_contain_text("Destination created")

    # Read back with the admin code: what the form chose, the consent with who and when.
    saved = get_destination(console.svc, NAME)
    assert saved.display_name == DISPLAY and saved.api_key_secret == KEY_SETTING
    assert saved.list_id == story.list_id and saved.segments == [SEGMENT]
    assert saved.mapping["email"] == "PrimaryEmail"
    assert saved.mapping["first_name"] == "FirstName"
    assert saved.mapping["country"] == "CountryRegion"
    assert any(
        k.startswith("custom:loyalty_tier") and v == "LoyaltyTier" for k, v in saved.mapping.items()
    ), saved.mapping
    assert saved.sync_mode == "upsert" and saved.profile_cap == 5000
    assert saved.max_removal_share == pytest.approx(0.4) and saved.full_refresh_every == 7
    assert saved.consent is not None
    assert saved.consent.accepted_by == "local administrator (local:function-key)"
    assert before - timedelta(seconds=5) <= saved.consent.accepted_at <= datetime.now(UTC)
    no_key_in(page)
    story.done.add("add")


HEADER_AFTER_ID: Final = (
    "FirstName",
    "LastName",
    "PrimaryEmail",
    "City",
    "StateProvince",
    "CountryRegion",
    "PostalCode",
    "LoyaltyTier",
)


def expected_rows(path: Path, n: int) -> list[dict[str, str]]:
    """The first `n` contacts of the sample as SendGrid receives them: the address trimmed and
    lower-cased, an address seen before skipped (the first row of it wins), invalid ones left
    out."""
    seen: dict[str, dict[str, str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            email = (row["PrimaryEmail"] or "").strip().lower()
            if EMAIL_RE.fullmatch(email) and email not in seen:
                seen[email] = {
                    "email": email,
                    "first_name": row["FirstName"].strip(),
                    "loyalty_tier": row["LoyaltyTier"].strip(),
                }
                if len(seen) == n:
                    break
    return list(seen.values())


# --- (c) export now, and the run page live --------------------------------------------------


WATCH: Final = """() => {
  window.__notReloaded = true;
  window.__states = [];
  window.__values = [];
  const state = document.getElementById("run-state");
  const bar = document.querySelector("[role=progressbar], progress");
  const note = () => {
    window.__states.push(state.textContent.trim());
    window.__values.push([Number(bar.value ?? bar.getAttribute("aria-valuenow")),
                          Number(bar.max ?? bar.getAttribute("aria-valuemax"))]);
  };
  note();
  const watcher = new MutationObserver(note);
  watcher.observe(state, {subtree: true, childList: true, characterData: true});
  watcher.observe(bar, {attributes: true, childList: true, subtree: true});
}"""


def test_export_now_and_watch_the_run_succeed_live(
    signed_in: Page, console: Console, story: Story
) -> None:
    story.needs("add")
    page = signed_in
    page.goto(console.url(f"/destinations/{NAME}"))
    page.get_by_role("button", name="Export now").click()
    expect(page).to_have_url(re.compile(r"/api/console/runs/[^/?]+$"))
    # The URL changes when the navigation commits, before the page's own load event: wait for
    # it, so a later load can only be a reload.
    page.wait_for_load_state("load")
    story.run_id = page.url.rsplit("/", 1)[1]
    page.evaluate(WATCH)
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))

    state = page.get_by_role("status", name="Run state")
    expect(state).to_have_text(re.compile(r"succeeded$"), timeout=LIVE_TIMEOUT)
    bar = page.get_by_role("progressbar", name="Run progress")
    value, top = bar.evaluate("e => [Number(e.value), Number(e.max)]")
    assert value == top > 0, (value, top)

    # It got there live: the same document all along, the state changed under our eyes.
    assert page.evaluate("window.__notReloaded") is True and not loads
    states: list[str] = page.evaluate("window.__states")
    values: list[list[float]] = page.evaluate("window.__values")
    assert not states[0].endswith("succeeded"), states  # the page opened on a run in flight
    assert states[-1].endswith("succeeded"), states
    assert len(set(states)) >= 2, states
    shown = [v for v, _ in values]
    assert shown == sorted(shown) and shown[-1] == top, values  # the bar only moves forward
    # The rest of the page is brought up to date once it ended (no reload either).
    expect(page.get_by_role("link", name="Download the reject report")).to_be_visible()

    run = console.svc.ledger.get_run(story.run_id)
    assert run is not None and run.state == "succeeded", run
    assert run.destination == NAME and run.valid == story.summary.valid
    assert run.rejected == story.summary.invalid + story.summary.blank
    members = console.sandbox_members(story.list_id)
    assert len(members) == story.summary.valid
    expect(page.locator("#run-details")).to_contain_text(f"{story.summary.valid}")
    no_key_in(page)
    screenshot(page, "run")
    story.done.add("export")


# --- (d) its rejects ------------------------------------------------------------------------


def test_the_runs_rejects_and_their_report(signed_in: Page, console: Console, story: Story) -> None:
    story.needs("export")
    page = signed_in
    page.goto(console.url(f"/runs/{story.run_id}"))
    rejects = page.get_by_role("region", name="Rejected rows")
    rejected = story.summary.invalid + story.summary.blank
    expect(rejects).to_contain_text(f"{rejected} rows rejected (of {story.summary.rows} read)")
    expect(rejects.get_by_role("rowheader").first).to_have_text("invalid_email")
    assert rejects.locator("ul.samples li").count() >= 1
    assert not ADDRESS.search(rejects.inner_text()), "a plain address among the samples"

    with page.expect_download() as waited:
        rejects.get_by_role("link", name="Download the reject report").click()
    download = waited.value
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert [h.lower() for h in rows[0]][:4] == ["row", "line", "reason", "message"], rows[0]
    assert len(rows) - 1 == rejected
    assert {r[2] for r in rows[1:]} <= {"invalid_email", "missing_email"}
    assert KEY not in text


ADDRESS: Final = re.compile(r"[\w.+-]+@(example\.(com|org|net)|customers\.test|inbox\.example)")


# --- a new snapshot, and a full refresh behind a confirmation ---------------------------------


def test_a_new_snapshot_then_a_full_refresh_after_a_confirmation(
    signed_in: Page, console: Console, story: Story
) -> None:
    story.needs("export")
    # A newer, larger snapshot arrives: the blob trigger exports it by itself.
    _, story.latest, _ = console.segment(SEGMENT, ROWS + 60, seed=11, name="snapshot-2.csv")
    arrived = wait_for_runs(console, 2)
    assert arrived[0].trigger == "blob" and arrived[0].state == "succeeded", arrived[0]

    page = signed_in
    page.goto(console.url(f"/destinations/{NAME}"))
    page.get_by_label("Full refresh").check()
    page.get_by_role("button", name="Export now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Confirm the export of {DISPLAY}")
    expect(page.get_by_role("main")).to_contain_text("every contact")
    assert len(find_runs(console.svc, destination=NAME)) == 2, "nothing ran before confirming"
    page.get_by_role("button", name="Confirm the export").click()
    expect(page).to_have_url(re.compile(r"/api/console/runs/[^/?]+$"))
    state = page.get_by_role("status", name="Run state")
    expect(state).to_have_text(re.compile(r"succeeded$"), timeout=LIVE_TIMEOUT)
    run = console.svc.ledger.get_run(page.url.rsplit("/", 1)[1])
    assert run is not None and run.full_refresh and run.sent == story.latest.valid, run
    expect(page.locator("#run-details")).to_contain_text("full refresh")
    story.done.add("refresh")


def wait_for_runs(console: Console, n: int, timeout: float = 60) -> list[RunRecord]:
    """The destination's runs (the newest first), once there are `n` and all have ended."""
    deadline = time.monotonic() + timeout
    runs: list[RunRecord] = []
    while time.monotonic() < deadline:
        runs = find_runs(console.svc, destination=NAME)
        if len(runs) >= n and all(r.final for r in runs):
            return runs
        time.sleep(0.3)
    raise AssertionError(f"the runs did not end: {[(r.run_id, r.state) for r in runs]}")


# --- the lists: runs (filters, badges), destinations, overview -------------------------------


def test_runs_list_filters_and_state_badges(
    signed_in: Page, console: Console, story: Story
) -> None:
    story.needs("export")
    page = signed_in
    page.get_by_role("navigation").get_by_role("link", name="Runs").click()
    page.get_by_label("Destination").select_option(NAME)
    page.get_by_label("Segment").select_option(SEGMENT)
    page.get_by_label("State").select_option("succeeded")
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Since").fill(since)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"destination=" + NAME))
    table = page.get_by_role("table")
    heads = table.locator("thead th").all_inner_texts()
    column = heads.index("State")
    runs = 3 if "refresh" in story.done else 1
    expect(table.locator("tbody tr")).to_have_count(runs)
    expect(table.get_by_role("link", name=story.run_id)).to_be_visible()
    for row in table.locator("tbody tr").all():
        badge = row.locator("td").nth(column)
        expect(badge).to_have_text("succeeded")
        assert "badge" in (badge.locator("span").get_attribute("class") or "")
    screenshot(page, "runs")

    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No run matches these filters.")).to_be_visible()


def test_destinations_and_overview(signed_in: Page, console: Console, story: Story) -> None:
    story.needs("export")
    page = signed_in
    page.get_by_role("navigation").get_by_role("link", name="Destinations").click()
    row = page.get_by_role("row").filter(has_text=SEGMENT)
    expect(row).to_contain_text(DISPLAY)
    expect(row).to_contain_text("succeeded")  # the last run of the segment
    screenshot(page, "destinations")

    page.get_by_role("navigation").get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    row = page.get_by_role("row").filter(has_text=DISPLAY)
    chart = row.get_by_role("img")
    expect(chart).to_have_count(1)
    assert chart.evaluate("e => e.tagName.toLowerCase()") == "svg"
    latest = story.latest or story.summary
    held = len(console.sandbox_members(story.list_id))  # upsert: the earlier contacts stay
    expect(row).to_contain_text(f"list {held}, segment {latest.valid}")
    points = chart.locator("circle")
    assert points.count() >= (6 if story.latest else 2), "a point per run for list and segment"
    expect(row).to_contain_text("succeeded")
    expect(page.locator("#failing-now")).to_have_text("Nothing is failing now.")
    screenshot(page, "overview")


# --- (e) remove it --------------------------------------------------------------------------


def test_remove_the_destination_with_its_name_typed(
    signed_in: Page, console: Console, story: Story
) -> None:
    story.needs("add")
    page = signed_in
    page.goto(console.url(f"/destinations/{NAME}"))
    danger = page.get_by_role("region", name="Remove destination")
    confirm = danger.get_by_label("Type the destination's name to confirm")
    confirm.fill(NAME + "x")
    danger.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("alert")).to_contain_text("Not removed")
    assert get_destination(console.svc, NAME).name == NAME  # still there

    page.get_by_label("Type the destination's name to confirm").fill(NAME)
    page.get_by_role("button", name="Remove", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("removed")
    with pytest.raises(NotFoundError):
        get_destination(console.svc, NAME)
    page.get_by_role("navigation").get_by_role("link", name="Destinations").click()
    expect(page.get_by_role("link", name=DISPLAY)).to_have_count(0)
    # Its run history stays.
    page.goto(console.url(f"/runs/{story.run_id}") if story.run_id else console.url("/runs"))
    if story.run_id:
        expect(page.get_by_role("status", name="Run state")).to_have_text(re.compile("succeeded$"))


# --- accessibility --------------------------------------------------------------------------


UNNAMED: Final = """() => {
  const visible = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const controls = [...document.querySelectorAll("input, select, textarea, button")]
    .filter(e => e.type !== "hidden" && visible(e) && !e.closest("[aria-hidden=true]"));
  const named = e => {
    if ((e.getAttribute("aria-label") || "").trim()) return true;
    const by = e.getAttribute("aria-labelledby");
    if (by && by.split(/\\s+/).some(id => (document.getElementById(id)?.textContent || "").trim()))
      return true;
    if (e.labels && [...e.labels].some(l => l.textContent.trim())) return true;
    if (e.tagName === "BUTTON" && e.textContent.trim()) return true;
    return !!(e.title || "").trim();
  };
  return controls.filter(e => !named(e)).map(e => e.outerHTML.slice(0, 120));
}"""

CONTRAST: Final = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = e => {
    for (let n = e; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
    }
    return [255, 255, 255];
  };
  const poor = [];
  for (const e of document.querySelectorAll("body *")) {
    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !(e.offsetWidth || e.offsetHeight)) continue;
    const style = getComputedStyle(e);
    if (style.visibility === "hidden" || e.closest(".visually-hidden, [hidden]")) continue;
    const a = lum(rgb(style.color)), b = lum(background(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(style.fontSize) >= 24 ||
      (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5))
      poor.push(`${e.tagName.toLowerCase()}.${e.className}: ${ratio.toFixed(2)} ` +
                `"${e.textContent.trim().slice(0, 30)}"`);
  }
  return poor;
}"""


def test_pages_are_accessible_and_the_form_works_by_keyboard(
    signed_in: Page, console: Console, story: Story
) -> None:
    page = signed_in
    paths = ["/", "/destinations", "/new-destination", "/runs"]
    if story.run_id:
        paths.append(f"/runs/{story.run_id}")
    for path in paths:
        page.goto(console.url(path))
        assert page.locator("h1").count() == 1, path
        expect(page.get_by_role("main")).to_have_count(1)
        expect(page.get_by_role("navigation", name="Main")).to_have_count(1)
        expect(page.get_by_role("banner")).to_have_count(1)
        assert page.evaluate(UNNAMED) == [], path
        assert page.evaluate(CONTRAST) == [], path
        assert page.evaluate("document.documentElement.lang") == "en"

    # Keyboard only: the skip link first, then the form's first fields and "Load lists".
    page.goto(console.url("/new-destination"))
    page.keyboard.press("Tab")
    focused = page.evaluate("[document.activeElement.tagName, document.activeElement.textContent]")
    assert focused[0] == "A" and "Skip" in focused[1], focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    def tab_to(element_id: str, limit: int = 12) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == element_id:
                return
        raise AssertionError(f"Tab never reached #{element_id}")

    tab_to("display-name")
    page.keyboard.type("Keyboard only")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "name"
    expect(page.get_by_label("Name", exact=True)).to_have_value("keyboard-only")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "api-key-secret"
    page.keyboard.type(KEY_SETTING)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Load lists"
    page.keyboard.press("Enter")
    lists = page.get_by_label("List", exact=True)
    expect(lists.locator(f"option[value='{story.list_id}']")).to_have_count(1)
    page.keyboard.press("Tab")  # into the List select: pick with the arrow keys
    assert page.evaluate("document.activeElement.id") == "list-id"
    # The focus is visible wherever it is (an outline or a box shadow).
    ring = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth, s.boxShadow]; })()"
    )
    assert ring[0] != "none" or ring[2] != "none", ring
