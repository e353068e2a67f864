"""What the flow needs (exporter/flow/services.py): a SendGrid client per destination key that
follows the key's rotation, and the flow's settings checked at start; plus the flow's log lines
(exporter/flow/events.py), which never carry an address."""

from __future__ import annotations

import logging

import pytest

from exporter.adapters.secrets import EnvSecretProvider
from exporter.core.batching import MAX_CONTACTS
from exporter.core.errors import InputError
from exporter.flow import events
from exporter.flow.services import (
    DEFAULT_REPORT_RETENTION_DAYS,
    DEFAULT_VERIFY_DELAY,
    DEFAULT_VERIFY_LAG,
    Services,
    run_settings,
    seconds_setting,
)
from exporter.ports.secrets import SecretNotFound
from tests.support.fakes import MemoryStorage
from tests.support.memory_destinations import MemoryDestinationStore
from tests.support.memory_flow import MemoryWorld
from tests.support.memory_ledger import MemoryRunLedger
from tests.support.memory_sendgrid import MemorySendGrid


def services(env: dict[str, str], made: list[tuple[str, MemorySendGrid]]) -> Services:
    def client(key: str) -> MemorySendGrid:
        account = MemorySendGrid()
        made.append((key, account))
        return account

    return Services(
        storage=MemoryStorage(),
        ledger=MemoryRunLedger(),
        destinations=MemoryDestinationStore(),
        secrets=EnvSecretProvider(env),
        clients=client,
    )


def test_one_client_per_key_replaced_and_closed_when_the_key_rotates() -> None:
    env = {"SENDGRID_KEY_FLOW": "SG.first-key", "SENDGRID_KEY_OTHER": "SG.other-key"}
    made: list[tuple[str, MemorySendGrid]] = []
    svc = services(env, made)
    world = MemoryWorld.create()
    marketing = world.destination()
    sales = world.destination(name="sales", api_key_secret="SENDGRID_KEY_OTHER")
    first = svc.sendgrid(marketing)
    assert svc.sendgrid(marketing) is first  # cached
    assert svc.sendgrid(sales) is not first
    env["SENDGRID_KEY_FLOW"] = "SG.rotated-key"
    rotated = svc.sendgrid(marketing)
    assert rotated is not first
    assert [key for key, _ in made] == ["SG.first-key", "SG.other-key", "SG.rotated-key"]
    assert made[0][1].count("close") == 1  # the old key's client let go
    assert made[1][1].count("close") == 0


def test_a_missing_key_is_an_input_error_naming_the_secret() -> None:
    svc = services({}, [])
    world = MemoryWorld.create()
    with pytest.raises(SecretNotFound, match="SENDGRID_KEY_FLOW"):
        svc.sendgrid(world.destination())


def test_the_flows_settings_default_to_sendgrids_and_azures_limits() -> None:
    settings = run_settings({})
    assert settings.max_batch_contacts == MAX_CONTACTS
    assert (settings.cdm_recheck, settings.cdm_wait) == (30.0, 1800.0)
    assert (settings.verify_delay, settings.verify_lag) == (
        DEFAULT_VERIFY_DELAY,
        DEFAULT_VERIFY_LAG,
    )
    assert settings.report_retention_days == DEFAULT_REPORT_RETENTION_DAYS


def test_the_flows_settings_are_read_and_checked() -> None:
    settings = run_settings(
        {
            "MAX_BATCH_CONTACTS": "500",
            "VERIFY_DELAY_SECONDS": "0",
            "VERIFY_LAG_SECONDS": "12.5",
            "REJECT_REPORT_RETENTION_DAYS": "0",
        }
    )
    assert (settings.max_batch_contacts, settings.verify_delay, settings.verify_lag) == (
        500,
        0.0,
        12.5,
    )
    assert settings.report_retention_days == 0


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MAX_BATCH_CONTACTS", "0", "MAX_BATCH_CONTACTS must be a whole number from 1 to 30,000"),
        ("MAX_BATCH_CONTACTS", "30001", "MAX_BATCH_CONTACTS must be a whole number"),
        ("MAX_BATCH_CONTACTS", "many", "MAX_BATCH_CONTACTS must be a whole number"),
        ("REJECT_REPORT_RETENTION_DAYS", "30.5", "REJECT_REPORT_RETENTION_DAYS must be a whole"),
        ("REJECT_REPORT_RETENTION_DAYS", "3651", "REJECT_REPORT_RETENTION_DAYS must be a whole"),
        ("CDM_WAIT_SECONDS", "0", "CDM_WAIT_SECONDS must be a number of seconds, more than 0"),
        ("VERIFY_LAG_SECONDS", "-1", "VERIFY_LAG_SECONDS must be a number of seconds, at least 0"),
        ("CDM_RECHECK_SECONDS", str(8 * 24 * 3600), "and at most 7 days"),
    ],
)
def test_a_wrong_setting_is_refused_naming_it(name: str, value: str, says: str) -> None:
    with pytest.raises(InputError, match=says):
        run_settings({name: value})


def test_seconds_settings_are_trimmed_and_default_when_empty() -> None:
    assert seconds_setting({"X": " 2.5 "}, "X", 30.0) == 2.5
    assert seconds_setting({"X": "  "}, "X", 30.0) == 30.0
    assert seconds_setting({"X": "0"}, "X", 30.0, zero=True) == 0.0


def test_the_flows_log_lines_mask_addresses(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="exporter.flow.runs"):
        events.event("run finished", run_id="r1", reason="user7@example.com refused")
    assert "run finished run_id=r1" in caplog.text
    assert "user7@example.com" not in caplog.text
    brief = events.brief(ValueError("bad user7@example.com"))
    assert brief.startswith("ValueError: bad ") and "user7@example.com" not in brief
    assert len(events.brief(ValueError("x" * 5000))) == 2000
