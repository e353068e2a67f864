import csv
import gzip
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.batching import BatchLimits
from exporter.core.errors import SnapshotError
from exporter.core.planning import OverCap, plan, plan_file
from exporter.core.snapshots import input_limits
from exporter.core.snapshots.parts import Part, Parts
from exporter.core.snapshots.snapshot import open_snapshot

HEADER = ["Email", "FirstName", "Note"]
INVALID = [
    "no-at.example.com",
    "a@@example.com",
    "sp ace@example.com",
    "x@",
    "@example.com",
    "x@example",
    "a..b@example.com",
]
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
emails = st.integers(0, 40).map(lambda n: f"user{n}@example.com")
case = st.sampled_from([str, str.upper, str.title, lambda s: f"  {s} ", lambda s: f"\t{s.upper()}"])

row_kinds = st.one_of(
    st.tuples(st.just("contact"), emails, case, names, names),
    st.tuples(st.just("invalid"), st.sampled_from(INVALID), case, names, names),
    st.tuples(
        st.just("blank"), st.sampled_from(["", " ", "\t"]), st.just(str), st.just(""), st.just("")
    ),
    st.tuples(st.just("ragged"), emails, st.integers(0, 4), names, names),
    st.tuples(st.just("no_email"), st.just(""), st.just(str), names.filter(str.strip), names),
    st.tuples(st.just("nul"), emails, case, names, st.just("a\x00b")),
)


def write_csv(rows, gzipped):
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(HEADER)
    for kind, email, variant, name, note in rows:
        if kind == "ragged":
            w.writerow([email, name, note, "extra"][:variant])  # 3 fields is a fine row
        else:
            w.writerow([variant(email), name, note])
    data = text.getvalue().encode()
    return gzip.compress(data) if gzipped else data


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row_kinds, max_size=60), gzipped=st.booleans(), small=st.booleans())
def test_every_row_ends_exactly_once(rows, gzipped, small):
    expected_valid, expected_rejects, seen = {}, {}, set()
    dups = blanks = 0
    for n, (kind, email, variant, name, _note) in enumerate(rows, start=1):
        if kind == "blank" or (kind == "ragged" and variant == 0):
            blanks += 1
        elif kind == "ragged" and variant != 3:  # 1, 2 or 4 fields against a 3-column header
            expected_rejects[n] = "ragged_row"
        elif kind in ("invalid", "no_email", "nul"):
            expected_rejects[n] = {
                "invalid": "invalid_email",
                "no_email": "missing_email",
                "nul": "nul_byte",
            }[kind]
        elif email in seen:
            dups += 1
        else:
            seen.add(email)
            expected_valid[email] = name.strip()
    limits = BatchLimits(max_contacts=7) if small else BatchLimits()
    batches, rejects = [], []
    stats = plan_file(
        io.BytesIO(write_csv(rows, gzipped)),
        name="s.csv",
        on_batch=batches.append,
        on_reject=rejects.append,
        limits=limits,
    )

    sent = [json.loads(c) for b in batches for c in b.contacts]
    assert [c["email"] for c in sent] == list(expected_valid)  # first occurrence wins, in order
    for c in sent:
        assert c.get("first_name", "") == expected_valid[c["email"]]
    assert {r.row: r.reason for r in rejects} == expected_rejects
    assert stats.rows == len(rows)
    assert (stats.valid, stats.duplicates, stats.blank, stats.rejected) == (
        len(expected_valid),
        dups,
        blanks,
        len(expected_rejects),
    )
    assert stats.rows == stats.valid + stats.rejected + stats.duplicates + stats.blank
    assert sum(stats.reasons.values()) == stats.rejected
    assert stats.batches == len(batches)
    assert all(len(b.contacts) <= limits.max_contacts for b in batches)


def test_reject_rows_carry_row_and_physical_line():
    data = 'Email,Note\r\na@b.co,"two\r\nlines"\r\nbad,x\r\n\r\nc@d.co,y\r\nnope,z\r\n'
    rejects = []
    stats = plan_file(io.BytesIO(data.encode()), name="x.csv", on_reject=rejects.append)
    assert [(r.row, r.line, r.reason) for r in rejects] == [
        (2, 4, "invalid_email"),
        (5, 7, "invalid_email"),
    ]
    assert (stats.rows, stats.valid, stats.blank) == (5, 2, 1)
    assert all(r.partition == "" for r in rejects)  # a single file: no partition to name


def test_reject_rows_in_parts_name_their_partition_and_the_line_in_it():
    """A CDM entity's partitions: `row` counts across the entity, `line` restarts per file, and
    `partition` says which file to open."""
    one = "ci/HighValue/2026/11/24/1433/HighValue_1.csv"
    two = "ci/HighValue/2026/11/24/1433/HighValue_2.csv"
    files = {
        one: b"a@example.com,A\nnot-an-email,B\nc@example.com,C\n",
        two: b"d@example.com,D\n\ne@example.com,E\nf@example.com\n",
    }
    parts = Parts(
        columns=("Email", "FirstName"),
        parts=tuple(Part(name, lambda data=data: io.BytesIO(data)) for name, data in files.items()),
    )
    rejects = []
    with open_snapshot(parts) as snapshot:
        stats = plan(snapshot, on_reject=rejects.append)
    assert [(r.row, r.line, r.reason, r.partition) for r in rejects] == [
        (2, 2, "invalid_email", one),
        (7, 4, "ragged_row", two),  # entity-wide row 7 is line 4 of the second partition
    ]
    assert (stats.rows, stats.valid, stats.rejected, stats.blank) == (7, 4, 2, 1)


def test_non_ascii_contacts_are_measured_in_utf8_bytes():
    rows = "".join(f"u{i}@example.com,{'Ω' * 40}\n" for i in range(100))
    batches = []
    limits = BatchLimits(max_body_bytes=BatchLimits().envelope_bytes + 1_000)
    plan_file(
        io.BytesIO(("Email,FirstName\n" + rows).encode()),
        name="x.csv",
        on_batch=batches.append,
        limits=limits,
    )
    for b in batches:
        assert len(b.body(limits.list_ids)) == b.body_bytes <= limits.max_body_bytes
    assert sum(len(b.contacts) for b in batches) == 100


# --- limits enforced while rows are iterated: rows, blank runs, the deadline ------------------

GOOD = b"Email,FirstName\n"


def csv_rows(n, start=0):
    return b"".join(b"u%d@example.com,U\n" % i for i in range(start, start + n))


def plan_bytes(data, name="s.csv", **kwargs):
    rejects = []
    stats = plan_file(io.BytesIO(data), name=name, on_reject=rejects.append, **kwargs)
    return stats, rejects


def plan_fails(data, code, *words, name="s.csv", **kwargs):
    with pytest.raises(SnapshotError) as info, open_snapshot(io.BytesIO(data), name=name) as s:
        plan(s, **kwargs)
    err = info.value
    assert err.code == code, f"{err.code}: {err}"
    for word in words:
        assert word in str(err), f"{word!r} not in {str(err)!r}"
    return err


def test_rows_up_to_the_cap_are_planned_and_one_more_fails(monkeypatch):
    monkeypatch.setattr(input_limits, "MAX_ROWS", 5)
    stats, _ = plan_bytes(GOOD + csv_rows(4) + b"\n")  # a blank row counts as a row
    assert (stats.rows, stats.valid, stats.blank) == (5, 4, 1)
    err = plan_fails(GOOD + csv_rows(6), "too_many_rows", "more than 5 rows")
    assert (err.line, err.offset) == (7, len(GOOD + csv_rows(5)))


def test_the_row_cap_counts_across_parts_and_names_the_part(monkeypatch):
    monkeypatch.setattr(input_limits, "MAX_ROWS", 3)
    files = {"p1.csv": csv_rows(2), "p2.csv": csv_rows(2, 2)}
    parts = Parts(
        columns=("Email", "FirstName"),
        parts=tuple(Part(n, lambda d=d: io.BytesIO(d)) for n, d in files.items()),
    )
    with pytest.raises(SnapshotError) as info, open_snapshot(parts) as snapshot:
        plan(snapshot)
    assert info.value.code == "too_many_rows"
    assert str(info.value).startswith("partition 2 of 2 (p2.csv): the snapshot has more than 3")
    assert info.value.line == 2


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl"])
def test_a_run_of_blank_rows_over_the_cap_fails_the_file(monkeypatch, name):
    monkeypatch.setattr(input_limits, "MAX_BLANK_RUN", 3)
    if name == "s.csv":
        head, row = GOOD, b"a@example.com,A\n"
    else:
        head, row = b'{"Email": "h@example.com"}\n', b'{"Email": "a@example.com"}\n'
    ok = head + b"\n\n\n" + row + b"\n \n\r\n" + row  # two runs of 3: fine
    stats, _ = plan_bytes(ok, name=name)
    assert (stats.blank, stats.duplicates) == (6, 1)
    err = plan_fails(head + row + b"\n" * 4 + row, "blank_rows", "more than 3", name=name)
    assert "from line 3" in str(err)
    assert (err.line, err.offset) == (6, len(head + row) + 3)


def test_the_deadline_stops_planning_between_rows():
    now = [0.0]

    def clock():
        return now[0]

    def slow(_reject):
        now[0] += 1.0  # each rejected row "takes" a second

    data = GOOD + b"bad,row\n" * 600
    snapshot = open_snapshot(io.BytesIO(data), name="s.csv")
    with pytest.raises(SnapshotError) as info, snapshot:
        plan(snapshot, on_reject=slow, deadline=100.0, clock=clock)
    err = info.value
    assert err.code == "planning_timeout"
    assert "time limit of 100 s" in str(err) and "after 256 rows" in str(err)
    assert err.line == 257
    assert snapshot.watch is None  # the check is taken off again


def test_the_deadline_stops_a_long_line_being_skipped(monkeypatch):
    """No row comes while the reader skips a long line: the reader's own look at the clock (every
    chunk it reads) stops it."""
    monkeypatch.setattr(input_limits, "LINE_CAP", 100)  # so chunks are 100 bytes
    calls = [0]

    def clock():
        calls[0] += 1
        return float(calls[0])

    data = GOOD + b"a@example.com," + b"x" * 100_000 + b"\n" + csv_rows(1)
    err = plan_fails(data, "planning_timeout", "after 0 rows", deadline=50.0, clock=clock)
    assert err.line is None
    assert calls[0] < 60  # stopped inside the line, not after its 1,000 chunks


def test_without_a_deadline_the_clock_is_never_read():
    def clock():
        raise AssertionError("no deadline: no clock")

    with open_snapshot(io.BytesIO(GOOD + csv_rows(1_000)), name="s.csv") as snapshot:
        stats = plan(snapshot, deadline=None, clock=clock)
    assert stats.valid == 1_000


def test_a_long_line_in_a_partition_rejects_its_row_and_the_next_part_is_read(monkeypatch):
    monkeypatch.setattr(input_limits, "LINE_CAP", 100)
    files = {
        "p1.csv": b"a@example.com,A\nb@example.com," + b"x" * 500 + b"\nc@example.com,C\n",
        "p2.csv": b"d@example.com," + b"y" * 300 + b"\ne@example.com,E\n",
    }
    parts = Parts(
        columns=("Email", "FirstName"),
        parts=tuple(Part(n, lambda d=d: io.BytesIO(d)) for n, d in files.items()),
    )
    rejects = []
    with open_snapshot(parts) as snapshot:
        stats = plan(snapshot, on_reject=rejects.append)
    assert [(r.row, r.line, r.reason, r.partition) for r in rejects] == [
        (2, 2, "line_too_long", "p1.csv"),
        (4, 1, "line_too_long", "p2.csv"),
    ]
    assert (stats.rows, stats.valid, stats.rejected) == (5, 3, 2)


def test_reading_stops_once_more_contacts_are_valid_than_the_cap():
    rows = ["Email"] + [f"user{i}@example.com" for i in range(50)] + ["not-read", "bad"]
    seen = []
    data = io.BytesIO(("\n".join(rows) + "\n").encode())
    with (
        open_snapshot(data, name="s.csv") as snapshot,
        pytest.raises(OverCap, match="more than 10 valid profiles") as over,
    ):
        plan(snapshot, max_valid=10, on_reject=seen.append)
    assert over.value.cap == 10 and seen == []  # stopped at the 11th valid row
    stats = plan_file(io.BytesIO(("\n".join(rows[:11]) + "\n").encode()), name="s.csv")
    assert stats.valid == 10  # exactly the cap is fine
