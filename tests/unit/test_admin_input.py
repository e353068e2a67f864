"""What an administrator may send, checked before anything is saved or sent: the API key's
name (only SendGrid keys, with the answer an unset name gets), segment names (one rule),
bounds on bodies and documents, and strict JSON types. Stored documents written before a naming
rule still load (their runs fail saying what to change), and a store reads no more than a
document may hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from pydantic import ValidationError

from exporter.adapters.destination_store import BlobDestinationStore
from exporter.adapters.secrets import EnvSecretProvider
from exporter.adapters.sendgrid import SendGridClient
from exporter.admin.destinations import save_destination
from exporter.admin.errors import TooLarge
from exporter.admin.requests import MAX_BODY_BYTES, DestinationRequest, ExportBody, parse
from exporter.core.errors import InputError
from exporter.core.paths import SEGMENT_PATTERN, valid_segment
from exporter.flow.services import Services
from exporter.model.destinations import (
    MAX_DOCUMENT_BYTES,
    MAX_MAPPING,
    MAX_SEGMENTS,
    Destination,
    check_segment,
)
from exporter.ports.secrets import key_unavailable
from tests.support.memory_destinations import MemoryDestinationStore
from tests.support.memory_ledger import MemoryRunLedger

LIST_ID = "0b6a4a0e-8d1c-4f63-9b8e-8a1f1c3c7c11"
KEY = "SG.unit-admin-key"


def document(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "marketing",
        "display_name": "Marketing",
        "list_id": LIST_ID,
        "api_key_secret": "SENDGRID_KEY_MARKETING",
        "segments": ["loyal"],
        "consent": {"accepted_by": "dpo", "accepted_at": "2026-11-01T09:00:00Z"},
    }
    values.update(changes)
    return values


def invalid(**changes: Any) -> str:
    with pytest.raises(InputError) as raised:
        Destination.from_json(json.dumps(document(**changes)))
    return str(raised.value)


# --- segment names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["loyal", "HighValue", "high-value_2026", "A", "x" * 63, "CustomerInsights_Seg"]
)
def test_segment_names_letters_digits_dash_underscore(name: str) -> None:
    assert valid_segment(name)
    assert check_segment(name) == name
    assert Destination.from_json(json.dumps(document(segments=[name]))).segments == [name]


BAD_SEGMENTS = [
    "..",
    ".",
    "a.b",
    "a#b",
    "a?b",
    "a\\b",
    "a/b",
    "a b",
    " a",
    "a\n",
    "a\x00",
    "é",
    "a%2Fb",
    "",
    "x" * 64,
    "x" * 5000,
]


@pytest.mark.parametrize("name", BAD_SEGMENTS)
def test_other_segment_names_are_refused_everywhere(name: str) -> None:
    assert not valid_segment(name)
    with pytest.raises(InputError, match="1 to 63 letters, digits, '-' and '_'"):
        check_segment(name)
    message = invalid(segments=["loyal", name])
    assert message.startswith("invalid destination: segments: invalid segment name ")
    assert len(message) < 400  # a 5,000-character name is cut


def test_the_pattern_is_published_for_other_modules() -> None:
    assert SEGMENT_PATTERN == r"^[A-Za-z0-9_-]{1,63}$"
    assert not valid_segment(None)
    assert not valid_segment(["loyal"])


def test_a_segment_listed_twice_is_refused() -> None:
    assert "listed more than once" in invalid(segments=["loyal", "loyal"])


# --- the key's name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["AzureWebJobsStorage", "LOCAL_FUNCTION_KEY", "PATH", "MY_KEY", "sg-key"]
)
def test_the_model_refuses_a_name_that_is_not_a_keys_in_the_providers_words(name: str) -> None:
    message = invalid(api_key_secret=name)
    assert message == f"invalid destination: api_key_secret: {key_unavailable(name)}"


def test_the_key_itself_is_refused_without_being_quoted() -> None:
    message = invalid(api_key_secret=KEY)
    assert "never the key itself" in message and KEY not in message


def services(**settings: str) -> Services:
    none: Any = None  # nothing here reaches storage: the key is refused before SendGrid
    return Services(
        storage=none,
        ledger=MemoryRunLedger(),
        destinations=MemoryDestinationStore(),
        secrets=EnvSecretProvider(settings),
        clients=SendGridClient,
    )


def save(svc: Services, **changes: Any) -> str:
    request = parse(DestinationRequest, document(**changes) | {"list_name": "x"})
    request = request.model_copy(update={"list_id": None})
    with pytest.raises(InputError) as raised:
        save_destination(svc, request)
    return str(raised.value)


def test_saving_answers_the_same_for_a_refused_name_and_an_unset_one() -> None:
    svc = services(AzureWebJobsStorage="UseDevelopmentStorage=true", PATH="/usr/bin")
    unset = save(svc, api_key_secret="SENDGRID_KEY_UNSET")
    for name in ("AzureWebJobsStorage", "PATH", "NOT_SET_ANYWHERE"):
        refused = save(svc, api_key_secret=name)
        assert refused == unset.replace("'SENDGRID_KEY_UNSET'", repr(name))
    assert unset.startswith("invalid destination: api_key_secret: no SendGrid key is available")
    assert list(svc.destinations.all()) == []


def test_saving_refuses_a_setting_that_holds_no_sendgrid_key() -> None:
    svc = services(SENDGRID_KEY_STORAGE="DefaultEndpointsProtocol=https;AccountName=x")
    message = save(svc, api_key_secret="SENDGRID_KEY_STORAGE")
    assert message.startswith("invalid destination: api_key_secret: the secret ")
    assert "does not hold a SendGrid API key" in message and "AccountName" not in message


# --- bounds ----------------------------------------------------------------------------------


def test_mapping_entries_segments_and_names_are_bounded() -> None:
    many = {f"custom:f{i}": f"C{i}" for i in range(MAX_MAPPING + 1)}
    assert f"mapping: at most 600 entries ({MAX_MAPPING + 1:,} given)" in invalid(mapping=many)
    segments = [f"s{i}" for i in range(MAX_SEGMENTS + 1)]
    assert "segments: at most 100 entries (101 given)" in invalid(segments=segments)
    assert "at most 128 characters" in invalid(mapping={"custom:" + "x" * 122: "C"})
    assert "column name at most 256" in invalid(mapping={"custom:tier": "C" * 257})
    assert "display_name" in invalid(display_name="d" * 201)
    assert "profile_cap" in invalid(profile_cap=100_000_001)
    assert "verify_every" in invalid(verify_every=10_001)


def test_a_document_is_at_most_64_kib_as_stored() -> None:
    # 600 entries within every per-entry bound, 64 KiB over all.
    mapping = {f"custom:field_{i:03d}": f"Column{i:03d}_" + "c" * 90 for i in range(600)}
    with pytest.raises(ValidationError, match=r"bytes as stored; at most 65,536"):
        Destination.model_validate_json(json.dumps(document(mapping=mapping)))
    assert invalid(mapping=mapping) == "invalid destination: the document is over 65,536 bytes"

    fits = {f"custom:field_{i:03d}": f"Column{i:03d}" for i in range(600)}
    saved = Destination.from_json(json.dumps(document(mapping=fits)))
    assert len(saved.stored_json()) <= MAX_DOCUMENT_BYTES


def test_request_bodies_over_the_cap_are_not_parsed() -> None:
    with pytest.raises(TooLarge, match="at most 262,144 are accepted"):
        parse(DestinationRequest, b"{" + b" " * MAX_BODY_BYTES + b"}")
    big = {"mapping": {f"custom:f{i}": "c" * 200 for i in range(2000)}}
    with pytest.raises(TooLarge):
        parse(DestinationRequest, big)  # the CLI's documents too
    assert isinstance(TooLarge("x"), InputError)  # CLI exit 2


# --- strict types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"full_refresh": "yes"}, "full_refresh"),
        ({"full_refresh": 1}, "full_refresh"),
        ({"verify": "true"}, "verify"),
        ({"allow_mass_removal": 0}, "allow_mass_removal"),
        ({"snapshot": 5}, "snapshot"),
        ({"snapshot": "a/" + "x" * 1100 + ".csv"}, "snapshot"),
    ],
)
def test_export_bodies_take_json_types_as_they_are(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as raised:
        parse(ExportBody, json.dumps(body))
    assert str(raised.value).startswith(f"invalid request: {field}: ")
    assert parse(ExportBody, b'{"full_refresh": true}').full_refresh is True


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"create_missing_fields": "yes"}, "create_missing_fields"),
        ({"profile_cap": "100"}, "profile_cap"),
        ({"profile_cap": 10.5}, "profile_cap"),
        ({"full_refresh_every": True}, "full_refresh_every"),
        ({"max_removal_share": "0.5"}, "max_removal_share"),
        ({"segments": "loyal"}, "segments"),
        ({"display_name": 7}, "display_name"),
        ({"mapping": {"email": 1}}, "mapping.email"),
    ],
)
def test_destination_fields_take_json_types_as_they_are(
    changes: dict[str, Any], field: str
) -> None:
    assert invalid(**changes).startswith(f"invalid destination: {field}: ")


def test_strict_still_reads_times_and_whole_numbers_from_json() -> None:
    destination = Destination.from_json(json.dumps(document(max_removal_share=1)))
    assert destination.max_removal_share == 1.0
    assert destination.consent is not None
    assert destination.consent.accepted_at == datetime(2026, 11, 1, 9, tzinfo=UTC)
    request = parse(
        DestinationRequest,
        {"consent": {"accepted_by": "dpo", "accepted_at": datetime(2026, 1, 1, tzinfo=UTC)}},
    )
    assert request.consent is not None
    assert request.consent.accepted_at == datetime(2026, 1, 1, tzinfo=UTC)


# --- stored documents ------------------------------------------------------------------------


def test_a_stored_document_from_before_the_naming_rules_still_loads() -> None:
    text = json.dumps(document(api_key_secret="MY_KEY", segments=["a b", "v1.2"]))
    with pytest.raises(InputError, match="api_key_secret"):
        Destination.from_json(text)
    stored = Destination.from_json(text, stored=True)
    assert (stored.api_key_secret, stored.segments) == ("MY_KEY", ["a b", "v1.2"])
    # Its runs fail saying what to change: the provider refuses the name.
    with pytest.raises(InputError, match="no SendGrid key is available under the name 'MY_KEY'"):
        EnvSecretProvider({"MY_KEY": KEY}).get(stored.api_key_secret)
    # Types and bounds still hold.
    with pytest.raises(InputError, match="profile_cap"):
        Destination.from_json(json.dumps(document(profile_cap="7")), stored=True)


@dataclass
class FakeContainer:
    """The few `ContainerClient` calls the store makes, with the ranges it asks for."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    reads: list[tuple[str, int | None]] = field(default_factory=list)

    def download_blob(self, name: str, offset: int = 0, length: int | None = None) -> Any:
        self.reads.append((name, length))
        if name not in self.blobs:
            raise ResourceNotFoundError("no blob")
        data = self.blobs[name][offset : None if length is None else offset + length]
        return SimpleNamespace(readall=lambda: data)

    def upload_blob(self, name: str, data: bytes, overwrite: bool = False) -> None:
        self.blobs[name] = data

    def delete_blob(self, name: str) -> None:
        if self.blobs.pop(name, None) is None:
            raise ResourceNotFoundError("no blob")

    def list_blobs(self, name_starts_with: str = "") -> Iterator[Any]:
        for name in sorted(self.blobs):
            if name.startswith(name_starts_with):
                yield SimpleNamespace(name=name)


def test_the_store_reads_at_most_a_documents_bytes_and_skips_broken_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    container = FakeContainer()
    store = BlobDestinationStore(container)  # type: ignore[arg-type]
    good = Destination.from_json(json.dumps(document()))
    store.put(good)
    container.blobs["destinations/huge.json"] = b'{"name": "huge", ' + b" " * (8 << 20) + b"}"
    container.blobs["destinations/broken.json"] = b"{not json"

    assert [d.name for d in store.all()] == ["marketing"]
    assert "destination huge left out" in caplog.text
    assert "destination broken left out" in caplog.text
    assert all(length == MAX_DOCUMENT_BYTES + 1 for _, length in container.reads)
    with pytest.raises(InputError, match="over 65,536 bytes: not read"):
        store.get("huge")


@pytest.mark.parametrize("name", ["../runs/x/batches/0", "a/b", "Marketing", "", "x" * 64])
def test_no_other_blob_is_reached_through_a_destination_name(name: str) -> None:
    container = FakeContainer({"runs/x/batches/0.json": b"[]"})
    store = BlobDestinationStore(container)  # type: ignore[arg-type]
    assert store.get(name) is None
    assert store.delete(name) is False
    assert container.reads == [] and "runs/x/batches/0.json" in container.blobs
