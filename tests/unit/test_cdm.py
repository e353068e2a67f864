"""CDM folders: parsing model.json (and every way it can be unusable), resolving partition
locations, naming an entity's snapshot, and reading an entity's partitions as one snapshot
(headerless parts, per-partition line numbers, errors that name the partition)."""

from __future__ import annotations

import copy
import gzip
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from exporter.core import cdm
from exporter.core.errors import MappingError, SnapshotError
from exporter.core.planning import RejectedRow, plan
from exporter.core.snapshots.parts import Part, Parts
from exporter.core.snapshots.records import BLANK, Record
from exporter.core.snapshots.snapshot import open_snapshot

MANIFEST = "ci/BlobExport/model.json"
AZURE = "https://acct.blob.core.windows.net/segments/ci/BlobExport/HighValue/2026/11/24/1433"
CSV_SETTINGS = {
    "$type": "CsvFormatSettings",
    "columnHeaders": False,
    "delimiter": ",",
    "quoteStyle": "QuoteStyle.Csv",
    "csvStyle": "CsvStyle.QuoteAlways",
    "encoding": "UTF-8",
}


def ci_manifest(**entity: Any) -> dict[str, Any]:
    """A model.json as Customer Insights' blob export writes it: one entity, two partitions."""
    values: dict[str, Any] = {
        "$type": "LocalEntity",
        "name": "HighValue",
        "attributes": [
            {"name": "CustomerId", "dataType": "string"},
            {"name": "PrimaryEmail", "dataType": "string"},
            {"name": "FirstName", "dataType": "string"},
        ],
        "partitions": [
            {
                "name": f"HighValue_{n}",
                "location": f"{AZURE}/HighValue_{n}.csv",
                "fileFormatSettings": CSV_SETTINGS,
            }
            for n in (1, 2)
        ],
    }
    values.update(entity)
    return {"name": "BlobExport", "version": "1.0", "entities": [values]}


def parse(doc: object, *, account: str | None = "acct") -> cdm.Manifest:
    return cdm.parse_manifest(json.dumps(doc).encode(), name=MANIFEST, account=account)


def rejection(doc: object, *words: str, entity: str = "HighValue") -> str:
    """The entity is rejected, and the reason holds each of `words`."""
    manifest = parse(doc)
    assert [e.name for e in manifest.entities] == []
    reason = manifest.rejected[entity]
    for word in words:
        assert word.lower() in reason.lower(), f"{word!r} not in {reason!r}"
    return reason


def with_partition(**changes: Any) -> dict[str, Any]:
    partition = {"name": "p", "location": f"{AZURE}/HighValue_1.csv", **changes}
    return ci_manifest(partitions=[partition])


# --- parsing ---------------------------------------------------------------------------------


def test_a_customer_insights_manifest_gives_its_entity_with_columns_and_blobs() -> None:
    manifest = parse(ci_manifest())
    (entity,) = manifest.entities
    assert entity.name == "HighValue"
    assert entity.attributes == ("CustomerId", "PrimaryEmail", "FirstName")
    assert [p.blob for p in entity.partitions] == [
        f"ci/BlobExport/HighValue/2026/11/24/1433/HighValue_{n}.csv" for n in (1, 2)
    ]
    assert [p.name for p in entity.partitions] == ["HighValue_1", "HighValue_2"]
    assert entity.partitions[0].format == cdm.CsvFormat(header=False, delimiter=",", quoting=True)
    assert manifest.rejected == {}
    assert manifest.entity("HighValue") is entity


@pytest.mark.parametrize(
    ("location", "blob"),
    [
        (f"{AZURE}/a.csv", "ci/BlobExport/HighValue/2026/11/24/1433/a.csv"),
        (
            "https://ACCT.dfs.core.windows.net/segments/ci/BlobExport/x/a.csv",
            "ci/BlobExport/x/a.csv",
        ),
        ("http://127.0.0.1:10000/acct/segments/ci/BlobExport/x/a.csv", "ci/BlobExport/x/a.csv"),
        (
            "abfss://segments@acct.dfs.core.windows.net/ci/BlobExport/x/a.csv",
            "ci/BlobExport/x/a.csv",
        ),
        ("wasbs://segments@acct.blob.core.windows.net/ci/BlobExport/a.csv", "ci/BlobExport/a.csv"),
        (
            "https://acct.blob.core.windows.net/segments/ci/BlobExport/a%20b.csv?sv=1&sig=SECRET",
            "ci/BlobExport/a b.csv",
        ),
        (
            "https://acct.blob.core.windows.net/segments/ci/BlobExport/a%2520b.csv",
            "ci/BlobExport/a b.csv",
        ),
        ("HighValue/a.csv", "ci/BlobExport/HighValue/a.csv"),
        ("HighValue/a%2Fb.csv", "ci/BlobExport/HighValue/a/b.csv"),
    ],
)
def test_partition_locations_resolve_to_blobs_in_the_segments_container(
    location: str, blob: str
) -> None:
    (entity,) = parse(with_partition(location=location)).entities
    assert entity.partitions[0].blob == blob


@pytest.mark.parametrize(
    ("location", "words"),
    [
        (
            "https://acct.blob.core.windows.net/exports/ci/a.csv",
            ("container 'exports'", "segments"),
        ),
        ("https://other.blob.core.windows.net/segments/ci/a.csv", ("account 'other'", "'acct'")),
        ("http://127.0.0.1:10000/devstoreaccount1/segments/a.csv", ("'devstoreaccount1'",)),
        ("ftp://acct/segments/a.csv", ("'ftp' urls are not supported",)),
        (f"{AZURE}/", ("names a folder",)),
        ("https://acct.blob.core.windows.net/segments/ci/BlobExport/model.json", ("itself",)),
        ("https://acct.blob.core.windows.net/segments/ci/BlobExport/a.parquet", ("parquet", "csv")),
        # outside the model.json's folder, though in the container
        ("https://acct.blob.core.windows.net/segments/ci/a.csv", ("outside", "ci/BlobExport/")),
        ("https://acct.blob.core.windows.net/segments/ci/BlobExport2/a.csv", ("outside",)),
        ("/other-folder/a.csv", ("absolute path",)),
    ],
)
def test_partition_locations_elsewhere_reject_their_entity(
    location: str, words: tuple[str, ...]
) -> None:
    rejection(with_partition(location=location + "?sig=SECRET"), "partition 'p'", *words)
    assert (
        "SECRET"
        not in parse(with_partition(location=location + "?sig=SECRET")).rejected["HighValue"]
    )


SEGMENTS = "http://127.0.0.1:10000/acct/segments"


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        # the security review's cases: out of segments/ into the app's own container
        (f"{SEGMENTS}/../exporter/state/marketing/loyal/x/index", "'..' segment"),
        (f"{SEGMENTS}/%2e%2e/exporter/state/marketing/loyal/x/index", "'..' segment"),
        (f"{SEGMENTS}/%2E%2E/exporter/destinations/marketing.json", "'..' segment"),
        ("abfss://segments@acct.dfs.core.windows.net/../exporter/state/x", "'..' segment"),
        ("wasbs://segments@acct.blob.core.windows.net/%2e%2e/exporter/x.csv", "'..' segment"),
        ("https://acct.blob.core.windows.net/segments/../exporter/x.csv", "'..' segment"),
        # inside the folder at first sight, out of it once resolved
        (f"{SEGMENTS}/ci/BlobExport/../../../exporter/x.csv", "'..' segment"),
        (f"{SEGMENTS}/ci/BlobExport/HighValue/%252e%252e/%252e%252e/x.csv", "'..' segment"),
        (f"{SEGMENTS}/ci/BlobExport/%2e/a.csv", "'.' segment"),
        (f"{SEGMENTS}/ci/BlobExport/HighValue/..%2F..%2F..%2Fexporter%2Fx.csv", "'..' segment"),
        (f"{SEGMENTS}/ci/BlobExport/HighValue%5C..%5C..%5Cx.csv", "'..' segment"),
        (f"{SEGMENTS}/ci/BlobExport/a%5Cb.csv", "backslash"),
        (f"{SEGMENTS}/ci/BlobExport//a.csv", "empty segment"),
        (f"{SEGMENTS}//ci/BlobExport/a.csv", "absolute path"),
        (f"{SEGMENTS}/ci/BlobExport/a%00.csv", "control character"),
        (f"{SEGMENTS}/ci/BlobExport/a%0A.csv", "control character"),
        (f"{SEGMENTS}/ci/BlobExport/a%E2%80%AE.csv", "invisible character"),
        (f"{SEGMENTS}/ci/BlobExport/a%ff.csv", "not UTF-8"),
        (f"{SEGMENTS}/ci/BlobExport/a%2525252e.csv", "more than 3 times"),
        (f"{SEGMENTS}/ci/BlobExport/{'a' * 1100}.csv", "1,024"),
        (f"{SEGMENTS}/ci/BlobExport/{'a/' * 260}a.csv", "254"),
        (f"{SEGMENTS}/ci/BlobExport/trailing./a.csv", "ends with '.'"),
        # relative locations: inside the folder, or refused
        ("../../exporter/state/x", "'..' segment"),
        ("./HighValue/../HighValue/a.csv", "'.' segment"),
        ("HighValue/%2e%2e/%2e%2e/%2e%2e/exporter/x", "'..' segment"),
    ],
)
def test_partition_locations_that_could_leave_their_folder_are_refused_not_repaired(
    location: str, problem: str
) -> None:
    doc = ci_manifest()
    doc["entities"][0]["partitions"][1]["location"] = location
    reason = rejection(doc, "partition 'HighValue_2'", problem)
    assert "was not read" in reason or "percent" in reason
    assert len(reason) < 800  # a hostile location is shown cut short


def test_a_hostile_entity_rejects_itself_and_the_others_are_exported() -> None:
    doc = ci_manifest()
    good = copy.deepcopy(doc["entities"][0])
    escaping = copy.deepcopy(good) | {"name": "Escaping"}
    escaping["partitions"][0]["location"] = f"{SEGMENTS}/../exporter/state/a/b/c/index"
    doc["entities"] = [escaping, good]
    manifest = parse(doc, account=None)
    assert [e.name for e in manifest.entities] == ["HighValue"]
    assert set(manifest.rejected) == {"Escaping"}
    assert "partition 'HighValue_1'" in manifest.rejected["Escaping"]
    assert "'..' segment" in manifest.rejected["Escaping"]


def test_the_account_is_checked_only_when_known() -> None:
    doc = with_partition(
        location="https://other.blob.core.windows.net/segments/ci/BlobExport/a.csv"
    )
    (entity,) = parse(doc, account=None).entities
    assert entity.partitions[0].blob == "ci/BlobExport/a.csv"


def test_format_settings_come_from_the_partition_else_the_entity_else_the_model() -> None:
    doc = ci_manifest(
        fileFormatSettings={"columnHeaders": "true", "delimiter": ";"},
        partitions=[
            {"name": "own", "location": f"{AZURE}/1.csv", "fileFormatSettings": {"delimiter": "|"}},
            {"name": "inherits", "location": f"{AZURE}/2.csv"},
        ],
    )
    doc["fileFormatSettings"] = {"delimiter": "\t", "quoteStyle": "QuoteStyle.None"}
    own, inherits = parse(doc).entities[0].partitions
    assert own.format == cdm.CsvFormat(header=False, delimiter="|", quoting=True)
    assert inherits.format == cdm.CsvFormat(header=True, delimiter=";", quoting=True)
    del doc["entities"][0]["fileFormatSettings"]
    assert parse(doc).entities[0].partitions[1].format == cdm.CsvFormat(False, "\t", False)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"$type": "ParquetFormatSettings"}, ("'ParquetFormatSettings' is not supported",)),
        ({"delimiter": "||"}, ("delimiter '||'", "one character")),
        ({"delimiter": '"'}, ("delimiter", "not a quote")),
        ({"encoding": "UTF-16"}, ("encoding 'UTF-16'", "UTF-8")),
        ({"quoteStyle": "QuoteStyle.Single"}, ("quoteStyle",)),
        ({"csvStyle": "CsvStyle.Whatever"}, ("csvStyle",)),
        ({"columnHeaders": "maybe"}, ("columnHeaders", "true or false")),
        ("csv", ("fileFormatSettings is not an object",)),
    ],
)
def test_formats_this_reader_would_get_wrong_are_refused(
    settings: object, words: tuple[str, ...]
) -> None:
    rejection(with_partition(fileFormatSettings=settings), "partition 'p'", *words)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{not json", ("is not JSON", "line 1, column 2")),
        (b"\xff\xfe{}", ("not UTF-8",)),
        (b"[]", ("a JSON array", "not a CDM model")),
        (b'{"name": "m"}', ("lists no entities",)),
        (b'{"entities": []}', ("lists no entities",)),
        (b'{"entities": {"a": 1}}', ("lists no entities",)),
        (b" " * (cdm.MAX_MANIFEST_BYTES + 1), ("16.0 MiB", "not read")),
    ],
)
def test_an_unusable_manifest_raises_one_clear_error(data: bytes, words: tuple[str, ...]) -> None:
    with pytest.raises(cdm.ManifestError) as info:
        cdm.parse_manifest(data, name=MANIFEST)
    assert MANIFEST in str(info.value)
    for word in words:
        assert word.lower() in str(info.value).lower()


def test_a_manifest_with_a_bom_still_parses() -> None:
    data = b"\xef\xbb\xbf" + json.dumps(ci_manifest()).encode()
    assert [e.name for e in cdm.parse_manifest(data, name=MANIFEST).entities] == ["HighValue"]


@pytest.mark.parametrize(
    ("entity", "words"),
    [
        ({"attributes": []}, ("no attributes",)),
        ({"attributes": [{"name": "a"}, {"dataType": "string"}]}, ("attribute 2 has no name",)),
        ({"partitions": []}, ("no partitions",)),
        ({"partitions": [{"name": "schema only", "location": None}]}, ("none of its partitions",)),
        ({"partitions": [{"name": "p", "location": 7}]}, ("partition 'p' has no location",)),
        ({"$type": "ReferenceEntity"}, ("ReferenceEntity", "LocalEntity")),
        ({"$type": "Whatever"}, ("'Whatever' is not LocalEntity",)),
    ],
)
def test_an_entity_that_cannot_be_exported_says_why(
    entity: dict[str, Any], words: tuple[str, ...]
) -> None:
    rejection(ci_manifest(**entity), "entity 'HighValue'", MANIFEST, *words)


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("High/Value", "'/'"),
        ("High#Value", "'#'"),
        (" HighValue", "space"),
        ("a\x01b", "control"),
        ("..", "'.'"),
        (".", "'.'"),
        ("../../exporter", "'.'"),
        ("High.Value", "'.'"),
        ("High\\Value", "'\\\\'"),
        ("Hïgh", "'ï'"),
        ("=HYPERLINK(1)", "'='"),
        ("a" * 64, "64 characters"),
    ],
)
def test_entity_names_must_be_segment_names(name: str, word: str) -> None:
    rejection(ci_manifest(name=name), "cannot be a segment name", word, entity=name)


def test_an_entity_name_too_long_to_repeat_is_named_by_its_position() -> None:
    doc = ci_manifest(name="E" * 40_000)
    manifest = parse(doc)
    assert manifest.entities == ()
    assert list(manifest.rejected) == ["#1"]
    assert "40,000 characters" in manifest.rejected["#1"]
    assert len(manifest.rejected["#1"]) < 400


@pytest.mark.parametrize("name", ["HighValue", "high-value_2", "A", "a" * 63, "0-_"])
def test_segment_names_are_letters_digits_dashes_and_underscores(name: str) -> None:
    (entity,) = parse(ci_manifest(name=name)).entities
    assert entity.name == name


def test_a_bad_entity_leaves_the_others_exportable() -> None:
    doc = ci_manifest()
    good = copy.deepcopy(doc["entities"][0])
    no_name = {"$type": "LocalEntity", "attributes": [{"name": "a"}], "partitions": []}
    twice = copy.deepcopy(good) | {"name": "Twice"}
    doc["entities"] = [good, {"name": "Broken", "attributes": []}, no_name, twice, twice]
    manifest = parse(doc)
    assert [e.name for e in manifest.entities] == ["HighValue"]
    assert set(manifest.rejected) == {"Broken", "#3", "Twice"}
    assert "more than once" in manifest.rejected["Twice"]
    assert "no name" in manifest.rejected["#3"]
    with pytest.raises(cdm.ManifestError, match="no attributes"):
        manifest.entity("Broken")
    with pytest.raises(cdm.ManifestError, match="does not list entity 'Nope'"):
        manifest.entity("Nope")


# --- names and versions ------------------------------------------------------------------------


def test_an_entity_snapshot_is_named_after_its_manifest_and_entity() -> None:
    name = cdm.entity_snapshot(MANIFEST, "HighValue")
    assert name == "ci/BlobExport/model.json#HighValue"
    assert cdm.split_entity_snapshot(name) == (MANIFEST, "HighValue")
    assert cdm.split_entity_snapshot("a#b/model.json#E") == ("a#b/model.json", "E")
    for plain in ("loyal/a.csv", "loyal/file#1.csv", "model.json#E", "x/model.json#"):
        assert cdm.split_entity_snapshot(plain) is None


def test_which_blobs_are_manifests() -> None:
    assert cdm.is_manifest("ci/model.json")
    assert cdm.is_manifest("ci/BlobExport/Model.JSON")
    assert not cdm.is_manifest("model.json")  # the container's root is no folder
    assert not cdm.is_manifest("ci/other.json")


def test_the_pinned_version_follows_the_manifest_and_every_partition() -> None:
    parts = [("a.csv", '"0x1"'), ("b.csv", '"0x2"')]
    pinned = cdm.pinned_etag('"0xM"', parts)
    assert pinned == cdm.pinned_etag('"0xM"', list(parts))  # deterministic
    assert cdm.manifest_etag(pinned) == '"0xM"'
    assert pinned != cdm.pinned_etag('"0xM"', [("a.csv", '"0x1"'), ("b.csv", '"0x3"')])
    assert pinned != cdm.pinned_etag('"0xN"', parts)
    assert pinned != cdm.pinned_etag('"0xM"', parts[::-1])


# --- reading an entity's partitions as one snapshot ----------------------------------------------


class Files:
    """Partition files in memory, recording when each is opened and whether it was closed."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.opened: list[str] = []
        self.streams: dict[str, io.BytesIO] = {}

    def open(self, partition: cdm.Partition) -> io.BytesIO:
        self.opened.append(partition.blob)
        stream = self.streams[partition.blob] = io.BytesIO(self.files[partition.blob])
        return stream


def entity_of(doc: dict[str, Any]) -> cdm.Entity:
    return parse(doc).entity("HighValue")


def blob(n: int) -> str:
    return f"ci/BlobExport/HighValue/2026/11/24/1433/HighValue_{n}.csv"


def read_entity(
    files: dict[int, bytes], doc: dict[str, Any] | None = None
) -> tuple[list[tuple[int, Record]], Files]:
    store = Files({blob(n): data for n, data in files.items()})
    parts = cdm.entity_parts(entity_of(doc or ci_manifest()), store.open)
    with open_snapshot(parts) as snapshot:
        return list(snapshot.records()), store


def test_headerless_partitions_read_as_one_snapshot_with_lines_per_partition() -> None:
    rows, _ = read_entity(
        {
            1: b"c1,ann@example.com,Ann\nc2,bob@example.com,Bob\n",
            2: b"c3,cid@example.com,Cid\n",
        }
    )
    assert rows == [
        (1, ("ann@example.com", "Ann")),
        (2, ("bob@example.com", "Bob")),
        (1, ("cid@example.com", "Cid")),
    ]


def test_partitions_are_opened_one_at_a_time_when_reached_and_closed_after() -> None:
    store = Files({blob(1): b"c1,a@example.com,A\n", blob(2): b"c2,b@example.com,B\n"})
    parts = cdm.entity_parts(entity_of(ci_manifest()), store.open)
    assert store.opened == []  # nothing is read until records are
    with open_snapshot(parts) as snapshot:
        records = snapshot.records()
        next(records)
        assert store.opened == [blob(1)]
        assert snapshot.part is not None and snapshot.part.name == blob(1)
        next(records)
        assert store.opened == [blob(1), blob(2)]
        assert store.streams[blob(1)].closed and not store.streams[blob(2)].closed
        assert snapshot.part.name == blob(2)
        assert list(records) == []
    assert store.streams[blob(2)].closed


def test_a_header_row_is_skipped_when_it_names_the_attributes() -> None:
    settings = CSV_SETTINGS | {"columnHeaders": True}
    doc = ci_manifest(fileFormatSettings=settings)
    for p in doc["entities"][0]["partitions"]:
        del p["fileFormatSettings"]
    rows, _ = read_entity(
        {
            1: b"CustomerId,PrimaryEmail,FirstName\nc1,a@example.com,A\n",
            2: b"\n\ncustomerid, primaryemail ,FIRSTNAME\nc2,b@example.com,B\n",
        },
        doc,
    )
    assert rows == [(2, ("a@example.com", "A")), (4, ("b@example.com", "B"))]


def test_a_header_row_naming_other_columns_fails_naming_the_partition() -> None:
    doc = ci_manifest(fileFormatSettings=CSV_SETTINGS | {"columnHeaders": True})
    for p in doc["entities"][0]["partitions"]:
        del p["fileFormatSettings"]
    with pytest.raises(SnapshotError) as info:
        read_entity({1: b"CustomerId,PrimaryEmail,FirstName\n", 2: b"Id,Email,Name\n"}, doc)
    err = info.value
    assert err.code == "header_mismatch" and err.line == 1
    assert f"partition 2 of 2 ({blob(2)})" in str(err)
    assert "'Id', 'Email', 'Name'" in str(err) and "'PrimaryEmail'" in str(err)


def test_the_delimiter_is_honoured_not_sniffed() -> None:
    doc = ci_manifest(fileFormatSettings=CSV_SETTINGS | {"delimiter": ";"})
    for p in doc["entities"][0]["partitions"]:
        del p["fileFormatSettings"]
    rows, _ = read_entity({1: b'c1;a@example.com;"Ann, Jr"\n', 2: b"c2;b@example.com;Li,Bo\n"}, doc)
    assert [r for _, r in rows] == [("a@example.com", "Ann, Jr"), ("b@example.com", "Li,Bo")]


def test_quote_style_none_keeps_quotes_as_characters() -> None:
    doc = ci_manifest(fileFormatSettings={"quoteStyle": "QuoteStyle.None"})
    for p in doc["entities"][0]["partitions"]:
        del p["fileFormatSettings"]
    rows, _ = read_entity({1: b'c1,a@example.com,"Ann\n', 2: b'c2,b@example.com,Bo"b\n'}, doc)
    assert [r for _, r in rows] == [("a@example.com", '"Ann'), ("b@example.com", 'Bo"b')]


def test_row_problems_keep_reading_and_reports_give_the_line_in_its_partition() -> None:
    store = Files(
        {
            blob(1): b"c1,a@example.com,A\nc2,not-an-email,B\n",
            blob(2): b"c3,c@example.com,C\nc4,d@example.com\n\nc5,e@example.com,E\n",
        }
    )
    rejected: list[RejectedRow] = []
    parts_seen: list[str] = []
    with open_snapshot(cdm.entity_parts(entity_of(ci_manifest()), store.open)) as snapshot:

        def reject(row: RejectedRow) -> None:
            assert snapshot.part is not None
            parts_seen.append(snapshot.part.name)
            rejected.append(row)

        stats = plan(snapshot, on_reject=reject)
    assert (stats.rows, stats.valid, stats.rejected, stats.blank) == (6, 3, 2, 1)
    assert [(r.row, r.line, r.reason) for r in rejected] == [
        (2, 2, "invalid_email"),
        (4, 2, "ragged_row"),  # entity-wide row 4 is line 2 of partition 2
    ]
    assert "the row has 2 fields, the entity has 3 attributes" in rejected[1].message
    assert parts_seen == [blob(1), blob(2)]  # a report can name the partition of each row


def test_file_level_errors_name_the_partition_and_the_line_in_it() -> None:
    with pytest.raises(SnapshotError) as info:
        read_entity({1: b"c1,a@example.com,A\n", 2: b"c2,b@example.com,B\nc3,\xff,C\n"})
    err = info.value
    assert (err.code, err.line) == ("not_utf8", 2)
    assert str(err).startswith(f"partition 2 of 2 ({blob(2)}): the file is not UTF-8 text")
    with pytest.raises(SnapshotError) as info:
        read_entity({1: b"PK\x03\x04rest", 2: b""})
    assert info.value.code == "binary_file" and "partition 1 of 2" in str(info.value)


def test_empty_bom_and_gzipped_partitions() -> None:
    rows, _ = read_entity(
        {1: b"", 2: gzip.compress(b"\xef\xbb\xbfc1,a@example.com,A\n\nc2,b@example.com,B")}
    )
    assert rows == [(1, ("a@example.com", "A")), (2, BLANK), (3, ("b@example.com", "B"))]
    rows, _ = read_entity({1: b"", 2: b""})
    assert rows == []  # an entity with no members is a segment that is empty now


def test_an_entity_without_an_email_attribute_fails_at_open() -> None:
    doc = ci_manifest(attributes=[{"name": "CustomerId"}, {"name": "Name"}])
    with pytest.raises(MappingError, match="no column is mapped to email"):
        read_entity({1: b"", 2: b""}, doc)


def test_parts_without_cdm() -> None:
    """`Parts` is the reader's own contract: any files, any columns."""

    def opener(data: bytes) -> Callable[[], io.BytesIO]:
        return lambda: io.BytesIO(data)

    parts = Parts(
        columns=("email", "first_name"),
        parts=(
            Part("one", opener(b"email,first_name\na@example.com,A\n"), header=True),
            Part("two", opener(b"b@example.com|B\n"), delimiter="|"),
        ),
    )
    with open_snapshot(parts) as snapshot:
        assert (snapshot.format, snapshot.columns) == ("csv", ("email", "first_name"))
        assert list(snapshot.records()) == [
            (2, ("a@example.com", "A")),
            (1, ("b@example.com", "B")),
        ]
    with pytest.raises(SnapshotError, match="as CSV only"):
        open_snapshot(parts, format="jsonl")
