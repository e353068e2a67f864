import csv
import gzip
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.batching import BatchLimits
from exporter.planning import plan, plan_file
from exporter.snapshots import Part, Parts, open_snapshot

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
