"""`exporter up`'s stack (`Stack.for_up`) on free ports, as a developer rehearses: the sandbox's
state survives a restart with Azurite's data and `--fresh` resets both; the sandbox accepts only
the keys written in local.settings.json (a wrong key gets SendGrid's 401); a key added to the
file is used by the next run without a restart, and a change that needs one says so."""

from __future__ import annotations

import argparse
import json
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.operations import follow, upload_snapshot
from exporter.cli import local as cli_local
from exporter.cli.parser import build_parser
from exporter.local.stack import Stack
from exporter.model.destinations import Consent, Destination
from exporter.model.runs import RunRecord
from exporter.wiring import services_from_env

pytestmark = pytest.mark.e2e  # the whole stack: Azurite, the sandbox, the host

KEY = "SG.up-key"
FUNCTION_KEY = "up-function-key"
T = TypeVar("T")


def write_settings(path: Path, **values: str) -> None:
    document = {"IsEncrypted": False, "Values": {"LOCAL_FUNCTION_KEY": FUNCTION_KEY, **values}}
    path.write_text(json.dumps(document), encoding="utf-8")


def up_stack(tmp_path: Path) -> Stack:
    return Stack.for_up(
        tmp_path / "data", settings_file=tmp_path / "local.settings.json", fixed_ports=False
    )


def sandbox_get(stack: Stack, path: str, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(stack.sandbox_url + path)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def check_destination(stack: Stack, name: str) -> dict[str, Any]:
    """`POST /api/destinations/{name}/test` through the host: its key, its list."""
    request = urllib.request.Request(
        f"{stack.host_url}/api/destinations/{name}/test",
        method="POST",
        data=b"",
        headers={"x-functions-key": FUNCTION_KEY},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            report: dict[str, Any] = json.loads(answer.read())
    except urllib.error.HTTPError as exc:  # 502: a check failed
        report = json.loads(exc.read())
    return {c["name"]: (c["ok"], c["detail"]) for c in report["checks"]}


def destination(name: str, list_id: str, key_setting: str, segment: str) -> Destination:
    return Destination(
        name=name,
        display_name=name,
        list_id=list_id,
        api_key_secret=key_setting,
        segments=[segment],
        consent=Consent(accepted_by="dpo", accepted_at=datetime.now(UTC)),
    )


def eventually(check: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout} s: {found!r}"
        time.sleep(0.2)


def test_the_sandbox_keeps_its_state_with_azurite_and_fresh_resets_both(tmp_path: Path) -> None:
    write_settings(tmp_path / "local.settings.json", SENDGRID_KEY_UP=KEY)
    with up_stack(tmp_path) as stack:
        client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
        list_id = client.create_list("kept").id
        job = client.upsert([list_id], json.dumps([{"email": "ann@example.com"}]))
        eventually(lambda: client.import_status(job).status == "completed")
        svc = services_from_env(stack.settings)
        svc.destinations.put(destination("kept", list_id, "SENDGRID_KEY_UP", "loyal"))
        members = sandbox_get(stack, f"/__sandbox/lists/{list_id}/contacts")[1]
        assert [m["email"] for m in members] == ["ann@example.com"]
    assert stack.sandbox is not None and stack.sandbox.process.returncode == 0
    assert stack.sandbox_state_file.is_file()

    with up_stack(tmp_path) as stack:  # `exporter up` again: storage and SendGrid as they were
        assert sandbox_get(stack, f"/__sandbox/lists/{list_id}/contacts")[1] == members
        svc = services_from_env(stack.settings)
        assert svc.destinations.get("kept") is not None
        checks = check_destination(stack, "kept")
        assert checks["api_key"][0] and checks["list"] == (True, "list 'kept' (1 contacts)")

    stack = up_stack(tmp_path)
    deleted = stack.reset_data()  # `exporter up --fresh`
    assert deleted == [stack.azurite_dir, stack.sandbox_state_file]
    with stack:
        assert sandbox_get(stack, "/__sandbox/state")[1]["lists"] == []
        assert services_from_env(stack.settings).destinations.get("kept") is None


def test_a_wrong_key_gets_401_and_a_key_added_to_the_settings_is_used_without_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "local.settings.json"
    values = {"SENDGRID_KEY_UP": KEY, "SENDGRID_KEY_PINNED": "SG.pinned-in-the-file"}
    write_settings(settings_file, **values)
    # The shell's value wins over the file for the host; the sandbox knows the file's only.
    monkeypatch.setenv("SENDGRID_KEY_PINNED", "SG.pinned-in-the-shell")
    monkeypatch.delenv("SENDGRID_KEY_MARKETING", raising=False)
    with up_stack(tmp_path) as stack:
        status, body = sandbox_get(stack, "/v3/marketing/lists", key="SG.not-in-the-file")
        assert (status, body) == (401, {"errors": [{"message": "authorization required"}]})
        assert sandbox_get(stack, "/v3/marketing/lists", key=KEY)[0] == 200

        client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
        list_id = client.create_list("marketing").id
        svc = services_from_env(stack.settings)
        svc.destinations.put(destination("pinned", list_id, "SENDGRID_KEY_PINNED", "other"))
        svc.destinations.put(destination("marketing", list_id, "SENDGRID_KEY_MARKETING", "loyal"))
        ok, detail = check_destination(stack, "pinned")["api_key"]
        assert not ok and "401" in detail  # the app's key is a wrong one for SendGrid

        storage = Storage.from_env(stack.settings)

        def export(name: str, *emails: str) -> RunRecord:
            snapshot = tmp_path / name
            snapshot.write_text("\n".join(["Email", *emails]) + "\n", encoding="utf-8")
            version = upload_snapshot(storage, snapshot, "loyal")
            (run,) = follow(svc, version, 1, timeout=60, on_progress=lambda progress: None)
            return run

        before = export("loyal-1.csv", "ann@example.com", "bob@example.com")
        assert before.state == "failed"
        assert "SENDGRID_KEY_MARKETING" in (before.error or "")

        # While `up` runs: the key is added, the host applies it, the sandbox accepts it.
        write_settings(settings_file, **values, SENDGRID_KEY_MARKETING="SG.marketing-key")
        host, sandbox = stack.host, stack.sandbox
        assert host is not None and sandbox is not None
        eventually(lambda: "SENDGRID_KEY_MARKETING (applied" in host.output())
        eventually(lambda: check_destination(stack, "marketing")["api_key"][0])
        after = export("loyal-2.csv", "ann@example.com", "cy@example.com")
        assert after.state == "succeeded", after.error
        assert client.list_count(list_id) == 2

        write_settings(
            settings_file,
            **values,
            SENDGRID_KEY_MARKETING="SG.marketing-key",
            VERIFY_LAG_SECONDS="9",
        )
        eventually(lambda: "restart `exporter up` to apply VERIFY_LAG_SECONDS" in host.output())
        assert "SG.marketing-key" not in host.output() + sandbox.output()


def test_up_starts_fresh_and_says_what_it_runs_and_which_keys_it_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_file = tmp_path / "local.settings.json"
    write_settings(settings_file, SENDGRID_KEY_UP=KEY, SENDGRID_KEY_OTHER="SG.other")
    leftover = tmp_path / "data" / "sandbox" / "state"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("a state from before\n")
    started: list[Stack] = []
    original = Stack.for_up

    def for_up(data: Path, *, echo: bool) -> Stack:
        stack = original(data, settings_file=settings_file, fixed_ports=False, echo=echo)
        started.append(stack)
        return stack

    def stop(seconds: float) -> None:
        raise KeyboardInterrupt  # Ctrl-C, once `up` is up

    monkeypatch.setattr(Stack, "for_up", staticmethod(for_up))
    monkeypatch.setattr(cli_local, "_stop_on_sigterm", lambda: None)
    monkeypatch.setattr(cli_local, "time", types.SimpleNamespace(sleep=stop))
    args = build_parser().parse_args(["up", "--data", str(tmp_path / "data"), "--fresh", "--quiet"])
    assert isinstance(args, argparse.Namespace)

    assert cli_local.up(args) == 0

    out = capsys.readouterr().out
    assert f"--fresh: Azurite's data and the sandbox's state deleted ({leftover})" in out
    assert "accepts the API keys of local.settings.json: SENDGRID_KEY_OTHER, SENDGRID_KEY_UP" in out
    assert "(0 lists, 0 contacts;" in out
    assert f"Functions host, HTTP on {started[0].host_url}/api" in out
    assert not started[0].host.alive()  # type: ignore[union-attr]
    assert not started[0].sandbox.alive()  # type: ignore[union-attr]
