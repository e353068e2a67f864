import io
import json
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.planning import plan, plan_file
from exporter.core.snapshots.snapshot import open_snapshot
from exporter.core.synced_state.delta import Delta, Resend
from exporter.core.synced_state.keys import KeySet, email_key
from exporter.core.synced_state.state import UNSENT, StateFormatError, SyncedState, read_emails
from exporter.core.synced_state.writing import SortedSpill, merge_members, write_state


def csv_of(people: dict[str, str]) -> bytes:
    rows = ["Email,FirstName"] + [f"{e},{n}" for e, n in people.items()]
    return ("\n".join(rows) + "\n").encode()


def run(people: dict[str, str], old: SyncedState, full: bool = False):
    delta = Delta(old, full_refresh=full)
    sent: list[dict[str, str]] = []
    with open_snapshot(io.BytesIO(csv_of(people)), name="s.csv") as snapshot:
        stats = plan(
            snapshot, delta=delta, on_batch=lambda b: sent.extend(json.loads(c) for c in b.contacts)
        )
    index, emails = io.BytesIO(), io.BytesIO()
    delta.write(index, emails)
    new = SyncedState.read_index(index.getvalue())
    return stats, sent, delta, new, emails.getvalue()


people = st.dictionaries(
    st.integers(0, 300).map(lambda n: f"user{n}@example.com"),
    st.sampled_from(["Ann", "Bo", "Cy", "Dee", "Zoë"]),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(before=people, after=people)
def test_only_new_and_changed_contacts_are_sent_and_leavers_are_found(before, after):
    _, _, _, state, emails = run(before, SyncedState.empty())
    stats, sent, delta, _, _ = run(after, state)
    expected = {e for e, n in after.items() if before.get(e) != n}
    assert {c["email"] for c in sent} == expected
    assert stats.valid == len(after)
    assert stats.unchanged == len(after) - len(expected)
    assert delta.new == len(set(after) - set(before))
    assert delta.changed == len(expected) - delta.new
    leavers = set(read_emails(io.BytesIO(emails), state.left()))
    assert leavers == set(before) - set(after)


def test_full_refresh_sends_everyone_and_counts_none_unchanged():
    _, _, _, state, _ = run({"a@b.co": "A", "c@d.co": "C"}, SyncedState.empty())
    stats, sent, _, _, _ = run({"a@b.co": "A", "c@d.co": "C"}, state, full=True)
    assert len(sent) == 2 and stats.unchanged == 0  # "unchanged" counts what was not sent


def test_state_round_trips_and_is_sorted():
    *_, state, emails = run({f"u{i}@e.co": "x" for i in range(1000)}, SyncedState.empty())
    assert len(state) == 1000
    assert list(state.keys) == sorted(state.keys)
    assert len(emails.decode().splitlines()) == 1000
    assert state.index_of(123) == -1


@pytest.mark.parametrize(
    "data", [b"", b"SGSYNC01", b"NOTSTATE" + bytes(8), b"SGSYNC01" + (5).to_bytes(8, "little")]
)
def test_damaged_state_is_refused(data):
    with pytest.raises(StateFormatError):
        SyncedState.read_index(data)


def test_plan_file_without_delta_is_unchanged_behaviour():
    stats = plan_file(io.BytesIO(csv_of({"a@b.co": "A"})), name="x.csv")
    assert (stats.valid, stats.unchanged) == (1, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 40), max_size=300))
def test_a_keyset_is_a_set(keys):
    from exporter.core.synced_state.keys import KeySet

    ks, reference = KeySet(capacity=4), set()
    for key in keys:
        assert ks.add(key) == (key not in reference)
        reference.add(key)
    assert len(ks) == len(reference)
    assert all(k in ks for k in reference)
    assert not any(k in ks for k in range(41, 80) if k not in reference)


def test_members_spilled_to_disk_in_several_runs_come_back_sorted_and_whole(monkeypatch):
    import exporter.core.synced_state.writing

    monkeypatch.setattr(
        exporter.core.synced_state.writing, "SPILL_MEMBERS", 7
    )  # 100 members: 15 sorted runs
    monkeypatch.setattr(
        exporter.core.synced_state.writing, "READ_BLOCK", 10
    )  # records cross every block's end
    people = {f"u{i}@e.co": f"N{i % 3}" for i in range(100)}
    *_, state, emails = run(people, SyncedState.empty())
    assert len(state) == 100
    assert list(state.keys) == sorted(state.keys)
    lines = emails.decode().splitlines()
    assert sorted(lines) == sorted(people)
    assert [email_key(e) for e in lines] == list(state.keys)  # emails in key order
    # and the next run reads it back: nobody changed, one renamed, one gone
    people["u5@e.co"] = "Renamed"
    del people["u9@e.co"]
    stats, sent, delta, _, _ = run(people, state)
    assert [c["email"] for c in sent] == ["u5@e.co"]
    assert stats.unchanged == 98
    assert list(read_emails(io.BytesIO(emails), delta.old.left())) == ["u9@e.co"]


def test_duplicates_are_found_among_old_members_and_new_ones():
    *_, state, _ = run({"a@b.co": "A"}, SyncedState.empty())
    data = b"Email,FirstName\na@b.co,A\nnew@b.co,N\nA@B.CO,Again\nnew@b.co,Twice\n"
    delta = Delta(state)
    with open_snapshot(io.BytesIO(data), name="s.csv") as snapshot:
        stats = plan(snapshot, delta=delta)
    assert (stats.valid, stats.duplicates, stats.unchanged, delta.new) == (2, 2, 1, 1)


def test_a_merged_state_marks_unsent_members_and_keeps_additions_once():
    people = {f"u{i}@e.co": "A" for i in range(10)}
    *_, state, emails = run(people, SyncedState.empty())
    unsent = KeySet()
    unsent.update([email_key("u3@e.co"), email_key("u7@e.co"), 12345])
    additions = SortedSpill()
    for email in ("gone@e.co", "u5@e.co", "gone@e.co"):  # u5 is a member already
        additions.add(email_key(email), UNSENT, 0, email)
    index, out = io.BytesIO(), io.BytesIO()
    merged = merge_members(state, io.BytesIO(emails), unsent=unsent, additions=additions)
    assert write_state(merged, index, out, ["first_name"]) == 11
    again = SyncedState.read_index(index.getvalue(), masks=True)
    assert again.fields == ("first_name",)
    assert list(again.keys) == sorted(again.keys)
    lines = out.getvalue().decode().split()
    assert sorted(lines) == sorted([*people, "gone@e.co"])
    hashes = dict(zip(lines, again.hashes, strict=True))
    assert [e for e, h in hashes.items() if h == UNSENT] == sorted(
        ["u3@e.co", "u7@e.co", "gone@e.co"], key=email_key
    )
    # The next run sends the unsent ones again, and finds the addition gone from the segment.
    stats, sent, delta, _, _ = run(people, again)
    assert sorted(c["email"] for c in sent) == ["u3@e.co", "u7@e.co"]
    assert (stats.valid, stats.unchanged) == (10, 8)
    assert list(read_emails(io.BytesIO(out.getvalue()), delta.old.left())) == ["gone@e.co"]


def test_masks_and_field_names_round_trip_and_a_first_format_state_still_reads():
    keys, hashes, masks = array("Q", [1, 5, 9]), array("Q", [11, 55, 99]), array("Q", [0, 3, 1])
    state = SyncedState(keys, hashes, masks, ["first_name", "custom:tier"])
    again = SyncedState.read_index(state.to_index(), masks=True)
    assert list(again.masks or []) == [0, 3, 1]
    assert again.fields == ("first_name", "custom:tier")
    assert SyncedState.read_index(state.to_index()).masks is None  # a planner skips them
    first_format = b"SGSYNC01" + (3).to_bytes(8, "little") + keys.tobytes() + hashes.tobytes()
    old = SyncedState.read_index(first_format, masks=True)
    assert (list(old.keys), list(old.hashes), list(old.masks or [])) == (
        [1, 5, 9],
        [11, 55, 99],
        [0, 0, 0],
    )
    with pytest.raises(StateFormatError):
        SyncedState.read_index(state.to_index()[:-1])


def test_a_resend_observer_sends_exactly_the_keys_asked_for_once():
    keys = KeySet()
    keys.update([email_key("b@e.co"), email_key("d@e.co")])
    resend = Resend(keys)
    data = b"Email,FirstName\na@e.co,A\nb@e.co,B\nB@E.CO,Again\nc@e.co,C\nd@e.co,D\n"
    sent: list[dict[str, str]] = []
    with open_snapshot(io.BytesIO(data), name="s.csv") as snapshot:
        stats = plan(
            snapshot,
            delta=resend,
            on_batch=lambda b: sent.extend(json.loads(c) for c in b.contacts),
        )
    assert sent == [{"email": "b@e.co", "first_name": "B"}, {"email": "d@e.co", "first_name": "D"}]
    assert (resend.sent, stats.duplicates) == (2, 1)
