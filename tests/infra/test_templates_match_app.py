"""The templates declare what the app uses: every queue a trigger listens on (and its poison
queue), the containers and table, the app settings the code reads, and an Event Grid
subscription aimed at the blob-triggered function, which must take its events from Event Grid
(Flex Consumption does not poll). A queue or setting added to the app without the template
fails here, before a deployment does.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from exporter.adapters.azure_storage import QUEUES
from exporter.adapters.table_ledger import TABLE
from exporter.model.layout import APP_CONTAINER, SEGMENTS
from exporter.model.messages import POISON_SUFFIX

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "infra" / "app"


def bicep_list(template: Path, variable: str) -> set[str]:
    """The quoted strings of `var <variable> = [ ... ]`."""
    text = template.read_text(encoding="utf-8")
    found = re.search(rf"^var {variable} = \[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    assert found, f"no `var {variable} = [...]` in {template}"
    return set(re.findall(r"^\s*'([^']+)'", found.group(1), re.MULTILINE))


def bicep_string(template: Path, variable: str) -> str:
    text = template.read_text(encoding="utf-8")
    found = re.search(rf"^var {variable} = '([^']*)'", text, re.MULTILINE)
    assert found, f"no `var {variable} = '...'` in {template}"
    return found.group(1)


def app_settings() -> set[str]:
    text = (APP / "function.bicep").read_text(encoding="utf-8")
    return set(re.findall(r"\{ name: '([^']+)', value: ", text))


@pytest.fixture(scope="module")
def triggers() -> dict[str, dict[str, Any]]:
    """Each function's trigger binding, from a fresh copy of function_app (get_functions may
    run once per app object)."""
    spec = importlib.util.spec_from_file_location(
        "function_app_infra_check", REPO / "function_app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = {}
    for function in module.app.get_functions():
        bindings = json.loads(function.get_function_json())["bindings"]
        trigger = next(b for b in bindings if str(b["type"]).endswith("Trigger"))
        found[function.get_function_name()] = trigger
    return found


def test_every_queue_the_app_uses_is_declared_with_its_poison_queue(
    triggers: dict[str, dict[str, Any]],
) -> None:
    declared = bicep_list(APP / "storage.bicep", "queueNames")
    listened = {t["queueName"] for t in triggers.values() if t["type"] == "queueTrigger"}
    expected = {name for queue in QUEUES for name in (queue, queue + POISON_SUFFIX)}
    assert listened <= expected | declared
    assert expected <= declared, f"missing from storage.bicep: {sorted(expected - declared)}"


def test_the_containers_and_the_runs_table_are_declared() -> None:
    assert {SEGMENTS, APP_CONTAINER} <= bicep_list(APP / "storage.bicep", "containerNames")
    storage = (APP / "storage.bicep").read_text(encoding="utf-8")
    assert re.search(rf"tableServices/tables@[^']+' = \{{\s*parent: \w+\s*name: '{TABLE}'", storage)


def test_the_blob_trigger_takes_its_events_from_the_subscription(
    triggers: dict[str, dict[str, Any]],
) -> None:
    blob_triggers = {n: t for n, t in triggers.items() if t["type"] == "blobTrigger"}
    assert len(blob_triggers) == 1, blob_triggers
    [(name, trigger)] = blob_triggers.items()
    assert trigger.get("source") == "EventGrid"
    events = APP / "blob-events.bicep"
    assert bicep_string(events, "functionName") == name
    assert trigger["path"].split("/")[0] == bicep_string(events, "container") == SEGMENTS


def test_the_app_settings_the_code_reads_are_set(triggers: dict[str, dict[str, Any]]) -> None:
    settings = app_settings()
    schedules = {t["schedule"].strip("%") for t in triggers.values() if t["type"] == "timerTrigger"}
    connections = {t.get("connection", "AzureWebJobsStorage") for t in triggers.values()}
    needed = {"KEY_VAULT_URI", "AZURE_CLIENT_ID", "SENDGRID_API_BASE_URL", *schedules} | {
        f"{connection}__{part}"
        for connection in connections
        for part in ("accountName", "credential", "clientId", "blobServiceUri", "queueServiceUri")
    }
    assert needed <= settings, f"missing from function.bicep: {sorted(needed - settings)}"
