"""The sandbox's state without HTTP: how upserts merge, who is on which list, what a search
finds, how an import job counts its contacts, and that a contact stays small."""

from __future__ import annotations

import tracemalloc
import uuid
from typing import Any

import pytest

from exporter.local.sandbox_store import (
    Conflict,
    NotFound,
    SandboxStore,
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
