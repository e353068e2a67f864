"""Queue messages: what the app writes decodes again; anything else is refused with a reason that
names fields, never values; excerpts of dropped messages are short and hold no address."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.flow import run_requests
from exporter.model.messages import (
    MAX_BATCH_INDEX,
    MAX_MESSAGE_BYTES,
    BadMessage,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
    ManifestCheck,
    decode,
    excerpt,
)
from exporter.model.versions import SnapshotVersion

WHEN = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
RUN_ID = run_requests.make_run_id(
    "marketing", SnapshotVersion("loyal/a.csv", '"0x1"', WHEN, 10), "blob", WHEN
)
REQUEST: dict[str, Any] = {
    "run_id": RUN_ID,
    "destination": "marketing",
    "segment": "loyal",
    "snapshot": "loyal/a.csv",
    "etag": '"0x8DC1"',
    "trigger": "blob",
    "requested_at": WHEN,
}


def test_run_ids_the_app_makes_match_the_pattern() -> None:
    assert RUN_ID.startswith("20261124T101500-") and len(RUN_ID) == 28
    for trigger in ("blob", "timer", "api", "cli"):
        run_id = run_requests.make_run_id(
            "d", SnapshotVersion("s/a.csv", "e", WHEN, 1), trigger, datetime.now(UTC)
        )
        assert decode(BatchMessage, BatchMessage(run_id=run_id, batch=0).encode()).run_id == run_id


@pytest.mark.parametrize(
    "message",
    [
        ExportRequest(**REQUEST),
        ExportRequest(
            **REQUEST
            | {
                "snapshot": "ci/BlobExport/model.json#HighValue",
                "segment": "HighValue",
                "etag": '"0x1";partitions=0123456789abcdef',
                "snapshot_time": WHEN,
                "full_refresh": True,
            }
        ),
        ExportRequest(**REQUEST | {"segment": "Legacy Name", "snapshot": "Legacy Name/a.csv"}),
        BatchMessage(run_id=RUN_ID, batch=MAX_BATCH_INDEX, deferrals=3, retries=2),
        JobCheck(run_id=RUN_ID, batch=0, job_id="c4c3c1b5-7d2e-4a1f-9a43-4a5e2d0c9b11"),
        ListCheck(run_id=RUN_ID, look=2, export_id="e-1", checks=4),
        ManifestCheck(manifest="ci/BlobExport/model.json", etag='"0x1"', written_at=WHEN),
    ],
    ids=lambda m: type(m).__name__,
)
def test_what_the_app_writes_decodes_again(message: Any) -> None:
    assert decode(type(message), message.encode()) == message
    assert decode(type(message), message.encode().encode()) == message


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"run_id": "r1"}, ("run_id: String should match pattern",)),
        (
            {"run_id": "\u0662\u0660\u0662\u0666\u0661\u0661\u0662\u0664T101500-1f2e3d4c5b6a"},
            ("run_id",),
        ),  # Arabic-Indic digits
        ({"run_id": RUN_ID + "0"}, ("run_id",)),
        ({"destination": "Marketing Team"}, ("destination",)),
        ({"segment": ".."}, ("segment", "'..' segment")),
        ({"segment": "a/b"}, ("segment", "path separator")),
        ({"segment": "x" * 1025}, ("segment", "at most 1024")),
        ({"snapshot": "../exporter/x.csv"}, ("snapshot", "'..' segment")),
        ({"snapshot": "/loyal/a.csv"}, ("snapshot", "absolute path")),
        ({"snapshot": "loyal\\..\\..\\exporter"}, ("snapshot", "'..' segment")),
        ({"snapshot": "ci/model.json#.."}, ("snapshot", "'..' segment")),
        ({"snapshot": "loyal/a\r\n.csv"}, ("snapshot", "control character")),
        ({"etag": "e" * 513}, ("etag", "at most 512")),
        ({"trigger": "ftp"}, ("trigger",)),
        ({"requested_at": "2026-11-24T10:15:00"}, ("requested_at", "timezone")),
        ({"full_refresh": "yes"}, ("full_refresh", "boolean")),
        ({"retries": -1}, ("retries", "greater than or equal to 0")),
        ({"retries": 10**7}, ("retries", "less than or equal to 1000000")),
        ({"extra": 1}, ("extra: Extra inputs are not permitted",)),
    ],
)
def test_an_export_request_out_of_bounds_is_refused_saying_which_field(
    fields: dict[str, Any], words: tuple[str, ...]
) -> None:
    body = json.loads(ExportRequest(**REQUEST).encode()) | fields
    with pytest.raises(BadMessage) as info:
        decode(ExportRequest, json.dumps(body))
    for word in words:
        assert word in str(info.value)
    for value in fields.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(info.value)  # the reason never quotes the value


def test_reasons_are_short_whatever_the_message() -> None:
    body = json.dumps({f"key{i}": "x" * 1000 for i in range(60)})
    with pytest.raises(BadMessage) as info:
        decode(BatchMessage, body)
    assert "and 57 more" in str(info.value)
    assert len(str(info.value)) < 600


def test_a_body_over_64_kb_is_refused_unread() -> None:
    with pytest.raises(BadMessage, match="65,537 bytes"):
        decode(BatchMessage, b" " * (MAX_MESSAGE_BYTES + 1))


def test_an_excerpt_is_short_masked_and_printable() -> None:
    body = ('{"run_id": "jane.doe@example.com\\n", "x": "\x00\x1b[31m' + "y" * 500 + '"}').encode()
    shown = excerpt(body)
    assert "jane.doe" not in shown and "***@example.com" in shown
    assert "\x00" not in shown and "\x1b" not in shown
    assert shown.endswith(f"... ({len(body):,} bytes)")
    assert len(shown) <= 200 + len(f"... ({len(body):,} bytes)")


def test_an_address_cut_by_the_excerpt_is_masked_too() -> None:
    body = "x" * 190 + " ann.lee@" + "example.com"
    assert "ann.lee" not in excerpt(body)
    assert "ann.lee" not in excerpt(b"ann.lee@")
    assert excerpt(b"") == " (0 bytes)"
