"""The sandbox's state file (`exporter.local.sandbox.persist`, `saver`): what a restart keeps
(lists, members, contacts and their ids, custom fields, jobs, exports), what it does not (export
files, which have expired), atomic saves, and a file that cannot be read."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.local.sandbox import persist
from exporter.local.sandbox.saver import Saver
from exporter.local.sandbox.store import SandboxStore


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(store: SandboxStore, contacts: list[dict[str, Any]], *list_ids: str) -> None:
    store.apply_upsert(store.submit_upsert(contacts, list(list_ids), due=0.0))


def reloaded(store: SandboxStore, path: Path, **kw: Any) -> SandboxStore:
    persist.save(store, path)
    again = SandboxStore(**kw)
    assert persist.load(again, path) is not None
    return again


def test_a_restart_keeps_lists_members_contacts_ids_and_fields(tmp_path: Path) -> None:
    store = SandboxStore()
    tier = store.create_custom_field("tier", "Text")
    score = store.create_custom_field("score", "Number")
    news = store.create_list("news")
    vip = store.create_list("vip")
    run(
        store,
        [
            {"email": "ann@example.com", "first_name": "Ann", "custom_fields": {tier.id: "gold"}},
            {"email": "bob@example.com", "alternate_emails": ["bobby@example.com"]},
            {"email": 'zoë\t"q"@example.com', "city": "Zürich\nnorth"},
            {"email": "gone@example.com"},
        ],
        news.id,
    )
    run(store, [{"email": "ann@example.com", "custom_fields": {score.id: 7}}], vip.id)
    gone = store.search_emails(["gone@example.com"])["gone@example.com"]
    assert gone is not None
    store.delete_list(store.create_list("doomed").id)
    doomed = store.create_list("doomed")
    run(store, [{"email": "gone@example.com"}], doomed.id)
    store.delete_list(doomed.id, delete_contacts=True)  # a tombstone slot
    bob = store.search_emails(["bob@example.com"])["bob@example.com"]
    assert bob is not None

    again = reloaded(store, tmp_path / "state")

    assert again.summary() == store.summary()
    for list_id in (news.id, vip.id):
        assert again.list_members(list_id) == store.list_members(list_id)
    assert again.get_contact(bob["id"]) == store.get_contact(bob["id"])  # the same id
    assert again.get_contact(gone["id"]) is None  # deleted stays deleted
    assert again.search_emails(["bobby@example.com"]) == store.search_emails(["bobby@example.com"])
    assert [f.id for f in again.custom_fields()] == [tier.id, score.id]
    assert again.create_custom_field("third", "Date").id == "e3_D"
    with pytest.raises(Exception, match="already exists"):
        again.create_list("news")
    # Life goes on: an upsert merges into the reloaded contact, a new one gets the next slot.
    run(again, [{"email": "bob@example.com", "last_name": "B"}, {"email": "new@x.org"}], vip.id)
    assert [m["email"] for m in again.list_members(vip.id)] == [
        "ann@example.com",
        "bob@example.com",
        "new@x.org",
    ]


def test_jobs_and_exports_outlive_a_restart_but_export_files_expire(tmp_path: Path) -> None:
    monotonic = Clock(1000.0)
    store = SandboxStore(monotonic=monotonic)
    news = store.create_list("news")
    run(store, [{"email": "ann@example.com"}], news.id)
    done = store.submit_upsert([{"email": "bob@example.com"}], [news.id], due=0.0)
    store.apply_upsert(done)
    pending = store.submit_upsert([{"email": "cy@example.com"}], [news.id], due=1030.0)
    ready = store.submit_export([news.id], due=0.0)
    store.finish_export(ready.id)
    waiting = store.submit_export([news.id], due=1020.0)

    later = Clock(50.0)  # another process: another monotonic clock
    again = reloaded(store, tmp_path / "state", monotonic=later)

    assert again.job(done) == store.job(done)
    assert again.job(pending) == store.job(pending)
    assert again.due_jobs(later.now + 29) == []
    assert again.due_jobs(later.now + 30) == [pending]  # the 30 s it had left
    again.apply_upsert(pending)
    assert len(again.list_members(news.id)) == 3
    info = again.export(ready.id)
    assert info is not None and info.status == "ready" and info.expired
    with pytest.raises(Exception, match="expired"):
        again.export_file(ready.id, 1, info.token)
    assert again.due_exports(later.now + 20) == [waiting.id]
    finished = again.finish_export(waiting.id)
    assert finished.status == "ready"
    assert finished.contact_count == 3


def test_list_changes_still_lagging_are_saved_as_applied(tmp_path: Path) -> None:
    monotonic = Clock(0.0)
    store = SandboxStore(monotonic=monotonic)
    news = store.create_list("news")
    job = store.submit_upsert([{"email": "ann@example.com"}], [news.id], due=0.0)
    store.apply_upsert(job, lag=60)
    assert store.list_members(news.id) == []

    again = reloaded(store, tmp_path / "state")

    assert [m["email"] for m in again.list_members(news.id)] == ["ann@example.com"]


def test_a_file_that_is_not_whole_or_not_ours_is_refused_naming_the_line(tmp_path: Path) -> None:
    store = SandboxStore()
    run(store, [{"email": f"p{i}@example.com"} for i in range(5)], store.create_list("l").id)
    path = tmp_path / "state"
    persist.save(store, path)
    whole = path.read_bytes()

    assert persist.load(SandboxStore(), tmp_path / "missing") is None
    path.write_bytes(whole[: whole.index(b"\nL\t") + 1])
    with pytest.raises(persist.StateFileError, match=r"line 8: the file ends early.*--fresh"):
        persist.load(SandboxStore(), path)
    path.write_bytes(whole[:-1])
    with pytest.raises(persist.StateFileError, match="cut short"):
        persist.load(SandboxStore(), path)
    path.write_bytes(b'{"lists": []}\n')
    with pytest.raises(persist.StateFileError, match="line 1: not a sandbox state file"):
        persist.load(SandboxStore(), path)
    path.write_bytes(whole.replace(b"M\t0,", b"M\t99,"))
    with pytest.raises(persist.StateFileError, match="contact slot 99 does not exist"):
        persist.load(SandboxStore(), path)


def test_saves_are_atomic_and_leave_no_temporary_file(tmp_path: Path) -> None:
    store = SandboxStore()
    news = store.create_list("news")
    path = tmp_path / "sandbox" / "state"
    persist.save(store, path)
    first = path.read_bytes()
    run(store, [{"email": f"p{i}@example.com"} for i in range(1000)], news.id)

    persist.save(store, path)

    assert path.read_bytes() != first
    assert sorted(p.name for p in path.parent.iterdir()) == ["state"]


def test_the_saver_saves_after_changes_and_at_close_only_when_something_changed(
    tmp_path: Path,
) -> None:
    store = SandboxStore()
    path = tmp_path / "state"
    saver = Saver(store, path, interval=0.05)
    saver.start()
    try:
        saver.close()
        assert not path.exists()  # nothing changed: nothing written
        saver = Saver(store, path, interval=0.05)
        saver.start()
        store.create_list("news")
        saver.changed()
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.exists()
        store.create_list("later")
        saver.changed()
    finally:
        saver.close()
    again = SandboxStore()
    persist.load(again, path)
    assert [x.name for x in again.lists()] == ["news", "later"]
    assert [t for t in threading.enumerate() if t.name == "sandbox-saver"] == []
