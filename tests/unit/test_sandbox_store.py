"""The sandbox's state without HTTP: how upserts merge, who is on which list, what a search
finds, how an import job counts its contacts, that a contact stays small; SendGrid's lag on list
changes, list deletion, and contact exports (their files, splitting, retention, memory)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tracemalloc
import uuid
from typing import Any

import pytest

from exporter.local.sandbox.store import SandboxStore
from exporter.local.sandbox.store_exports import EXPORT_CSV_COLUMNS, KEPT_EXPORTS
from exporter.local.sandbox.store_model import (
    Conflict,
    Expired,
    Forbidden,
    NotFound,
    custom_value_problem,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> SandboxStore:
    return SandboxStore(clock=clock)


def run(
    store: SandboxStore, contacts: list[dict[str, Any]], list_ids: tuple[str, ...] = (), **kw: Any
) -> Any:
    job_id = store.submit_upsert(contacts, list(list_ids), due=0.0)
    return store.apply_upsert(job_id, **kw)


def find(store: SandboxStore, email: str) -> dict[str, Any]:
    found = store.search_emails([email])[email]
    assert found is not None, email
    return found


# --- upsert semantics ----------------------------------------------------------------------------


def test_a_new_email_creates_a_contact_with_a_lower_cased_email(store: SandboxStore) -> None:
    job = run(store, [{"email": "Ann@Example.COM", "first_name": "Ann"}])

    contact = find(store, "ann@example.com")
    assert (job.status, job.created_count, job.updated_count) == ("completed", 1, 0)
    assert contact["email"] == "ann@example.com"
    assert contact["first_name"] == "Ann"
    assert contact["last_name"] == ""  # unset text fields read as "", as SendGrid answers
    assert uuid.UUID(contact["id"]).version == 4
    assert store.contact_count() == 1


def test_an_update_merges_fields_and_keeps_what_was_omitted(
    store: SandboxStore, clock: FakeClock
) -> None:
    tier = store.create_custom_field("tier", "Text").id
    orders = store.create_custom_field("orders", "Number").id
    run(
        store,
        [
            {
                "email": "ann@example.com",
                "first_name": "Ann",
                "city": "Oslo",
                "custom_fields": {tier: "gold", orders: 1},
            }
        ],
    )
    created = find(store, "ann@example.com")
    clock.now += 60

    job = run(
        store,
        [{"email": "ANN@example.com", "city": "Bergen", "custom_fields": {orders: 2}}],
    )

    contact = find(store, "ann@example.com")
    assert (job.created_count, job.updated_count) == (0, 1)
    assert contact["id"] == created["id"]
    assert (contact["first_name"], contact["city"]) == ("Ann", "Bergen")
    assert contact["custom_fields"] == {"tier": "gold", "orders": 2}
    assert contact["created_at"] == created["created_at"]
    assert contact["updated_at"] > created["updated_at"]
    assert store.contact_count() == 1


def test_the_same_email_twice_in_one_job_creates_then_updates(store: SandboxStore) -> None:
    job = run(
        store,
        [
            {"email": "ann@example.com", "first_name": "A"},
            {"email": "ANN@example.com", "last_name": "B"},
        ],
    )

    contact = find(store, "ann@example.com")
    assert (job.created_count, job.updated_count) == (1, 1)
    assert (contact["first_name"], contact["last_name"]) == ("A", "B")


def test_unknown_request_keys_are_ignored(store: SandboxStore) -> None:
    run(store, [{"email": "ann@example.com", "listIds": ["x"], "nickname": "Annie"}])

    assert store.list_members(store.create_list("L").id) == []
    contact = find(store, "ann@example.com")
    assert "nickname" not in contact
    assert "listIds" not in contact


# --- lists ----------------------------------------------------------------------------------------


def test_upserts_add_to_their_lists_and_never_take_off_other_lists(store: SandboxStore) -> None:
    first, second = store.create_list("First").id, store.create_list("Second").id

    run(store, [{"email": "ann@example.com"}, {"email": "bob@example.com"}], (first,))
    run(store, [{"email": "ann@example.com"}], (second,))

    assert [m["email"] for m in store.list_members(first)] == ["ann@example.com", "bob@example.com"]
    assert store.list_members(second) == [{"email": "ann@example.com"}]
    assert find(store, "ann@example.com")["list_ids"] == [first, second]
    assert [x.contact_count for x in store.lists()] == [2, 1]


def test_list_members_show_fields_and_custom_fields_by_name(store: SandboxStore) -> None:
    list_id = store.create_list("L").id
    tier = store.create_custom_field("tier", "Text").id

    run(
        store,
        [{"email": "ann@example.com", "city": "Oslo", "custom_fields": {tier: "gold"}}],
        (list_id,),
    )

    assert store.list_members(list_id) == [
        {"email": "ann@example.com", "city": "Oslo", "custom_fields": {"tier": "gold"}}
    ]


def test_list_names_are_unique(store: SandboxStore) -> None:
    store.create_list("Newsletter")

    with pytest.raises(Conflict):
        store.create_list("Newsletter")


def test_removing_from_a_list_keeps_the_contact(store: SandboxStore) -> None:
    list_id = store.create_list("L").id
    run(store, [{"email": "ann@example.com"}, {"email": "bob@example.com"}], (list_id,))
    ann = find(store, "ann@example.com")["id"]

    removed = store.remove_from_list(list_id, [ann])

    assert removed == 1
    assert [m["email"] for m in store.list_members(list_id)] == ["bob@example.com"]
    assert store.get_contact(ann) is not None
    assert store.contact_count() == 2


def test_removing_an_unknown_contact_changes_nothing(store: SandboxStore) -> None:
    list_id = store.create_list("L").id
    run(store, [{"email": "ann@example.com"}], (list_id,))
    ann = find(store, "ann@example.com")["id"]

    with pytest.raises(NotFound):
        store.remove_from_list(list_id, [ann, str(uuid.uuid4())])
    with pytest.raises(NotFound):
        store.remove_from_list(str(uuid.uuid4()), [ann])

    assert len(store.list_members(list_id)) == 1


# --- search and ids ------------------------------------------------------------------------------


def test_search_matches_primary_and_alternate_emails_case_insensitively(
    store: SandboxStore,
) -> None:
    run(store, [{"email": "ann@example.com", "alternate_emails": ["Ann@Work.example.com"]}])

    found = store.search_emails(
        ["ANN@example.com", "ann@work.example.com", "", "nobody@example.com"]
    )

    assert set(found) == {"ann@example.com", "ann@work.example.com", "nobody@example.com"}
    assert found["ann@work.example.com"] == found["ann@example.com"]
    assert found["nobody@example.com"] is None


def test_replacing_alternate_emails_forgets_the_old_ones(store: SandboxStore) -> None:
    run(store, [{"email": "ann@example.com", "alternate_emails": ["old@example.com"]}])
    run(store, [{"email": "ann@example.com", "alternate_emails": ["new@example.com"]}])

    found = store.search_emails(["old@example.com", "new@example.com"])

    assert found["old@example.com"] is None
    assert found["new@example.com"] is not None


def test_ids_resolve_until_reset(store: SandboxStore) -> None:
    run(store, [{"email": "ann@example.com"}, {"email": "bob@example.com"}])
    ann = find(store, "ann@example.com")
    bob = find(store, "bob@example.com")

    assert ann["id"] != bob["id"]
    assert store.get_contact(ann["id"].upper()) == ann
    assert store.get_contact(str(uuid.uuid4())) is None
    assert store.get_contact("not-an-id") is None
    store.reset()
    assert store.get_contact(ann["id"]) is None
    assert store.contact_count() == 0


# --- custom fields -------------------------------------------------------------------------------


def test_custom_field_ids_count_up_and_carry_the_type(store: SandboxStore) -> None:
    ids = [
        store.create_custom_field(name, kind).id
        for name, kind in (("a", "Text"), ("b", "Number"), ("c", "Date"))
    ]

    assert ids == ["e1_T", "e2_N", "e3_D"]
    with pytest.raises(Conflict):
        store.create_custom_field("a", "Number")
    with pytest.raises(Conflict):
        store.create_custom_field("first_name", "Text", reserved={"first_name"})


@pytest.mark.parametrize(
    ("field_type", "value", "ok"),
    [
        ("Number", 3, True),
        ("Number", 2.5, True),
        ("Number", "42", True),
        ("Number", "-1.5e3", True),
        ("Number", "abc", False),
        ("Number", "nan", False),
        ("Number", True, False),
        ("Number", float("inf"), False),
        ("Date", "1990-05-01", True),
        ("Date", "05/01/1990", True),
        ("Date", "1990-13-01", False),
        ("Date", "02/30/2020", False),
        ("Date", "yesterday", False),
        ("Date", 19900501, False),
        ("Text", "anything", True),
        ("Text", None, False),
        ("Text", ["a"], False),
    ],
)
def test_custom_values_must_fit_their_type(field_type: Any, value: Any, ok: bool) -> None:
    assert (custom_value_problem(field_type, value) is None) == ok


# --- import jobs ---------------------------------------------------------------------------------


def test_a_job_errors_the_contacts_whose_values_do_not_fit_and_applies_the_rest(
    store: SandboxStore,
) -> None:
    list_id = store.create_list("L").id
    orders = store.create_custom_field("orders", "Number").id
    born = store.create_custom_field("born", "Date").id

    job = run(
        store,
        [
            {"email": "ann@example.com", "custom_fields": {orders: 1, born: "1990-05-01"}},
            {"email": "bob@example.com", "custom_fields": {orders: "abc"}},
            {"email": "cy@example.com", "custom_fields": {born: "1990-31-31"}},
            {"email": "dee@example.com"},
        ],
        (list_id,),
    )

    assert job.status == "errored"
    assert (job.requested_count, job.created_count, job.errored_count) == (4, 2, 2)
    errors = store.job_errors(job.id)
    assert [e for e, _ in errors] == ["bob@example.com", "cy@example.com"]
    assert "Number" in errors[0][1]
    assert [m["email"] for m in store.list_members(list_id)] == [
        "ann@example.com",
        "dee@example.com",
    ]
    assert store.search_emails(["bob@example.com"])["bob@example.com"] is None


def test_injected_errors_and_failures(store: SandboxStore) -> None:
    list_id = store.create_list("L").id
    contacts = [{"email": f"u{i}@example.com"} for i in range(4)]

    some = run(store, contacts, (list_id,), error_indexes={1, 3})
    failed = run(store, [{"email": "new@example.com"}], (list_id,), fail=True)

    assert (some.status, some.created_count, some.errored_count) == ("errored", 2, 2)
    assert (failed.status, failed.created_count, failed.errored_count) == ("failed", 0, 1)
    assert store.job_errors(failed.id) == [("new@example.com", "the import job failed")]
    assert store.contact_count() == 2
    assert store.jobs_by_status() == {"pending": 0, "completed": 0, "errored": 1, "failed": 1}


def test_jobs_wait_for_their_time_and_run_once(store: SandboxStore, clock: FakeClock) -> None:
    early = store.submit_upsert([{"email": "a@example.com"}], [], due=10.0)
    late = store.submit_upsert([{"email": "b@example.com"}], [], due=20.0)

    assert store.due_jobs(now=5.0) == []
    assert store.next_due() == 10.0
    assert store.due_jobs(now=25.0) == [early, late]
    pending = store.job(early)
    assert pending is not None
    assert (pending.status, pending.finished_at) == ("pending", None)
    clock.now += 1
    first = store.apply_upsert(early)
    again = store.apply_upsert(early)

    assert first == again
    assert first.finished_at == clock.now
    assert store.next_due() == 20.0
    assert store.contact_count() == 1
    assert store.job("unknown") is None


# --- size ----------------------------------------------------------------------------------------


def test_a_contact_costs_a_few_hundred_bytes() -> None:
    """Memory, not time: deterministic enough to guard the column layout against a regression
    to a dict per contact (which costs over 1 KB)."""
    store = SandboxStore()
    list_id = store.create_list("L").id
    batches = [
        [
            {"email": f"user{n:07d}@example.com", "first_name": "Firstname", "last_name": "Last"}
            for n in range(start, start + 5_000)
        ]
        for start in range(0, 10_000, 5_000)
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches:
            job_id = store.submit_upsert(batch, [list_id], due=0.0)
            store.apply_upsert(job_id)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert store.contact_count() == 10_000
    assert used / 10_000 < 500


# --- SendGrid's lag ------------------------------------------------------------------------------


@pytest.fixture
def ticks() -> FakeClock:
    """The store's monotonic clock (due times of jobs, exports and lagged list changes)."""
    return FakeClock()


@pytest.fixture
def lagged(clock: FakeClock, ticks: FakeClock) -> SandboxStore:
    return SandboxStore(clock=clock, monotonic=ticks)


def test_a_lagged_join_is_invisible_until_the_lag_has_passed(
    lagged: SandboxStore, ticks: FakeClock
) -> None:
    list_id = lagged.create_list("L").id
    job_id = lagged.submit_upsert([{"email": "ann@example.com", "city": "Oslo"}], [list_id], 0.0)

    job = lagged.apply_upsert(job_id, lag=10.0)
    ann = find(lagged, "ann@example.com")
    before = (
        lagged.list_members(list_id),
        lagged.get_list(list_id),
        ann["list_ids"],
        lagged.next_due(),
        lagged.apply_due_changes(),
    )
    ticks.now += 10.0
    waiting = lagged.apply_due_changes()

    assert job.status == "completed"  # the job is done; its contacts and fields exist at once
    assert ann["city"] == "Oslo"
    members, info, list_ids, next_due, still_waiting = before
    assert members == []
    assert info is not None and info.contact_count == 0
    assert list_ids == []
    assert next_due == ticks.now
    assert still_waiting == 1
    assert waiting == 0
    assert lagged.list_members(list_id) == [{"email": "ann@example.com", "city": "Oslo"}]
    assert find(lagged, "ann@example.com")["list_ids"] == [list_id]
    assert lagged.next_due() is None


def test_a_lagged_removal_keeps_the_member_visible_until_the_lag_has_passed(
    lagged: SandboxStore, ticks: FakeClock
) -> None:
    list_id = lagged.create_list("L").id
    run(lagged, [{"email": "ann@example.com"}, {"email": "bob@example.com"}], (list_id,))
    ann = find(lagged, "ann@example.com")["id"]

    removed = lagged.remove_from_list(list_id, [ann], lag=5.0)
    during = [m["email"] for m in lagged.list_members(list_id)]
    ticks.now += 4.9
    almost = [x.contact_count for x in lagged.lists()]
    ticks.now += 0.1

    assert removed == 1
    assert during == ["ann@example.com", "bob@example.com"]
    assert almost == [2]
    assert [m["email"] for m in lagged.list_members(list_id)] == ["bob@example.com"]
    assert lagged.summary()["lists"][0]["contact_count"] == 1


def test_changes_apply_in_order_even_when_the_lag_shrinks(
    lagged: SandboxStore, ticks: FakeClock
) -> None:
    """A removal sent with no lag after a join still lagging must not be overtaken by it."""
    list_id = lagged.create_list("L").id
    job_id = lagged.submit_upsert([{"email": "ann@example.com"}], [list_id], 0.0)
    lagged.apply_upsert(job_id, lag=10.0)
    ann = find(lagged, "ann@example.com")["id"]

    lagged.remove_from_list(list_id, [ann], lag=0.0)
    now = lagged.list_members(list_id)
    ticks.now += 10.0

    assert now == []
    assert lagged.list_members(list_id) == []  # joined, then removed: in that order
    assert lagged.apply_due_changes() == 0


# --- list deletion -------------------------------------------------------------------------------


def test_deleting_a_list_keeps_its_contacts_and_frees_its_name(store: SandboxStore) -> None:
    doomed, other = store.create_list("Doomed").id, store.create_list("Other").id
    run(store, [{"email": "ann@example.com"}], (doomed, other))

    deleted = store.delete_list(doomed)

    assert deleted == 0
    assert store.get_list(doomed) is None
    assert store.unknown_list_ids([doomed, other]) == [doomed]
    assert store.contact_count() == 1
    assert find(store, "ann@example.com")["list_ids"] == [other]
    assert store.create_list("Doomed").id != doomed  # the name is free again
    with pytest.raises(NotFound):
        store.delete_list(doomed)
    with pytest.raises(NotFound):
        store.list_members(doomed)


def test_deleting_a_list_with_its_contacts_deletes_them_from_the_account(
    lagged: SandboxStore, ticks: FakeClock
) -> None:
    doomed, other = lagged.create_list("Doomed").id, lagged.create_list("Other").id
    run(
        lagged,
        [{"email": "ann@example.com", "alternate_emails": ["a@work.example.com"]}],
        (doomed, other),
    )
    run(lagged, [{"email": "bob@example.com"}], (other,))
    late = lagged.submit_upsert([{"email": "cy@example.com"}], [doomed], 0.0)
    lagged.apply_upsert(late, lag=30.0)  # cy will be a member: deleted too
    ann = find(lagged, "ann@example.com")["id"]
    cy = find(lagged, "cy@example.com")["id"]

    deleted = lagged.delete_list(doomed, delete_contacts=True)
    ticks.now += 30.0

    assert deleted == 2
    assert lagged.get_contact(ann) is None
    assert lagged.get_contact(cy) is None
    found = lagged.search_emails(["ann@example.com", "a@work.example.com", "cy@example.com"])
    assert set(found.values()) == {None}
    assert [m["email"] for m in lagged.list_members(other)] == ["bob@example.com"]
    assert lagged.contact_count() == 1
    assert lagged.summary()["contacts"] == 1
    run(lagged, [{"email": "ann@example.com"}], (other,))  # back again, as a new contact
    assert find(lagged, "ann@example.com")["id"] != ann
    assert lagged.get_contact(ann) is None


# --- contact exports -----------------------------------------------------------------------------


def export_rows(store: SandboxStore, export: Any) -> list[list[str]]:
    """Every row of every file of a ready export (each file's header row included)."""
    rows: list[list[str]] = []
    for n in range(1, export.file_count + 1):
        data = store.export_file(export.id, n, export.token)
        assert data[:2] == b"\x1f\x8b"
        rows.extend(csv.reader(io.StringIO(gzip.decompress(data).decode("utf-8"), newline="")))
    return rows


def finished(store: SandboxStore, list_ids: list[str], **kw: Any) -> Any:
    export = store.submit_export(list_ids, due=0.0, **kw)
    assert export.status == "pending"
    return store.finish_export(export.id)


def test_a_csv_export_holds_the_list_members_with_every_column(
    store: SandboxStore, clock: FakeClock
) -> None:
    list_id = store.create_list("L").id
    score = store.create_custom_field("Score", "Number").id
    born = store.create_custom_field("born", "Date").id
    tier = store.create_custom_field("tier", "Text").id
    run(store, [{"email": "outsider@example.com"}])
    run(
        store,
        [
            {
                "email": "ann@example.com",
                "first_name": 'Ann "Annie", Jr',
                "city": "Zürich",
                "alternate_emails": ["a1@example.com", "a2@example.com"],
                "external_id": "x-1",
                "custom_fields": {score: 12, born: "05/01/1990", tier: "gold\nplus"},
            },
            {"email": "bob@example.com", "custom_fields": {score: 12.5}},
        ],
        (list_id,),
    )
    ann = find(store, "ann@example.com")

    export = finished(store, [list_id])
    header, *rows = export_rows(store, export)
    by_column = [dict(zip(header, row, strict=True)) for row in rows]

    assert (export.status, export.contact_count, export.file_count) == ("ready", 2, 1)
    assert header == [*EXPORT_CSV_COLUMNS, "Score", "born", "tier"]
    assert [r["EMAIL"] for r in by_column] == ["ann@example.com", "bob@example.com"]
    first, second = by_column
    assert first["FIRST_NAME"] == 'Ann "Annie", Jr'
    assert first["CITY"] == "Zürich"
    assert first["ALTERNATE_EMAILS"] == "a1@example.com,a2@example.com"
    assert first["EXTERNAL_ID"] == "x-1"
    assert (first["Score"], first["born"], first["tier"]) == ("12", "05/01/1990", "gold\nplus")
    assert first["CONTACT_ID"] == ann["id"]
    assert first["CREATED_AT"] == ann["created_at"]
    assert first["LAST_NAME"] == first["PHONE_NUMBER"] == first["ANONYMOUS_ID"] == ""
    assert (second["Score"], second["born"], second["ALTERNATE_EMAILS"]) == ("12.5", "", "")
    raw = gzip.decompress(store.export_file(export.id, 1, export.token))
    assert raw.count(b"\r\n") == 3  # RFC 4180 line ends (the one in "gold\nplus" is quoted)
    assert b'"Ann ""Annie"", Jr"' in raw


def test_an_export_is_split_so_that_no_file_passes_the_size_limit(store: SandboxStore) -> None:
    list_id = store.create_list("L").id
    run(store, [{"email": f"user{i:03d}@example.com"} for i in range(50)], (list_id,))
    run(store, [{"email": "long@example.com", "first_name": "x" * 50}], (list_id,))
    header_bytes = len(",".join(EXPORT_CSV_COLUMNS)) + 2
    limit = header_bytes + 300

    export = finished(store, [list_id], max_file_bytes=limit)
    files = [
        gzip.decompress(store.export_file(export.id, n, export.token))
        for n in range(1, export.file_count + 1)
    ]
    one_row = finished(store, [list_id], max_file_bytes=1)

    assert export.file_count > 2
    assert all(len(f) <= limit for f in files)
    assert all(f.startswith(b"EMAIL,FIRST_NAME,") for f in files)
    emails = [row[0] for f in files for row in csv.reader(io.StringIO(f.decode()))]
    members = [f"user{i:03d}@example.com" for i in range(50)]
    assert [e for e in emails if e != "EMAIL"] == [*members, "long@example.com"]
    assert one_row.file_count == 51  # at least one row per file, even past the limit
    assert one_row.contact_count == 51


def test_a_json_export_is_json_lines_with_lower_case_keys(store: SandboxStore) -> None:
    list_id = store.create_list("L").id
    score = store.create_custom_field("score", "Number").id
    run(
        store,
        [
            {
                "email": "ann@example.com",
                "first_name": "Ann",
                "alternate_emails": ["a@work.example.com"],
                "custom_fields": {score: 3},
            }
        ],
        (list_id,),
    )

    export = finished(store, [list_id], file_type="json")
    lines = gzip.decompress(store.export_file(export.id, 1, export.token)).decode().splitlines()
    row = json.loads(lines[0])

    assert len(lines) == 1
    assert row["email"] == "ann@example.com"
    assert row["contact_id"] == find(store, "ann@example.com")["id"]
    assert row["first_name"] == "Ann"
    assert row["last_name"] == ""
    assert row["alternate_emails"] == ["a@work.example.com"]
    assert row["custom_fields"] == {"score": 3}
    assert {"created_at", "updated_at", "external_id", "phone_number"} <= set(row)


def test_an_export_without_lists_holds_every_contact_and_takes_what_is_visible(
    lagged: SandboxStore, ticks: FakeClock
) -> None:
    list_id = lagged.create_list("L").id
    run(lagged, [{"email": "ann@example.com"}, {"email": "bob@example.com"}], (list_id,))
    job_id = lagged.submit_upsert([{"email": "cy@example.com"}], [list_id], 0.0)
    lagged.apply_upsert(job_id, lag=60.0)

    everyone = finished(lagged, [])
    visible = finished(lagged, [list_id])
    ticks.now += 60.0
    later = finished(lagged, [list_id, list_id])

    assert [r[0] for r in export_rows(lagged, everyone)[1:]] == [
        "ann@example.com",
        "bob@example.com",
        "cy@example.com",
    ]
    assert [r[0] for r in export_rows(lagged, visible)[1:]] == [
        "ann@example.com",
        "bob@example.com",
    ]
    assert later.list_ids == (list_id,)
    assert later.contact_count == 3


def test_exports_wait_for_their_time_and_fail_when_told_or_when_their_list_is_gone(
    store: SandboxStore,
) -> None:
    list_id = store.create_list("L").id
    doomed = store.create_list("Doomed").id
    early = store.submit_export([list_id], due=10.0)
    late = store.submit_export([doomed], due=20.0)

    due = (store.due_exports(5.0), store.due_exports(15.0), store.next_due())
    failed = store.finish_export(early.id, fail=True, message="injected")
    store.delete_list(doomed)
    orphan = store.finish_export(late.id)

    assert due == ([], [early.id], 10.0)
    assert (failed.status, failed.message, failed.file_count) == ("failure", "injected", 0)
    assert failed.completed_at is not None
    assert (orphan.status, orphan.message) == ("failure", f"list {doomed} was deleted")
    assert store.finish_export(early.id) == failed  # settled: left as it is
    assert store.next_due() is None
    with pytest.raises(NotFound):
        store.submit_export([list_id, str(uuid.uuid4())], due=0.0)
    with pytest.raises(NotFound):
        store.export_file(failed.id, 1, failed.token)
    assert [e.status for e in store.exports()] == ["failure", "failure"]
    assert store.summary()["exports"] == {"pending": 0, "ready": 0, "failure": 2}


def test_export_files_need_their_signature_and_only_the_latest_are_kept(
    store: SandboxStore,
) -> None:
    list_id = store.create_list("L").id
    run(store, [{"email": "ann@example.com"}], (list_id,))

    exports = [finished(store, [list_id]) for _ in range(KEPT_EXPORTS + 1)]
    oldest, second, newest = exports[0], exports[1], exports[-1]

    with pytest.raises(Forbidden):
        store.export_file(newest.id, 1, oldest.token)
    with pytest.raises(Expired):
        store.export_file(oldest.id, 1, oldest.token)
    with pytest.raises(NotFound):
        store.export_file(newest.id, 2, newest.token)
    with pytest.raises(NotFound):
        store.export_file(str(uuid.uuid4()), 1, newest.token)
    assert store.export_file(second.id, 1, second.token)[:2] == b"\x1f\x8b"
    info = store.export(oldest.id)
    assert info is not None and info.expired and info.status == "ready"
    store.reset()
    assert store.export(newest.id) is None


def test_an_export_holds_its_compressed_files_not_its_rows() -> None:
    """Memory, not time: the rows are written chunk by chunk, never as one string."""
    store = SandboxStore()
    list_id = store.create_list("L").id
    job_id = store.submit_upsert(
        [
            {"email": f"user{n:07d}@example.com", "first_name": "Firstname", "city": "Oslo"}
            for n in range(40_000)
        ],
        [list_id],
        due=0.0,
    )
    store.apply_upsert(job_id)
    export = store.submit_export([list_id], due=0.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        done = store.finish_export(export.id)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()

    uncompressed = len(gzip.decompress(store.export_file(done.id, 1, done.token)))
    assert done.contact_count == 40_000
    assert uncompressed > 5_000_000
    assert peak < uncompressed / 2


def test_an_export_that_cannot_be_written_ends_in_failure_not_pending_forever(
    store: SandboxStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    list_id = store.create_list("L").id
    export = store.submit_export([list_id], due=0.0)

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(store, "_write_export", broken)
    with pytest.raises(RuntimeError):
        store.finish_export(export.id)

    after = store.export(export.id)
    assert after is not None
    assert (after.status, after.message) == ("failure", "the sandbox failed to write the export")
    assert store.next_due() is None
