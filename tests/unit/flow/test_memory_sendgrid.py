"""The fake SendGrid the flow's unit tests run on: it is the port, it keeps SendGrid's time
(jobs, exports and list changes fall due on its clock), and it answers as the real client does."""

from __future__ import annotations

import inspect
import json

import pytest

from exporter.core.batching import ContactStream
from exporter.core.list_export import read_export
from exporter.ports.sendgrid import (
    ExportFileGone,
    NotFound,
    RateLimited,
    Rejected,
    SendGrid,
    TransientError,
    Unauthorized,
)
from tests.support.memory_sendgrid import PORT_METHODS, MemorySendGrid

A, B = "a@example.com", "b@example.com"


@pytest.fixture
def sg() -> MemorySendGrid:
    return MemorySendGrid(job_delay=1.0, export_delay=2.0)


def contacts(*emails: str, **fields: object) -> str:
    return json.dumps([{"email": e, **fields} for e in emails])


def test_it_implements_every_call_of_the_port_with_its_signature() -> None:
    port = sorted(
        n for n, v in vars(SendGrid).items() if inspect.isfunction(v) and not n.startswith("_")
    )
    assert sorted(PORT_METHODS) == port
    for name in port:
        ours = inspect.signature(getattr(MemorySendGrid, name))
        theirs = inspect.signature(getattr(SendGrid, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_an_import_job_is_pending_until_its_time_then_applied(sg: MemorySendGrid) -> None:
    list_id = sg.create_list("l").id
    job = sg.upsert([list_id], contacts(A, B, first_name="X"))
    assert sg.import_status(job).status == "pending"
    assert sg.members(list_id) == {}
    sg.advance(1.0)
    status = sg.import_status(job)
    assert (status.status, status.requested, status.created, status.updated) == (
        "completed",
        2,
        2,
        0,
    )
    assert sg.members(list_id)[A]["first_name"] == "X"
    again = sg.upsert([list_id], contacts(A, city="Y"))
    sg.advance(1.0)
    assert sg.import_status(again).updated == 1
    assert sg.members(list_id)[A] == {"email": A, "first_name": "X", "city": "Y"}  # merged


def test_upserts_are_read_from_str_bytes_and_streams_as_the_client_sends_them(
    sg: MemorySendGrid,
) -> None:
    list_id = sg.create_list("l").id
    data = contacts(A, B).encode()
    sg.upsert([list_id], contacts(A))
    sg.upsert([list_id], data)
    sg.upsert(
        [list_id], ContactStream(len(data), (data[i : i + 7] for i in range(0, len(data), 7)))
    )
    assert [[c["email"] for c in sent] for _, sent in sg.calls["upsert"]] == [[A], [A, B], [A, B]]
    with pytest.raises(ValueError, match="batch blob"):
        sg.upsert([list_id], ContactStream(len(data) + 5, iter([data])))


def test_requests_the_sandbox_refuses_are_rejected_with_sendgrids_errors(
    sg: MemorySendGrid,
) -> None:
    list_id = sg.create_list("l").id
    with pytest.raises(Rejected) as bad:
        sg.upsert([list_id, "no-such-list"], contacts("not-an-email", custom_fields={"e9_T": 1}))
    assert bad.value.status == 400
    assert {e.field for e in bad.value.errors} == {
        "contacts[0].email",
        "contacts[0].custom_fields.e9_T",
        "list_ids",
    }
    with pytest.raises(Rejected, match="HTTP 413"):
        sg.upsert([list_id], contacts(A, first_name="x" * 6_000_000))
    with pytest.raises(Rejected, match="already exists"):
        sg.create_list("l")
    with pytest.raises(Rejected):
        sg.create_field("1st", "Text")
    with pytest.raises(Rejected, match="already exists"):
        sg.create_field("First_Name", "Text")
    assert sg.store.contact_count() == 0  # nothing was taken


def test_missing_things_are_not_found(sg: MemorySendGrid) -> None:
    for call in (
        lambda: sg.get_list("x"),
        lambda: sg.list_count("x"),
        lambda: sg.delete_list("x"),
        lambda: sg.start_export("x"),
        lambda: sg.import_status("x"),
        lambda: sg.export_status("x"),
        lambda: sg.remove_from_list("x", ["y"]),
    ):
        with pytest.raises(NotFound):
            call()
    assert sg.find_list("x") is None


def test_searches_find_ids_and_removals_take_contacts_off_the_list_only(
    sg: MemorySendGrid,
) -> None:
    list_id = sg.create_list("l").id
    sg.upsert([list_id], contacts(A, B))
    sg.advance(1)
    found = sg.search_emails([A.upper(), "nobody@example.com"])
    assert list(found) == [A]
    sg.remove_from_list(list_id, found.values())
    assert set(sg.members(list_id)) == {B}
    assert sg.store.contact_count() == 2  # still in the account
    sg.remove_from_list(list_id, found.values())  # again: harmless
    assert sg.list_count(list_id) == 1


def test_list_changes_show_after_the_lag(sg: MemorySendGrid) -> None:
    sg.list_lag = 100
    list_id = sg.create_list("l").id
    job = sg.upsert([list_id], contacts(A))
    sg.advance(1)
    assert sg.import_status(job).status == "completed"
    assert sg.list_count(list_id) == 0  # applied, not shown yet
    sg.advance(99.5)
    assert sg.list_count(list_id) == 0
    sg.advance(0.5)
    assert sg.list_count(list_id) == 1


def test_an_export_is_pending_then_its_files_hold_the_members(sg: MemorySendGrid) -> None:
    field = sg.create_field("tier", "Text")
    list_id = sg.create_list("l").id
    sg.upsert([list_id], json.dumps([{"email": A, "custom_fields": {field.id: "Gold"}}]))
    sg.advance(1)
    export_id = sg.start_export(list_id)
    assert sg.export_status(export_id).status == "pending"
    sg.advance(2)
    export = sg.export_status(export_id)
    assert (export.status, export.contact_count, len(export.urls)) == ("ready", 1, 1)
    with sg.open_export_file(export.urls[0]) as raw:
        rows = list(read_export(raw, ["custom:tier"]))
    assert rows == [(A, ["Gold"])]
    with pytest.raises(ExportFileGone):
        sg.open_export_file(export.urls[0].replace("sig=", "sig=forged"))


def test_a_deleted_list_fails_its_pending_export(sg: MemorySendGrid) -> None:
    list_id = sg.create_list("l").id
    export_id = sg.start_export(list_id)
    sg.delete_list(list_id)
    sg.advance(2)
    export = sg.export_status(export_id)
    assert (export.status, export.urls) == ("failure", ())
    assert "was deleted" in export.message


def test_faults_are_injected_per_call_and_counted(sg: MemorySendGrid) -> None:
    list_id = sg.create_list("l").id
    sg.throttle_next("get_list", retry_after=42)
    with pytest.raises(RateLimited) as limited:
        sg.get_list(list_id)
    assert limited.value.retry_after == 42
    assert sg.get_list(list_id).id == list_id  # once only

    sg.break_next("get_list", times=2)
    for _ in range(2):
        with pytest.raises(TransientError, match="HTTP 500"):
            sg.get_list(list_id)
    sg.get_list(list_id)

    sg.fail_next("list_count", Rejected("no", status=400), times=None)
    for _ in range(3):
        with pytest.raises(Rejected):
            sg.list_count(list_id)
    sg.clear_faults()
    assert sg.list_count(list_id) == 0
    assert (sg.count("get_list"), sg.count("list_count")) == (5, 4)
    with pytest.raises(ValueError, match="no call"):
        sg.fail_next("upsurt", Rejected("x"))


def test_a_lost_answer_took_effect(sg: MemorySendGrid) -> None:
    sg.lose_next("create_list")
    with pytest.raises(TransientError, match="lost"):
        sg.create_list("l")
    assert [x.name for x in sg.lists()] == ["l"]


def test_contacts_and_jobs_fail_on_demand(sg: MemorySendGrid) -> None:
    list_id = sg.create_list("l").id
    sg.refused = {B}
    job = sg.upsert([list_id], contacts(A, B))
    sg.failing_jobs = 1
    failed = sg.upsert([list_id], contacts("c@example.com"))
    sg.advance(1)
    status = sg.import_status(job)
    assert (status.status, status.created, status.errored) == ("errored", 1, 1)
    assert status.errors_url
    assert sg.import_status(failed).status == "failed"
    assert set(sg.members(list_id)) == {A}


def test_a_key_it_does_not_take_is_refused_on_every_call() -> None:
    sg = MemorySendGrid(api_key="SG.right")
    assert sg.client("SG.right") is sg
    wrong = sg.client("SG.wrong")
    with pytest.raises(Unauthorized, match="HTTP 401"):
        wrong.get_list("x")
    with pytest.raises(Unauthorized):
        sg.client(" ")
    assert sg.keys == ["SG.right", "SG.wrong"]
    assert sg.count("get_list") == 1
