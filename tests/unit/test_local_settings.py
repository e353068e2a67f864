"""`local.settings.json` followed while the local tools run: the host's settings (what a change
applies at once, what needs a restart, what the environment keeps) and the sandbox's keys."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from exporter.local.host.config import HostError
from exporter.local.host.settings import LiveSettings, disabled_functions, is_live
from exporter.local.sandbox.keys import AcceptedKeys
from exporter.local.settings_file import SettingsFileError, api_keys_from

PREFIX = "LOCALSETTINGSTEST_"


def write(path: Path, values: dict[str, str]) -> None:
    # A new inode each time, as editors that save by renaming do: the change is always seen.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    temporary.replace(path)


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    return tmp_path / "local.settings.json"


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SENDGRID_KEY", PREFIX, "AzureWebJobs.")):
            monkeypatch.delenv(name)


def test_which_settings_apply_at_once() -> None:
    assert is_live("SENDGRID_KEY_MARKETING")
    assert is_live("sendgrid-key-news")
    assert is_live("AzureWebJobs.refresh.Disabled")
    assert is_live("NOTIFY_URL_OPS")
    assert is_live("NOTIFY_SIGNING_OPS")
    assert not is_live("NOTIFY_RETRY_BASE_SECONDS")
    assert not is_live("VERIFY_DELAY_SECONDS")
    assert not is_live("REFRESH_SCHEDULE")
    assert not is_live("LOCAL_HOST_QUEUE_LEASE_SECONDS")
    assert disabled_functions(
        {
            "AzureWebJobs.refresh.Disabled": "true",
            "AzureWebJobs.Plan_Run.Disabled": "1",
            "AzureWebJobs.send_batch.Disabled": "false",
            "AzureWebJobs.tick.Disabled": "no",
        }
    ) == {"refresh", "plan_run"}


@pytest.mark.usefixtures("clean_environment")
def test_defaults_yield_to_the_file_which_yields_to_the_environment(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(settings_file, {f"{PREFIX}A": "file", f"{PREFIX}B": "file"})
    monkeypatch.setenv(f"{PREFIX}B", "environment")
    live = LiveSettings(settings_file, {f"{PREFIX}A": "default", f"{PREFIX}C": "default"})

    settings = live.load()
    try:
        assert settings[f"{PREFIX}A"] == os.environ[f"{PREFIX}A"] == "file"
        assert settings[f"{PREFIX}B"] == os.environ[f"{PREFIX}B"] == "environment"
        assert settings[f"{PREFIX}C"] == os.environ[f"{PREFIX}C"] == "default"
    finally:
        live.stop()
    assert f"{PREFIX}A" not in os.environ  # what was exported is taken back
    assert f"{PREFIX}C" not in os.environ
    assert os.environ[f"{PREFIX}B"] == "environment"


@pytest.mark.usefixtures("clean_environment")
def test_a_change_applies_keys_and_switches_at_once_and_says_to_restart_for_the_rest(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SENDGRID_KEY_PINNED", "SG.from-the-shell")
    write(
        settings_file,
        {
            "SENDGRID_KEY_OLD": "SG.old",
            "SENDGRID_KEY_PINNED": "SG.file",
            f"{PREFIX}DELAY": "1",
        },
    )
    live = LiveSettings(settings_file, restart_hint="restart `exporter up`")
    live.load()
    try:
        caplog.set_level(logging.INFO, logger="exporter.local.host")
        write(
            settings_file,
            {
                "SENDGRID_KEY_NEW": "SG.new-key-value",
                "SENDGRID_KEY_PINNED": "SG.file-changed",
                f"{PREFIX}DELAY": "60",
                "AzureWebJobs.refresh.Disabled": "true",
            },
        )
        live.check()

        assert os.environ["SENDGRID_KEY_NEW"] == "SG.new-key-value"
        assert "SENDGRID_KEY_OLD" not in os.environ
        assert os.environ["SENDGRID_KEY_PINNED"] == "SG.from-the-shell"
        assert os.environ[f"{PREFIX}DELAY"] == "1"  # not applied: restart
        assert live.disabled("refresh") and live.disabled("Refresh")
        assert live.settings["SENDGRID_KEY_NEW"] == "SG.new-key-value"
        lines = [r.getMessage() for r in caplog.records]
        assert lines[0] == (
            f"settings changed in local.settings.json: AzureWebJobs.refresh.Disabled, "
            f"{PREFIX}DELAY, SENDGRID_KEY_NEW, SENDGRID_KEY_OLD, SENDGRID_KEY_PINNED (applied "
            f"to the next invocations: AzureWebJobs.refresh.Disabled, SENDGRID_KEY_NEW, "
            f"SENDGRID_KEY_OLD)"
        )
        assert lines[1] == "function refresh is disabled now (AzureWebJobs.refresh.Disabled)"
        assert lines[2] == (
            "not applied, the environment sets them (it wins over local.settings.json): "
            "SENDGRID_KEY_PINNED"
        )
        assert lines[3] == f"restart `exporter up` to apply {PREFIX}DELAY"
        assert "SG." not in caplog.text  # names only, never a value

        caplog.clear()
        write(settings_file, {**json.loads(settings_file.read_text())["Values"], "X": "y"})
        live.check()
        assert [r.getMessage() for r in caplog.records][-1] == (
            f"restart `exporter up` to apply {PREFIX}DELAY, X"  # still pending
        )
        caplog.clear()
        settings_file.write_text('{"Values": {')  # caught half-written
        live.check()
        assert "is not valid JSON" in caplog.text
        assert caplog.text.rstrip().endswith("the settings in force stay")
        assert os.environ["SENDGRID_KEY_NEW"] == "SG.new-key-value"
        write(settings_file, {f"{PREFIX}DELAY": "1"})
        live.check()
        assert "SENDGRID_KEY_NEW" not in os.environ
        assert not live.disabled("refresh")
    finally:
        live.stop()


@pytest.mark.usefixtures("clean_environment")
def test_a_settings_file_that_appears_later_is_followed(settings_file: Path) -> None:
    live = LiveSettings(settings_file)
    live.load()
    try:
        write(settings_file, {"SENDGRID_KEY_LATE": "SG.late"})
        live.check()
        assert os.environ["SENDGRID_KEY_LATE"] == "SG.late"
    finally:
        live.stop()
    assert "SENDGRID_KEY_LATE" not in os.environ


def test_an_unreadable_settings_file_stops_the_start(settings_file: Path) -> None:
    settings_file.write_text('{"Values": {"A": 1}}')
    with pytest.raises(HostError, match=r"Values\.A must be a string"):
        LiveSettings(settings_file).load()


def test_the_sandbox_accepts_exactly_the_keys_written_in_the_file(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SENDGRID_KEY_SHELL", "SG.only-in-the-shell")
    write(settings_file, {"SENDGRID_KEY_A": "SG.a", "OTHER_SETTING": "SG.not-a-key-name"})
    keys = AcceptedKeys(keys_from=settings_file)

    assert keys.required
    assert keys.names() == ["SENDGRID_KEY_A"]
    assert keys.accepts("SG.a")
    assert not keys.accepts("SG.not-a-key-name")
    assert not keys.accepts("SG.only-in-the-shell")  # the environment is the app's, not SendGrid's
    assert not keys.accepts("")

    caplog.set_level(logging.INFO, logger="exporter.local.sandbox")
    write(settings_file, {"SENDGRID_KEY_A": "SG.a2", "SENDGRID_KEY_B": "SG.b"})
    assert keys.accepts("SG.b")
    assert not keys.accepts("SG.a")
    assert "the accepted API keys changed (added: SENDGRID_KEY_B; changed: SENDGRID_KEY_A)" in (
        caplog.text
    )
    assert "SG.a2" not in caplog.text
    settings_file.write_text("{")
    assert keys.accepts("SG.b")  # the keys in force stay
    assert "the API keys in force stay" in caplog.text
    settings_file.unlink()
    assert not keys.accepts("SG.b")


def test_the_sandbox_accepts_one_key_or_any() -> None:
    assert AcceptedKeys().accepts("anything") and not AcceptedKeys().required
    one = AcceptedKeys("SG.right")
    assert one.accepts("SG.right") and not one.accepts("SG.wrong")


def test_keys_are_read_only_from_key_names(settings_file: Path) -> None:
    write(settings_file, {"SENDGRID_KEY": "SG.1", "sendgrid-key-x": "SG.2", "KEY": "SG.3"})
    assert api_keys_from(settings_file) == {"SENDGRID_KEY": "SG.1", "sendgrid-key-x": "SG.2"}
    settings_file.write_text("[]")
    with pytest.raises(SettingsFileError, match="must hold a JSON object"):
        api_keys_from(settings_file)
