"""The console's runs list, run page, live progress, reject download and overview
(exporter/console/pages/{runs,run,overview}.py), answered through `router.dispatch` with a
signed-in session, on the real flow over the in-memory fakes. The numbers a page shows are those
of `runs show` (`exporter.admin.views.details_json`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, Final

import pytest

from exporter.admin.runs import run_details
from exporter.admin.views import details_json
from exporter.console import auth
from exporter.console.http import Request, Response
from exporter.console.render import badge
from exporter.console.router import CSP, dispatch
from exporter.model.runs import RunRecord
from tests.support.memory_flow import KEY, MemoryWorld, people, segment_csv

FUNCTION_KEY: Final = "unit-console-function-key"
SETTINGS: Final = {
    "CONSOLE_AUTH": "local",
    "LOCAL_FUNCTION_KEY": FUNCTION_KEY,
    "REFRESH_SCHEDULE": "0 0 2 * * *",
}
HOST: Final = "127.0.0.1:7071"
BAD_ROWS: Final = "ann.example.com,Ann,X\nbob@example,Bob,Y\n,Nobody,Z\n"


# --- a signed-in browser, and the pages it gets ---------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return re.sub(r"\s+", " ", "".join(parts)).strip()

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def all(self, tag: str = "", **attrs: str) -> list[Node]:
        """Elements of `tag` (any: "") whose attributes hold these values (`data_x` for
        `data-x`; the value "*": present)."""
        want = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            n
            for n in self.walk()
            if (not tag or n.tag == tag)
            and all(k in n.attrs and (v == "*" or n.attrs[k] == v) for k, v in want.items())
        ]

    def one(self, tag: str = "", **attrs: str) -> Node:
        (found,) = self.all(tag, **attrs)
        return found


VOID: Final = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(response: Response) -> Node:
    tree = _Tree()
    tree.feed(response.text)
    return tree.root


class Browser:
    """A signed-in session against the console (no host: `dispatch` itself)."""

    def __init__(self, world: MemoryWorld, settings: dict[str, str] = SETTINGS) -> None:
        self.world, self.settings = world, settings
        token, _ = auth.issue_session(
            auth.auth_settings(settings), auth.local_principal(), time.time()
        )
        self.cookies = {auth.SESSION_COOKIE: token}

    def get(self, path: str, **query: str) -> Response:
        request = Request("GET", path, query=query, headers={"host": HOST}, cookies=self.cookies)
        answer = dispatch(self.world.svc, request, self.settings)
        assert KEY not in answer.body.decode("utf-8", "replace")  # never an API key
        assert FUNCTION_KEY not in answer.body.decode("utf-8", "replace")
        return answer

    def page(self, path: str, **query: str) -> Node:
        answer = self.get(path, **query)
        assert answer.status == 200, answer.text
        assert answer.headers["Content-Security-Policy"] == CSP
        assert_no_inline_code(answer.text)
        return parse(answer)

    def json(self, path: str, **query: str) -> Any:
        answer = self.get(path, **query)
        assert answer.status == 200, answer.text
        assert answer.headers["Content-Type"].startswith("application/json")
        return json.loads(answer.body)


def assert_no_inline_code(html: str) -> None:
    """What the CSP would block: inline scripts, style elements and attributes, handlers."""
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)


# --- the reject report's reads, which MemoryStorage leaves to the Azure adapter ------------------


def with_app_blobs(world: MemoryWorld) -> MemoryWorld:
    storage: Any = world.storage

    def read_app_blob(name: str, *, limit: int) -> tuple[bytes, int]:
        data = storage.blobs[name]
        return data[:limit], len(data)

    def app_blob_chunks(name: str) -> Iterator[bytes]:
        data = storage.blobs[name]
        return (data[i : i + 7] for i in range(0, len(data), 7))

    storage.read_app_blob = read_app_blob
    storage.app_blob_chunks = app_blob_chunks
    storage.app_url = "http://127.0.0.1:10000/devstoreaccount1/exporter"
    return world


@pytest.fixture
def world() -> MemoryWorld:
    return with_app_blobs(MemoryWorld.create(max_batch_contacts=40))


@pytest.fixture
def browser(world: MemoryWorld) -> Browser:
    return Browser(world)


def export(world: MemoryWorld, data: str, *, segment: str = "loyal") -> RunRecord:
    (run_id,) = world.arrive(f"{segment}/{len(world.ledger.runs()):03d}.csv", data)
    world.pump()
    return world.run(run_id)


# --- the runs list --------------------------------------------------------------------------------


def rows_of(page: Node) -> dict[str, Node]:
    return {tr.attrs["data-run-id"]: tr for tr in page.all("tr", data_run_id="*")}


def test_the_runs_list_shows_every_run_newest_first_with_a_badge_of_its_state(
    world: MemoryWorld, browser: Browser
) -> None:
    world.destination()
    first = export(world, segment_csv(30))
    world.sendgrid.store.delete_list(world.list_id)
    failed = export(world, segment_csv(31))
    page = browser.page("/runs")
    rows = rows_of(page)
    assert list(rows) == [failed.run_id, first.run_id]
    for run in (first, failed):
        state = rows[run.run_id].one("span", data_live="state")
        assert (state.text, state.attrs["class"]) == (run.state, badge(run.state))
        link = rows[run.run_id].one("a")
        assert link.attrs["href"] == f"/api/console/runs/{run.run_id}"
    assert rows[first.run_id].one("td", data_live="rows").text == "30"
    headers = [th.text for th in page.one("table", id="runs-table").all("th")]
    assert "State" in headers
    assert "data-live-url" not in page.one("table", id="runs-table").attrs  # all ended
    for label in ("Destination", "Segment", "State", "Since"):
        field_id = next(n.attrs["for"] for n in page.all("label") if n.text == label)
        assert page.all(id=field_id)
    assert [b.text for b in page.all("button")][-1] == "Filter"


def test_the_filters_narrow_the_list(world: MemoryWorld, browser: Browser) -> None:
    world.destination(segments=["loyal", "lapsed"])
    world.destination(name="billing", display_name="Billing", segments=["loyal"])
    loyal = [world.run(r) for r in world.arrive("loyal/a.csv", people(1, 2))]
    world.pump()
    lapsed = export(world, people(3), segment="lapsed")
    assert len(loyal) == 2  # one per destination

    assert set(rows_of(browser.page("/runs", destination="billing"))) == {
        r.run_id for r in loyal if r.destination == "billing"
    }
    assert list(rows_of(browser.page("/runs", segment="lapsed"))) == [lapsed.run_id]
    assert len(rows_of(browser.page("/runs", state="succeeded"))) == 3
    assert rows_of(browser.page("/runs", state="failed")) == {}
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    empty = browser.page("/runs", since=tomorrow)
    assert rows_of(empty) == {}
    assert "No run matches these filters." in empty.text
    assert len(rows_of(browser.page("/runs", since="2020-01-01T00:00"))) == 3
    selected = browser.page("/runs", segment="lapsed").one("select", id="filter-segment")
    assert [o.text for o in selected.all("option", selected="*")] == ["lapsed"]


def test_a_since_that_is_not_a_time_is_said_next_to_the_field(browser: Browser) -> None:
    answer = browser.get("/runs", since="yesterday")
    assert answer.status == 400
    page = parse(answer)
    assert page.one("input", id="filter-since").attrs["aria-invalid"] == "true"
    assert page.one(id="runs-problem").text.startswith("since 'yesterday' is not a date or time")
    assert browser.get("/runs", state="done").status == 400


def test_runs_json_moves_the_badges_on_while_a_run_is_in_flight(
    world: MemoryWorld, browser: Browser
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", people(*range(50)))
    world.pump(until=lambda: world.only_run().state == "sending")
    page = browser.page("/runs", destination="marketing")
    table = page.one("table", id="runs-table")
    assert table.attrs["data-live-url"] == "/api/console/runs.json?destination=marketing"
    live = browser.json("/runs.json", destination="marketing")
    assert live["final"] is False
    assert [r["state"] for r in live["runs"]] == ["sending"]
    world.pump()
    live = browser.json("/runs.json", destination="marketing")
    (run,) = live["runs"]
    assert (live["final"], run["state"], run["badge"]) == (True, "succeeded", "badge badge-ok")
    assert (run["rows"], run["sent"]) == (50, 50)


# --- a run's page --------------------------------------------------------------------------------


def numbers_on(page: Node) -> dict[str, str]:
    return {n.attrs["data-number"]: n.text for n in page.all(data_number="*")}


def test_a_run_page_shows_the_numbers_of_runs_show(world: MemoryWorld, browser: Browser) -> None:
    world.destination()
    export(world, segment_csv(30))
    run = export(world, segment_csv(70, extra=BAD_ROWS))  # 30 unchanged, 40 new, 3 rejected
    expected = details_json(run_details(world.svc, run.run_id))
    page = browser.page(f"/runs/{run.run_id}")
    shown = numbers_on(page)
    contacts, progress = expected["contacts"], expected["progress"]
    assert shown["read"] == f"{expected['rows']:,}" == "73"
    assert shown["valid"] == "70"
    assert shown["unchanged"] == f"{expected['unchanged']:,}" == "30"
    assert shown["rejected"] == "3"
    for key in ("to_send", "sent", "upserted", "created", "updated", "errored", "not_sent"):
        assert shown[key] == f"{contacts[key]:,}", key
    assert (shown["to_send"], shown["created"]) == ("40", "40")
    assert shown["batches"] == f"{progress['planned']:,}" == "1"
    assert shown["batches_confirmed"] == f"{progress['confirmed']:,}" == "1"
    assert shown["list_count"] == f"{expected['list_count']:,}" == "70"

    bar = page.one("progress")
    assert (bar.attrs["aria-label"], bar.attrs["value"], bar.attrs["max"]) == (
        "Run progress",
        "100",
        "100",
    )
    status = page.one(role="status")
    assert status.attrs["aria-label"] == "Run state"
    assert status.text.endswith("succeeded")
    stages = {li.attrs["data-stage"]: li.attrs["class"] for li in page.all("li", data_stage="*")}
    stage_names = ("read", "planned", "sent", "confirmed", "verified")
    assert stages == dict.fromkeys(stage_names, "stage stage-done")
    assert page.one("section", id="run-live").attrs["data-final"] == "true"
    steps = [n.text for n in page.all(class_="step-what")]
    assert steps[-1] == "finished: succeeded"
    assert "1 look at the list" in steps
    assert page.one("pre").text.startswith(f"run {run.run_id}: succeeded")


def test_the_rejected_rows_section_samples_each_reason_and_links_the_report(
    world: MemoryWorld, browser: Browser
) -> None:
    world.destination()
    run = export(world, segment_csv(10, extra=BAD_ROWS))
    page = browser.page(f"/runs/{run.run_id}")
    section = next(s for s in page.all("section") if s.all("h2", id="h-rejects"))
    assert section.one("h2").text == "Rejected rows"
    reasons = {tr.one("th").text: tr for tr in section.all("tr") if tr.all("th", scope="row")}
    assert set(reasons) == {"invalid_email", "missing_email"}
    assert reasons["invalid_email"].all("td")[0].text == "2"
    samples = [li.text for li in reasons["invalid_email"].all("li")]
    assert samples == [
        "row 11 (line 12): the email has no @",
        "row 12 (line 13): the domain has no dot (no top-level domain)",
    ]
    link = next(a for a in section.all("a") if a.text == "Download the reject report")
    assert link.attrs["href"] == f"/api/console/runs/{run.run_id}/rejects.csv"


def test_the_reject_report_downloads_as_an_attachment(world: MemoryWorld, browser: Browser) -> None:
    world.destination()
    run = export(world, segment_csv(10, extra=BAD_ROWS))
    answer = browser.get(f"/runs/{run.run_id}/rejects.csv")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert (
        answer.headers["Content-Disposition"] == f'attachment; filename="rejects-{run.run_id}.csv"'
    )
    assert answer.body == world.storage.blobs[run.reject_report]
    assert answer.body.splitlines()[0] == b"row,line,reason,message,partition"

    clean = export(world, segment_csv(5))
    assert browser.get(f"/runs/{clean.run_id}/rejects.csv").status == 404
    assert "Download the reject report" not in browser.get(f"/runs/{clean.run_id}").text


def test_progress_json_follows_a_run_to_its_end_with_the_numbers_of_runs_show(
    world: MemoryWorld, browser: Browser
) -> None:
    world.destination()
    world.arrive("loyal/a.csv", people(*range(100)))  # 3 batches of at most 40
    world.pump(until=lambda: world.only_run().state == "confirming")
    run = world.only_run()
    page = browser.page(f"/runs/{run.run_id}")
    section = page.one("section", id="run-live")
    assert section.attrs["data-final"] == "false"
    assert section.attrs["data-progress-url"] == f"/api/console/runs/{run.run_id}/progress.json"
    assert page.one(role="status").text.endswith("confirming")

    live = browser.json(f"/runs/{run.run_id}/progress.json")
    expected = details_json(run_details(world.svc, run.run_id))
    assert (live["state"], live["final"]) == ("confirming", False)
    assert 10 < live["percent"] < 100
    assert live["numbers"]["batches"] == expected["progress"]["planned"] == 3
    assert live["numbers"]["contacts_sent"] == expected["progress"]["contacts_sent"]
    assert live["numbers"]["sent"] == expected["contacts"]["sent"]
    stages = {s["name"]: s["status"] for s in live["stages"]}
    assert stages["read"] == stages["planned"] == "done"
    assert stages["verified"] == "todo"
    assert stages["confirmed"] in ("current", "done")
    assert live["valuetext"].startswith("confirming: read 100 rows;")

    world.pump()
    live = browser.json(f"/runs/{run.run_id}/progress.json")
    assert (live["state"], live["final"], live["percent"]) == ("succeeded", True, 100)
    assert live["badge"] == "badge badge-ok"
    assert [s["status"] for s in live["stages"]] == ["done"] * 5
    assert live["shown"]["batches_confirmed"] == "3"
    assert live["numbers"]["upserted"] == 100


def test_a_failed_run_says_why_and_marks_what_it_never_reached(
    world: MemoryWorld, browser: Browser
) -> None:
    world.destination()
    world.sendgrid.store.delete_list(world.list_id)
    run = export(world, people(1, 2))
    page = browser.page(f"/runs/{run.run_id}")
    assert page.one(id="run-error").text.startswith("Reason: SendGrid has no list")
    live = browser.json(f"/runs/{run.run_id}/progress.json")
    assert live["final"] is True
    assert {s["name"]: s["status"] for s in live["stages"]}["sent"] == "failed"


def test_unknown_runs_are_not_found(browser: Browser) -> None:
    assert browser.get("/runs/20261124T000000-000000000000").status == 404
    answer = browser.get("/runs/nope/progress.json")
    assert answer.status == 404
    assert json.loads(answer.body) == {"error": "no run 'nope'"}
    assert browser.get("/runs/" + "x" * 300).status == 404


def test_without_a_session_the_pages_send_to_sign_in_and_the_json_says_401(
    world: MemoryWorld,
) -> None:
    world.destination()
    run = export(world, people(1))
    for path in ("/", "/runs", f"/runs/{run.run_id}"):
        answer = dispatch(world.svc, Request("GET", path, headers={"host": HOST}), SETTINGS)
        assert answer.status == 303
        assert answer.headers["Location"].startswith("/api/console/sign-in?next=")
    for path in (f"/runs/{run.run_id}/progress.json", "/runs.json"):
        answer = dispatch(world.svc, Request("GET", path, headers={"host": HOST}), SETTINGS)
        assert answer.status == 401
    csv = dispatch(
        world.svc,
        Request("GET", f"/runs/{run.run_id}/rejects.csv", headers={"host": HOST}),
        SETTINGS,
    )
    assert csv.status in (303, 401) and not csv.body.startswith(b"row,")


def test_the_styles_and_script_are_served_from_the_allow_list(browser: Browser) -> None:
    css = browser.get("/static/runs.css")
    assert (css.status, css.headers["Content-Type"]) == (200, "text/css; charset=utf-8")
    js = browser.get("/static/runs.js")
    assert js.status == 200 and b"progress" in js.body


# --- the overview ---------------------------------------------------------------------------------


def test_the_overview_charts_list_against_segment_per_destination_and_segment(
    world: MemoryWorld, browser: Browser
) -> None:
    world.destination(segments=["loyal", "lapsed"])
    export(world, segment_csv(30))
    export(world, segment_csv(60))
    export(world, segment_csv(45))  # upsert mode: the list keeps 60
    page = browser.page("/")
    table = page.one("table", class_="overview")
    rows = [tr for tr in table.all("tbody")[0].children if isinstance(tr, Node) and tr.tag == "tr"]
    loyal, lapsed = rows
    svg = loyal.one("svg")
    assert svg.attrs["role"] == "img"
    desc = svg.one("desc").text
    assert desc == (
        "List size against segment size over the last 3 runs. The last run: the list holds "
        "60, the segment 45 valid contacts."
    )
    segment_line = svg.one("polyline", class_="segment-line").attrs["points"].split()
    list_line = svg.one("polyline", class_="list-line").attrs["points"].split()
    assert len(segment_line) == len(list_line) == 3
    ys = [float(p.split(",")[1]) for p in segment_line]
    assert ys[1] < ys[2] < ys[0]  # 60 highest (smallest y), then 45, then 30
    list_ys = [float(p.split(",")[1]) for p in list_line]
    assert list_ys[1] == list_ys[2] == ys[1]  # the list held 60 after both
    sizes = [[td.text for td in tr.all("td")][1:] for tr in loyal.one("details").all("tr")[1:]]
    assert sizes == [["45", "60", "45"], ["60", "60", "60"], ["30", "30", "30"]]  # newest first
    assert "no run has read this segment yet" in lapsed.text
    tomorrow_2am = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d 02:00:00 UTC")
    today_2am = datetime.now(UTC).strftime("%Y-%m-%d 02:00:00 UTC")
    assert tomorrow_2am in loyal.text or today_2am in loyal.text
    assert page.one(id="failing-now").text == "Nothing is failing now."


def test_the_overview_lists_what_is_failing_now_with_links_to_the_runs(
    world: MemoryWorld, browser: Browser
) -> None:
    world.destination()
    world.sendgrid.store.delete_list(world.list_id)
    failed = export(world, people(1, 2))
    page = browser.page("/")
    (problem,) = page.all("li", class_="problem problem-run_failed")
    assert problem.one("a").attrs["href"] == f"/api/console/runs/{failed.run_id}"
    assert problem.text.startswith("the last run failed: SendGrid has no list")
    assert page.one(id="failing-now").text == "1 thing failing now: see the last column."


def test_the_overview_says_when_nothing_is_scheduled_or_set_up(world: MemoryWorld) -> None:
    unscheduled = Browser(world, {k: v for k, v in SETTINGS.items() if k != "REFRESH_SCHEDULE"})
    assert "Add one on the" in unscheduled.page("/").text  # no destination yet
    world.destination()
    assert "not scheduled: REFRESH_SCHEDULE is not set" in unscheduled.page("/").text
