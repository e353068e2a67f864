"""How a run reads (progress bar, summary, JSON): whatever its batches went through, every line
adds up. Batches: confirmed + failed + awaiting + not sent = batches. Contacts: to send (+ sent
again to heal) = sent + in failed batches + not sent; sent = upserted + errored (+ awaiting
confirmation, + not counted by SendGrid's jobs); upserted = created + updated."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.admin.counts import counts
from exporter.admin.views import RunDetails, bar, details_json, progress, summary
from exporter.flow.sending import REMOVED
from exporter.model.runs import BatchRecord, RunRecord

WHEN = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def a_run(batches: list[BatchRecord], **fields: object) -> RunRecord:
    """A planned run as the planner records it: `sent` the contacts of its first-round upsert
    batches, `batches` how many it has."""
    planned = [b for b in batches if b.round == 0]
    values: dict[str, object] = {
        "run_id": "r1",
        "destination": "marketing",
        "segment": "loyal",
        "snapshot": "loyal/a.csv",
        "etag": "e",
        "trigger": "blob",
        "created_at": WHEN,
        "state": "sending",
        "planned": True,
        "rows": sum(b.contacts for b in planned if b.kind == "upsert"),
        "valid": sum(b.contacts for b in planned if b.kind == "upsert"),
        "sent": sum(b.contacts for b in planned if b.kind == "upsert"),
        "batches": len(batches),
    }
    values.update(fields)
    return RunRecord(**values)  # type: ignore[arg-type]


def batch(index: int, contacts: int, state: str, **fields: object) -> BatchRecord:
    return BatchRecord("r1", index, contacts, contacts * 100, state=state, **fields)  # type: ignore[arg-type]


def rows(text: str) -> dict[str, tuple[str, str]]:
    """The summary's table: label -> (value, detail)."""
    out = {}
    for line in text.splitlines():
        found = re.fullmatch(r"  (\S.{10})\s*(\S+)(?:   (.*))?", line)
        if found and found.group(1).strip() in LABELS:
            out[found.group(1).strip()] = (found.group(2), found.group(3) or "")
    return out


LABELS = {
    "rows read",
    "valid",
    "rejected",
    "duplicates",
    "blank",
    "warnings",
    "sent",
    "upserted",
    "errored",
    "awaiting",
    "uncounted",
    "batches",
    "removed",
    "list holds",
    "verified",
}


def number(text: str) -> int:
    return int(text.replace(",", ""))


def phrase(detail: str, words: str) -> int:
    """The number before `words` in a detail ("3 failed" -> 3), 0 when it is not there."""
    found = re.search(r"([\d,]+) " + re.escape(words), detail)
    return number(found.group(1)) if found else 0


def after(detail: str, word: str) -> int:
    """The number after `word` in a detail ("created 30" -> 30)."""
    found = re.search(re.escape(word) + r" ([\d,]+)", detail)
    assert found is not None, detail
    return number(found.group(1))


def assert_summary_adds_up(text: str) -> dict[str, tuple[str, str]]:
    table = rows(text)
    sent_value, sent_detail = table["sent"]
    sent = number(sent_value)
    to_send = phrase(sent_detail, "to send")
    healed = phrase(sent_detail, "sent again to heal the list")
    failed = phrase(sent_detail, "in failed batches")
    unsent = phrase(sent_detail, "never sent") + phrase(sent_detail, "not sent yet")
    assert to_send + healed == sent + failed + unsent, text
    assert phrase(table["valid"][1], "to send") == to_send, text

    upserted, detail = table["upserted"]
    assert number(upserted) == after(detail, "created") + after(detail, "updated"), text
    taken = number(upserted) + number(table["errored"][0])
    taken += sum(number(table[label][0]) for label in ("awaiting", "uncounted") if label in table)
    assert taken == sent, text

    value, detail = table["batches"]
    parts = [
        phrase(detail, "confirmed"),
        phrase(detail, "failed"),
        phrase(detail, "awaiting confirmation"),
        phrase(detail, "never sent") + phrase(detail, "not sent yet"),
    ]
    assert sum(parts) == number(value), text
    return table


def assert_bar_adds_up(line: str, *, width: int = 30) -> None:
    drawn = re.match(r"\[([#x-]+)\]", line)
    assert drawn is not None, line
    cells = drawn.group(1)
    assert len(cells) == width
    found = re.search(r"([\d,]+) batches: (.*?)(?:, list verified|, \d+ looks|;|  \()", line)
    assert found is not None, line
    total, detail = number(found.group(1)), found.group(2)
    confirmed, failed = phrase(detail, "confirmed"), phrase(detail, "failed")
    others = phrase(detail, "awaiting confirmation") + phrase(detail, "to send")
    others += phrase(detail, "not sent")
    assert confirmed + failed + others == total, line
    if not confirmed and not (total == 0 and "(succeeded" in line):
        assert "#" not in cells, line  # failed batches never fill the "confirmed" part
    if not failed:
        assert "x" not in cells, line
    if total and confirmed == total:
        assert cells == "#" * width, line
    taken = re.search(r"SendGrid took ([\d,]+) of ([\d,]+) contacts", line)
    assert taken is not None and number(taken.group(1)) <= number(taken.group(2)), line


# --- the cases the user met -------------------------------------------------------------------


def test_a_run_whose_destination_was_removed_sent_nothing_and_says_so() -> None:
    why = f"{REMOVED}: the batch was not sent"
    batches = [batch(i, n, "failed", error=why) for i, n in enumerate((30_000, 30_000, 28_225))]
    run = a_run(
        batches,
        state="failed",
        error=f"{REMOVED} while the run was sending: the export was stopped with 0 of 3 "
        "batches confirmed",
    )
    text = summary(run, batches)
    table = assert_summary_adds_up(text)
    assert table["sent"] == ("0", "of 88,225 to send, taken by SendGrid; 88,225 in failed batches")
    assert table["upserted"][0] == "0"
    assert table["batches"] == ("3", "0 confirmed, 3 failed")
    assert text.count(REMOVED) >= 1 and "reason: the destination was removed while" in text
    assert "88,225 sent" not in text

    line = bar(progress(run, batches))
    assert_bar_adds_up(line)
    assert "[xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx]" in line
    assert "SendGrid took 0 of 88,225 contacts; 3 batches: 0 confirmed, 3 failed" in line
    assert "stopped: the destination was removed" in line


def test_a_skipped_run_says_so_in_one_line_instead_of_a_table_of_zeros() -> None:
    run = a_run(
        [],
        state="skipped",
        planned=False,
        rows=0,
        valid=0,
        sent=0,
        error="a newer snapshot of the segment was exported: loyal/b.csv",
    )
    text = summary(run, [])
    assert "  skipped: nothing was read or sent" in text
    assert "reason: a newer snapshot of the segment was exported" in text
    assert "rows read" not in text and "batches" not in text
    line = bar(progress(run, []))
    assert (
        line == f"[{'-' * 30}] skipped: a newer snapshot of the segment was exported: loyal/b.csv"
    )


def test_a_run_ended_before_planning_says_nothing_was_sent() -> None:
    run = a_run(
        [],
        state="failed",
        planned=False,
        rows=0,
        sent=0,
        error=f"{REMOVED} before the run was planned: nothing was sent",
    )
    text = summary(run, [])
    assert "  ended before it was planned: nothing was read or sent" in text
    assert "stopped: the destination was removed" in bar(progress(run, []))


def test_a_run_still_sending_counts_each_batch_once() -> None:
    batches = [
        batch(0, 40, "done", created=30, updated=8, errored=2, requested=40),
        batch(1, 40, "accepted", job_id="j1"),
        batch(2, 40, "failed", job_id="j2", errored=40, error="SendGrid's import job failed"),
        batch(3, 20, "queued"),
    ]
    run = a_run(batches)
    table = assert_summary_adds_up(summary(run, batches))
    assert table["sent"] == (
        "80",
        "of 140 to send, taken by SendGrid; 40 in failed batches; 20 not sent yet",
    )
    assert (table["upserted"][0], table["errored"][0], table["awaiting"][0]) == ("38", "2", "40")
    assert table["batches"] == (
        "4",
        "1 confirmed, 1 failed, 1 awaiting confirmation, 1 not sent yet",
    )
    line = bar(progress(run, batches))
    assert_bar_adds_up(line)
    assert "[########xxxxxxx---------------]" in line
    assert "4 batches: 1 confirmed, 1 failed, 1 awaiting confirmation, 1 to send" in line
    assert "SendGrid took 80 of 140 contacts" in line


def test_a_healed_and_mirrored_run_adds_up() -> None:
    batches = [
        batch(0, 100, "done", created=100, requested=100),
        batch(1, 50, "done", kind="remove", removed=48),
        batch(2, 30, "failed", kind="remove", error="SendGrid refused"),
        batch(3, 5, "done", round=1, updated=5, requested=5),
    ]
    run = a_run(batches, state="succeeded", leavers=80, resent=5, sync_mode="mirror")
    table = assert_summary_adds_up(summary(run, batches))
    assert table["sent"][1].startswith("of 100 to send and 5 sent again to heal the list")
    assert table["removed"][0] == "48"
    assert "30 in failed removal batches" in table["removed"][1]
    assert table["batches"] == ("4", "3 confirmed, 1 failed (1 sent to heal the list)")


def test_a_job_that_counted_fewer_contacts_than_were_sent_shows_the_rest() -> None:
    batches = [batch(0, 10, "done", created=7, errored=1, requested=8)]
    table = assert_summary_adds_up(summary(a_run(batches, state="succeeded"), batches))
    assert table["uncounted"][0] == "2"


def test_the_json_holds_the_same_counts() -> None:
    batches = [
        batch(0, 40, "done", created=40, requested=40),
        batch(1, 40, "failed", error="x"),
    ]
    run = a_run(batches, state="failed")
    shown = details_json(RunDetails(run, batches))
    contacts, state = shown["contacts"], shown["progress"]
    assert contacts["to_send"] == contacts["sent"] + contacts["in_failed_batches"] == 80
    assert contacts["sent"] == contacts["upserted"] + contacts["errored"] == 40
    assert (state["planned"], state["confirmed"], state["failed"], state["sent"]) == (2, 1, 1, 1)
    assert (state["contacts"], state["contacts_sent"], state["queued"]) == (80, 40, 0)


@pytest.mark.parametrize("state", ["queued", "planning"])
def test_a_run_not_planned_yet_shows_an_empty_bar(state: str) -> None:
    run = a_run([], state=state, planned=False, rows=0, sent=0)
    line = bar(progress(run, []))
    assert line.startswith(f"[{'-' * 30}] read 0, SendGrid took 0 of 0 contacts; 0 batches")
    assert_bar_adds_up(line)


# --- any combination --------------------------------------------------------------------------


@st.composite
def batch_records(draw: st.DrawFn) -> list[BatchRecord]:
    out = []
    for index in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["upsert", "upsert", "remove"]))
        state = draw(st.sampled_from(["queued", "accepted", "done", "failed"]))
        contacts = draw(st.integers(1, 30_000 if kind == "upsert" else 100))
        record = batch(index, contacts, state, kind=kind, round=draw(st.integers(0, 1)))
        if kind == "upsert" and state in ("done", "failed"):
            errored = draw(st.integers(0, contacts))
            created = draw(st.integers(0, contacts - errored))
            updated = draw(st.integers(0, contacts - errored - created))
            record.created, record.updated, record.errored = created, updated, errored
            record.requested = created + updated + errored
        if kind == "remove" and state == "done":
            record.removed = draw(st.integers(0, contacts))
        out.append(record)
    return out


@settings(max_examples=300, deadline=None)
@given(
    batches=batch_records(),
    state=st.sampled_from(["sending", "confirming", "verifying", "succeeded", "failed"]),
    removed=st.booleans(),
)
def test_every_line_adds_up_whatever_the_batches_went_through(
    batches: list[BatchRecord], state: str, removed: bool
) -> None:
    error = f"{REMOVED} while the run was sending: stopped" if removed else ""
    run = a_run(batches, state=state, error=error)
    assert_summary_adds_up(summary(run, batches))
    assert_bar_adds_up(bar(progress(run, batches)))
    c = counts(run, batches)
    assert c.confirmed + c.failed + c.awaiting + c.unsent == c.batches == len(batches)
    assert c.to_send + c.healed == c.sent + c.in_failed + c.not_sent
    assert c.sent == c.upserted + c.errored + c.awaiting_contacts + c.uncounted
    assert min(c.not_sent, c.unsent, c.uncounted) >= 0
