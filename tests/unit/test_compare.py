"""Comparing a list read back from SendGrid with a run's pending state, member by member."""

from __future__ import annotations

import io

from exporter.core.compare import Comparer
from exporter.core.contacts import ContactBuilder
from exporter.core.mapping import CustomField, FieldMapping, field_spec
from exporter.core.planning import plan
from exporter.core.snapshots.snapshot import open_snapshot
from exporter.core.synced_state.delta import Delta
from exporter.core.synced_state.keys import email_key
from exporter.core.synced_state.state import SyncedState

FIELDS = ("first_name", "city", "custom:score")
CUSTOM = {"score": CustomField("e1_N", "score", "Number")}
SEGMENT = (
    "Email,FirstName,City,Score\n"
    "a@e.co,Ann,Oslo,1e3\n"
    "b@e.co,Bo,,7\n"  # no city: whatever the list holds for it is not compared
    "c@e.co,Cy,Rome,\n"
)


def expected() -> SyncedState:
    mapping = ["first_name=FirstName", "city=City", "custom:score=Score"]
    delta = Delta(fields=FIELDS)
    with open_snapshot(
        io.BytesIO(SEGMENT.encode()), name="s.csv", mapping=FieldMapping.parse(mapping)
    ) as snapshot:
        plan(snapshot, delta=delta, custom_fields=CUSTOM)
    index, emails = io.BytesIO(), io.BytesIO()
    delta.write(index, emails)
    return SyncedState.read_index(index.getvalue(), masks=True)


def builder() -> ContactBuilder:
    return ContactBuilder([field_spec(n) for n in ("email", *FIELDS)], CUSTOM)


def test_a_list_holding_the_segment_in_sendgrid_spellings_is_equal():
    comparer = Comparer(expected(), builder())
    comparer.row("a@e.co", ["Ann", "Oslo", "1000"])  # SendGrid shows 1e3 as 1000
    comparer.row("b@e.co", ["Bo", "Paris", "7"])  # a city set by hand: not ours to compare
    comparer.row("c@e.co", ["Cy", "Rome", ""])
    diff = comparer.finish()
    assert diff.clean(mirror=True)
    assert (diff.members, diff.listed, diff.missing, diff.changed, diff.extra) == (3, 3, 0, 0, 0)


def test_missing_changed_and_extra_members_are_told_apart():
    extra = io.BytesIO()
    comparer = Comparer(expected(), builder(), extra_to=extra)
    comparer.row("a@e.co", ["Ann", "Bergen", "1000"])  # city edited by hand
    comparer.row("b@e.co", ["Bo", "", ""])  # score lost
    comparer.row("zed@e.co", ["Z", "", ""])  # added by hand
    diff = comparer.finish()
    assert (diff.missing, diff.changed, diff.extra, diff.listed) == (1, 2, 1, 3)
    assert sorted(diff.resend) == sorted(email_key(e) for e in ("a@e.co", "b@e.co", "c@e.co"))
    assert extra.getvalue() == b"zed@e.co\n"
    assert not diff.clean(mirror=False) and not diff.clean(mirror=True)


def test_extra_members_alone_differ_only_in_mirror_mode():
    comparer = Comparer(expected(), builder())
    for email, values in (
        ("a@e.co", ["Ann", "Oslo", "1000"]),
        ("b@e.co", ["Bo", "", "7"]),
        ("c@e.co", ["Cy", "Rome", ""]),
        ("old@e.co", ["", "", ""]),
    ):
        comparer.row(email, values)
    diff = comparer.finish()
    assert diff.extra == 1 and diff.clean(mirror=False) and not diff.clean(mirror=True)


def test_fields_the_export_lacks_are_not_compared_but_membership_is():
    comparer = Comparer(expected(), builder())
    comparer.columns_missing(["custom:score"])
    comparer.row("a@e.co", ["Ann", "Oslo", ""])
    comparer.row("b@e.co", ["Bo", "", ""])
    comparer.row("c@e.co", ["Cy", "Rome", ""])  # c has no score: its fields are compared
    diff = comparer.finish()
    assert (diff.changed, diff.unverifiable, diff.missing) == (0, 2, 0)


def test_without_a_builder_only_membership_is_compared():
    comparer = Comparer(expected(), None)
    comparer.row("a@e.co", ["x", "y", "z"])
    diff = comparer.finish()
    assert (diff.missing, diff.changed, diff.unverifiable) == (2, 0, 1)
