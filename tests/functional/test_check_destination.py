"""`python -m exporter check FILE --destination NAME`: the file read with that destination's
mapping (its document read from storage, Azurite here, through the settings file), `--map` on
top of it; and the sample contact `check` shows, in text and in `--json`: the first valid row as
SendGrid would receive it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.adapters.destination_store import BlobDestinationStore
from exporter.local.azurite import AzuriteProcess
from exporter.model.destinations import Consent, Destination

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
FILE = """WorkMail,Given,Stufe,Punkte
not-an-email,Xavier,Gold,1
Ann@Example.com,Ann,Gold,12.5
bob@example.com,Bob,Silver,"1,234"
ann@example.com,Annie,Bronze,3
"""


def check(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "check", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def segment(tmp_path: Path) -> Path:
    path = tmp_path / "segment.csv"
    path.write_text(FILE, encoding="utf-8")
    return path


@pytest.fixture
def stored(azurite: AzuriteProcess, tmp_path: Path) -> tuple[str, Path]:
    """A destination in Azurite's app container, and a settings file naming that storage."""
    storage = Storage.from_env({"AzureWebJobsStorage": azurite.connection_string})
    storage.ensure()
    name = f"check-{uuid.uuid4().hex[:8]}"
    BlobDestinationStore(storage.app).put(
        Destination(
            name=name,
            display_name="Check",
            list_id="0b6a4a0e-8d1c-4f63-9b8e-8a1f1c3c7c11",
            api_key_secret="SENDGRID_KEY_CHECK",
            segments=["loyal"],
            mapping={
                "email": "WorkMail",
                "first_name": "Given",
                "custom:tier": "Stufe",
                "custom:points:Number": "Punkte",
            },
            consent=Consent(accepted_by="dpo", accepted_at=datetime(2026, 1, 1, tzinfo=UTC)),
        )
    )
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"Values": {"AzureWebJobsStorage": azurite.connection_string}}),
        encoding="utf-8",
    )
    return name, settings


def test_check_uses_the_destinations_mapping(segment: Path, stored: tuple[str, Path]) -> None:
    name, settings = stored
    result = check(segment, "--destination", name, "--settings", settings, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["destination"] == name
    assert summary["mapping"] == {
        "email": "WorkMail",
        "first_name": "Given",
        "custom:tier": "Stufe",
        "custom:points": "Punkte",
    }
    # The declared Number type is checked offline: "1,234" is no number SendGrid would take.
    assert (summary["rows"], summary["valid"], summary["duplicates"]) == (4, 1, 1)
    assert summary["reasons"] == {"invalid_email": 1, "custom_field_not_a_number": 1}
    assert summary["sample"] == {
        "email": "ann@example.com",
        "first_name": "Ann",
        "custom_fields": {"tier": "Gold", "points": 12.5},
    }

    text = check(segment, "--destination", name, "--settings", settings)
    assert text.returncode == 0, text.stderr
    assert f"(the mapping of destination '{name}')" in text.stdout
    lines = text.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("sample contact"))
    assert "as SendGrid would receive it" in lines[at] and "by field id" in lines[at]
    assert json.loads(lines[at + 1]) == summary["sample"]


def test_map_on_the_command_line_wins_over_the_destinations(
    segment: Path, stored: tuple[str, Path]
) -> None:
    name, settings = stored
    result = check(
        segment,
        "--destination",
        name,
        "--settings",
        settings,
        "--map",
        "custom:points:Text=Punkte",
        "--map",
        "first_name=",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mapping"] == {
        "email": "WorkMail",
        "custom:tier": "Stufe",
        "custom:points": "Punkte",
    }
    assert summary["valid"] == 2 and summary["reasons"] == {"invalid_email": 1}
    assert summary["sample"]["custom_fields"] == {"tier": "Gold", "points": "12.5"}


def test_an_unknown_destination_is_one_error_line(segment: Path, stored: tuple[str, Path]) -> None:
    _, settings = stored
    result = check(segment, "--destination", "nobody-here", "--settings", settings)
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: no destination 'nobody-here'"


def test_check_shows_a_sample_contact_without_a_destination(tmp_path: Path) -> None:
    path = tmp_path / "de.csv"
    path.write_text(
        "E-Mail-Adresse,Vorname\nkaputt,X\n Erika@Example.DE ,Erika\n", encoding="utf-8"
    )
    summary = json.loads(check(path, "--json").stdout)
    assert summary["destination"] is None
    assert summary["mapping"] == {"email": "E-Mail-Adresse"}
    assert summary["sample"] == {"email": "erika@example.de"}
    text = check(path).stdout
    assert "sample contact, the first valid row as SendGrid would receive it:" in text
    assert '  {"email": "erika@example.de"}' in text

    path.write_text("email\nnope\n", encoding="utf-8")
    assert json.loads(check(path, "--json").stdout)["sample"] is None
    assert "sample contact: none (no valid row)" in check(path).stdout
