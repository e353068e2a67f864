import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.batching import Batch, BatchLimits, BatchPacker, envelope, utf8_size

LIST_IDS = ("3f1c2a9e-0b7d-4c55-9a4e-1d2b3c4d5e6f",)


def pack(contacts, limits):
    packer = BatchPacker(limits)
    batches = [b for c in contacts if (b := packer.add(c, utf8_size(c))) is not None]
    if (last := packer.finish()) is not None:
        batches.append(last)
    return batches


def fewest_in_order(sizes, limits):
    """Reference: the fewest order-keeping batches, by dynamic programming over cut points."""
    env = limits.envelope_bytes
    best = [0] + [10**9] * len(sizes)
    for end in range(1, len(sizes) + 1):
        body = env - 1
        for start in range(end - 1, -1, -1):
            body += sizes[start] + 1
            if end - start > limits.max_contacts or body > limits.max_body_bytes:
                break
            best[end] = min(best[end], best[start] + 1)
    return best[-1]


contact_texts = st.lists(
    st.builds(
        lambda name, n: json.dumps(
            {"email": f"u{n}@example.com", "first_name": name},
            ensure_ascii=False,
            separators=(",", ":"),
        ),
        st.text(max_size=40),
        st.integers(0, 10**6),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(
    contacts=contact_texts,
    max_contacts=st.integers(1, 12),
    spare=st.integers(0, 600),
)
def test_batches_respect_both_limits_and_are_the_fewest(contacts, max_contacts, spare):
    limits = BatchLimits(
        max_contacts=max_contacts,
        # at least one contact of any size must fit on its own
        max_body_bytes=BatchLimits(list_ids=LIST_IDS).envelope_bytes + 200 + spare,
        list_ids=LIST_IDS,
    )
    batches = pack(contacts, limits)
    flat = [c for b in batches for c in b.contacts]
    assert flat == contacts  # nothing lost, nothing repeated, order kept
    for b in batches:
        body = b.body(LIST_IDS)
        assert 1 <= len(b.contacts) <= max_contacts
        assert len(body) == b.body_bytes  # the size we track is the real size
        assert len(body) <= limits.max_body_bytes
        assert json.loads(body)["contacts"] == [json.loads(c) for c in b.contacts]
    assert len(batches) == fewest_in_order([utf8_size(c) for c in contacts], limits)


def test_default_limits_are_sendgrids_with_a_margin():
    limits = BatchLimits()
    assert limits.max_contacts == 30_000
    assert 5_800_000 < limits.max_body_bytes < 6_000_000


def test_30000_small_contacts_fill_one_batch_and_the_next_opens_a_second():
    contacts = [f'{{"email":"u{i}@e.co"}}' for i in range(30_001)]
    batches = pack(contacts, BatchLimits())
    assert [len(b.contacts) for b in batches] == [30_000, 1]


def test_large_contacts_are_cut_by_bytes_not_count():
    big = '{"email":"a@b.co","custom_fields":{"x":"' + "y" * 9_000 + '"}}'
    batches = pack([big] * 2_000, BatchLimits())
    assert len(batches) == 4  # 9 kB each: 650 fit under ~5.93 MB
    assert all(b.body_bytes <= BatchLimits().max_body_bytes for b in batches)


def test_envelope_and_body():
    head, tail = envelope(LIST_IDS)
    assert head == '{"list_ids":["' + LIST_IDS[0] + '"],"contacts":['
    assert tail == "]}"
    b = Batch(0, ['{"email":"a@b.co"}'], 0)
    assert json.loads(b.body(LIST_IDS)) == {
        "list_ids": list(LIST_IDS),
        "contacts": [{"email": "a@b.co"}],
    }
    assert b.contacts_json() == '[{"email":"a@b.co"}]'


def test_a_body_built_from_blob_bytes_equals_one_built_from_text():
    from exporter.core.batching import upsert_body

    text = '[{"email":"a@b.co","first_name":"Zoë"},{"email":"c@d.co"}]'
    assert upsert_body(LIST_IDS, text.encode()) == upsert_body(LIST_IDS, text)
    assert json.loads(upsert_body(LIST_IDS, text.encode()))["contacts"][0]["first_name"] == "Zoë"


@settings(max_examples=200, deadline=None)
@given(
    contacts=st.lists(
        st.fixed_dictionaries(
            {"email": st.emails(), "first_name": st.text(max_size=20)},
        ),
        max_size=20,
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_a_streamed_body_equals_the_whole_body_wherever_the_reads_end(contacts, cuts):
    from exporter.core.batching import ContactStream, upsert_body, upsert_body_stream

    data = json.dumps(contacts, ensure_ascii=False, separators=(",", ":")).encode()
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    length, body = upsert_body_stream(LIST_IDS, ContactStream(len(data), iter(chunks)))
    sent = b"".join(body)
    assert sent == upsert_body(LIST_IDS, data)
    assert length == len(sent)


@pytest.mark.parametrize(
    ("data", "size", "message"),
    [
        (b'{"email":"a@b.co"}', 18, "JSON array"),
        (b'[{"email":"a@b.co"}}', 20, "JSON array"),
        (b'[{"email":"a@b.co"}]', 40, "ended after 20 of its 40 bytes"),
        (b'[{"email":"a@b.co"}]', 10, "JSON array"),
    ],
)
def test_a_streamed_batch_that_is_not_one_array_fails_before_its_end(data, size, message):
    from exporter.core.batching import ContactStream, upsert_body_stream

    _, body = upsert_body_stream(LIST_IDS, ContactStream(size, iter([data[:7], data[7:]])))
    with pytest.raises(ValueError, match=message):
        b"".join(body)
