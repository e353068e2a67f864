"""End to end: `python -m exporter destinations|export|runs` as an administrator runs them, in
subprocesses, against the local stack (Azurite, the SendGrid sandbox, the Functions host).

The CLI reaches the stack through a settings file, as it reaches `local.settings.json`.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.flow.services import Services
from exporter.local.stack import REPO_ROOT, Stack
from exporter.model.versions import SnapshotVersion
from exporter.wiring import services_from_env
from tests.support.stack import drop_seen

pytestmark = pytest.mark.e2e

KEY = "SG.e2e-admin-cli-key"
SECRET = "SENDGRID_KEY_CLI"


@dataclass
class Admin:
    stack: Stack
    settings: Path
    svc: Services
    storage: Storage
    client: SendGridClient
    tmp: Path

    def run(self, *args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "exporter", *map(str, args), "--settings", self.settings],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=180,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        assert KEY not in result.stdout + result.stderr, "an API key in the CLI's output"
        return result

    def ok(self, *args: object) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def drop(self, segment: str, name: str, rows: list[str]) -> SnapshotVersion:
        """A snapshot the blob trigger has already seen (before any destination selected it)."""
        return drop_seen(self.storage, self.tmp, segment, name, rows)

    def members(self, list_id: str) -> set[str]:
        import urllib.request

        url = f"{self.stack.sandbox_url}/__sandbox/lists/{list_id}/contacts"
        with urllib.request.urlopen(url, timeout=30) as answer:
            return {m["email"] for m in json.load(answer)}


def error_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Exit `code`, and exactly one stderr line `error: ...` holding `words`."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def people(n: int, name: str = "Name") -> list[str]:
    return [f"user{i}@example.com,{name}{i}" for i in range(n)]


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    tmp = tmp_path_factory.mktemp("admin-cli")
    settings = {SECRET: KEY, "SENDGRID_KEY_WRONG": "SG.wrong", "MAX_BATCH_CONTACTS": "20"}
    sandbox_args = ["--api-key", KEY, "--job-delay", "0.1"]
    with Stack(tmp / "stack", settings=settings, sandbox_args=sandbox_args) as stack:
        path = tmp / "local.settings.json"
        path.write_text(json.dumps({"IsEncrypted": False, "Values": stack.settings}))
        yield Admin(
            stack,
            path,
            services_from_env(stack.settings),
            Storage.from_env(stack.settings),
            SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url)),
            tmp,
        )


def add(admin: Admin, name: str, *flags: object) -> subprocess.CompletedProcess[str]:
    return admin.run(
        "destinations",
        "add",
        name,
        "--api-key-secret",
        SECRET,
        "--segment",
        name,
        *flags,
    )


def test_destinations_add_list_show_update_test(admin: Admin) -> None:
    result = add(admin, "cli-a", "--list-name", "CLI a", "--consent-by", "dpo@company.example")
    assert result.returncode == 0, result.stderr
    found = admin.client.find_list("CLI a")
    assert found is not None
    assert f"destination 'cli-a' added: list {found.id} (created in SendGrid)" in result.stdout

    error_line(add(admin, "cli-a", "--list-name", "CLI a", "--consent-by", "x"), 2, "exists")
    error_line(add(admin, "cli-b", "--list-name", "CLI b"), 2, "consent is required")
    error_line(
        add(
            admin, "cli-b", "--list-id", "7d3f9a2e-1111-4222-8333-444455556666", "--consent-by", "x"
        ),
        1,
        "SendGrid has no list",
    )
    error_line(
        admin.run(
            "destinations",
            "add",
            "cli-b",
            "--api-key-secret",
            "SENDGRID_KEY_WRONG",
            "--segment",
            "b",
            "--list-name",
            "CLI b",
            "--consent-by",
            "x",
        ),
        1,
        "refused the API key",
    )
    error_line(add(admin, "Bad_Name", "--list-name", "x", "--consent-by", "x"), 2, "name")
    assert admin.client.find_list("CLI b") is None  # nothing made for refused requests

    listed = json.loads(admin.ok("destinations", "list", "--json"))
    assert [d["name"] for d in listed] == ["cli-a"]
    assert re.search(
        r"^cli-a\s+" + found.id + r"\s+upsert.*consent recorded$",
        admin.ok("destinations", "list"),
        re.M,
    )

    shown = json.loads(admin.ok("destinations", "show", "cli-a"))
    assert shown["api_key_secret"] == SECRET and shown["list_id"] == found.id
    assert shown["consent"]["accepted_by"] == "dpo@company.example"

    flags = ("--display-name", "Newsletter", "--sync-mode", "mirror", "--full-refresh-every", "7")
    # A custom field SendGrid lacks is refused at once, naming it and the flag that creates it.
    refused = error_line(
        admin.run(
            "destinations",
            "update",
            "cli-a",
            "--map",
            "custom:tier=Tier",
            *flags,
            "--no-create-missing-fields",
        ),
        2,
    )
    assert "custom field(s) 'tier' do not exist in SendGrid" in refused
    assert "--create-missing-fields" in refused
    assert "tier" not in admin.client.field_definitions().custom
    made = admin.ok(
        "destinations",
        "update",
        "cli-a",
        "--map",
        "custom:tier=Tier",
        *flags,
        "--create-missing-fields",
    )
    assert "custom fields created in SendGrid: tier (Text)" in made
    assert admin.client.field_definitions().custom["tier"].field_type == "Text"
    updated = json.loads(admin.ok("destinations", "show", "cli-a"))
    assert updated["display_name"] == "Newsletter" and updated["sync_mode"] == "mirror"
    assert updated["full_refresh_every"] == 7 and updated["create_missing_fields"] is True
    assert updated["mapping"] == {"custom:tier": "Tier"}
    assert updated["consent"] == shown["consent"]  # kept as recorded
    error_line(
        admin.run("destinations", "update", "cli-none", "--display-name", "x"), 2, "no destination"
    )

    # A field the mapping names that SendGrid no longer has (deleted there since the save):
    # `test` names it.
    stored = admin.svc.destinations.get("cli-a")
    assert stored is not None
    gone = {"custom:tier": "Tier", "custom:points": "Points"}
    admin.svc.destinations.put(
        stored.model_copy(update={"mapping": gone, "create_missing_fields": False})
    )
    result = admin.run("destinations", "test", "cli-a")
    assert result.returncode == 1, result.stdout
    assert re.search(r"^ok\s+api_key", result.stdout, re.M)
    assert re.search(r"^ok\s+list\s+list 'CLI a'", result.stdout, re.M)
    assert re.search(r"^FAIL custom_fields .*'points'", result.stdout, re.M)
    admin.client.create_field("points", "Text")
    report = json.loads(admin.ok("destinations", "test", "cli-a", "--json"))
    assert report["ok"] is True and [c["name"] for c in report["checks"]] == [
        "api_key",
        "list",
        "custom_fields",
    ]
    error_line(admin.run("destinations", "show", "cli-none"), 2, "no destination 'cli-none'")


def test_export_on_demand_and_read_the_runs(admin: Admin) -> None:
    rows = people(30)
    rows[4] = "not-an-email,Broken"
    older = admin.drop("cli-e", "001.csv", rows)
    admin.drop("cli-e", "002.csv", people(40, "Renamed"))  # every contact changed
    assert add(admin, "cli-e", "--list-name", "CLI e", "--consent-by", "ops").returncode == 0

    out = admin.ok("export", "--destination", "cli-e", "--snapshot", older.name, "--wait")
    run_id = re.search(r"^run (\S+): segment cli-e, snapshot cli-e/001.csv$", out, re.M)
    assert run_id, out
    assert f"run {run_id[1]}: succeeded" in out
    result = admin.run("export", "--destination", "cli-e", "--wait")
    assert result.returncode == 0, result.stderr
    assert "snapshot cli-e/002.csv" in result.stdout
    # Plain progress lines when stderr is not a terminal: read, contacts taken, batches.
    assert re.search(
        r"read 40, SendGrid took 40 of 40 contacts; 2 batches: 2 confirmed, 0 failed",
        result.stderr,
    )

    result = admin.run("export", "--destination", "cli-e", "--full-refresh")
    assert result.returncode == 0
    (full,) = re.findall(r"^run (\S+): segment", result.stdout, re.M)
    follow = admin.run("runs", "follow", full, "--timeout", "120")
    assert follow.returncode == 0, follow.stderr
    assert f"run {full}: succeeded" in follow.stdout
    assert "full refresh" in follow.stdout and re.search(
        r"valid\s+40\s+.* 40 to send", follow.stdout
    )
    assert re.search(r"\d+ batches: \d+ confirmed", follow.stderr)

    listed = json.loads(admin.ok("runs", "list", "--destination", "cli-e", "--json"))["runs"]
    assert [r["run_id"] for r in listed][-1] == run_id[1] and len(listed) == 3
    assert {r["trigger"] for r in listed} == {"cli"}
    # A rejected row does not make a run "with errors": all three succeeded.
    succeeded = json.loads(
        admin.ok("runs", "list", "--destination", "cli-e", "--state", "succeeded", "--json")
    )["runs"]
    assert len(succeeded) == 3 and all(r["state"] == "succeeded" for r in succeeded)
    failed = admin.ok("runs", "list", "--destination", "cli-e", "--state", "failed", "--json")
    assert json.loads(failed) == {"runs": []}
    error_line(admin.run("runs", "list", "--state", "done"), 2, "state must be one of")

    report = admin.tmp / "rejects.csv"
    shown = admin.ok("runs", "show", run_id[1], "--rejects", report)
    assert "rejected invalid_email: row 5 (line 6)" in shown
    assert f"reject report: blob exporter/runs/{run_id[1]}/rejects.csv" in shown
    assert f"/exporter/runs/{run_id[1]}/rejects.csv" in shown.splitlines()[-1]
    rows_read = list(csv.DictReader(report.read_text(encoding="utf-8").splitlines()))
    assert [(r["row"], r["reason"]) for r in rows_read] == [("5", "invalid_email")]
    details = json.loads(admin.ok("runs", "show", run_id[1], "--json"))
    assert details["rejects"]["samples"]["invalid_email"][0]["row"] == 5
    assert details["progress"]["confirmed"] == details["batches"] == 2
    error_line(admin.run("runs", "show", "nope"), 2, "no run 'nope'")
    error_line(admin.run("runs", "follow", "nope"), 2, "no run 'nope'")


def test_the_upload_form_of_export_still_works(admin: Admin) -> None:
    assert add(admin, "cli-u", "--list-name", "CLI u", "--consent-by", "ops").returncode == 0
    path = admin.tmp / "cli-u.csv"
    path.write_text("\n".join(["Email,FirstName", *people(12)]) + "\n", encoding="utf-8")
    result = admin.run("export", path, "--segment", "cli-u", "--wait", "--timeout", "120")
    assert result.returncode == 0, result.stderr
    assert "destinations: cli-u" in result.stdout and ": succeeded" in result.stdout
    assert re.search(r"\d+ batches: \d+ confirmed", result.stderr)

    # --json: the run ids the upload starts, before the blob trigger has made them.
    path.write_text("\n".join(["Email,FirstName", *people(14)]) + "\n", encoding="utf-8")
    answer = json.loads(
        admin.ok("export", path, "--segment", "cli-u", "--json", "--wait", "--timeout", "120")
    )
    (run,) = answer["runs"]
    assert run["destination"] == "cli-u" and answer["snapshot"] == "cli-u/cli-u.csv"
    assert run["state"] == "succeeded"
    found = admin.svc.ledger.get_run(run["run_id"])
    assert found is not None and (found.etag, found.trigger) == (answer["etag"], "blob")
    # A typo: refused before anything is uploaded, with the name it probably meant.
    error_line(
        admin.run("export", path, "--segment", "cli-uu"),
        2,
        "no destination selects segment 'cli-uu'; did you mean 'cli-u'?",
    )


def test_export_to_an_unknown_destination_is_one_error_line(admin: Admin) -> None:
    error_line(admin.run("export", "--destination", "nobody"), 2, "no destination 'nobody'")
    error_line(admin.run("destinations", "test", "nobody"), 2, "no destination 'nobody'")


def test_remove_stops_a_queued_run_the_planner_never_plans_it(admin: Admin) -> None:
    first = admin.drop("cli-r", "001.csv", people(25))
    admin.drop("cli-r", "002.csv", people(30))
    assert add(admin, "cli-r", "--list-name", "CLI r", "--consent-by", "ops").returncode == 0
    list_id = json.loads(admin.ok("destinations", "show", "cli-r"))["list_id"]
    out = admin.ok("export", "--destination", "cli-r", "--snapshot", first.name, "--wait")
    (done,) = re.findall(r"^run (\S+): segment", out, re.M)
    assert admin.members(list_id) == {f"user{i}@example.com" for i in range(25)}
    assert [b.name for b in admin.storage.app.list_blobs(name_starts_with="state/cli-r/")]

    assert admin.stack.host is not None
    admin.stack.host.stop()  # a paused app: the request waits in its queue
    try:
        out = admin.ok("export", "--destination", "cli-r")
        (queued,) = re.findall(r"^run (\S+): segment", out, re.M)
        error_line(admin.run("destinations", "remove", "cli-r"), 2, "pass --yes")
        out = admin.ok("destinations", "remove", "cli-r", "--yes")
        assert "1 unfinished run(s) stopped" in out and f"stopped run {queued}" in out
    finally:
        admin.stack.start_host()

    run = admin.svc.ledger.get_run(queued)
    assert run is not None and run.state == "failed"
    assert run.error == "the destination was removed before the run was planned: nothing was sent"
    time.sleep(4)  # the host takes the queued request now: the planner refuses it
    run = admin.svc.ledger.get_run(queued)
    assert run is not None and run.state == "failed" and run.batches == 0
    assert admin.members(list_id) == {f"user{i}@example.com" for i in range(25)}  # none sent
    assert not list(admin.storage.app.list_blobs(name_starts_with="state/cli-r/"))
    assert not admin.storage.queue("export-requests").peek_messages()
    history = json.loads(admin.ok("runs", "list", "--destination", "cli-r", "--json"))["runs"]
    assert {r["run_id"] for r in history} == {done, queued}
    error_line(admin.run("destinations", "show", "cli-r"), 2, "no destination")


def refused_tokens(admin: Admin) -> int:
    """Requests the sandbox answered 401 (it takes KEY only: any other bearer token)."""
    import urllib.request

    with urllib.request.urlopen(f"{admin.stack.sandbox_url}/__sandbox/requests") as answer:
        counts: dict[str, int] = json.load(answer)
    return sum(n for k, n in counts.items() if k.endswith(" 401"))


def test_add_names_only_sendgrid_keys_and_remove_finishes_a_half_done_removal(
    admin: Admin,
) -> None:
    before = refused_tokens(admin)
    flags = ("--segment", "cli-steal", "--list-name", "CLI steal", "--consent-by", "ops")
    unset = error_line(
        admin.run(
            "destinations", "add", "cli-steal", "--api-key-secret", "SENDGRID_KEY_NOPE", *flags
        ),
        2,
        "api_key_secret: no SendGrid key is available under the name 'SENDGRID_KEY_NOPE'",
    )
    for name in ("AzureWebJobsStorage", "PATH"):
        line = error_line(
            admin.run("destinations", "add", "cli-steal", "--api-key-secret", name, *flags), 2
        )
        assert line == unset.replace("'SENDGRID_KEY_NOPE'", repr(name))
    assert refused_tokens(admin) == before  # nothing but the key went to SendGrid

    admin.drop("cli-half", "001.csv", people(5))
    assert add(admin, "cli-half", "--list-name", "CLI half", "--consent-by", "ops").returncode == 0
    admin.ok("export", "--destination", "cli-half", "--wait")
    assert list(admin.storage.app.list_blobs(name_starts_with="state/cli-half/"))
    # A removal that stopped after its first step: the document is gone, the rest is left.
    admin.storage.app.delete_blob("destinations/cli-half.json")
    out = admin.ok("destinations", "remove", "cli-half", "--yes")
    assert "removed (its document was gone already)" in out, out
    assert not list(admin.storage.app.list_blobs(name_starts_with="state/cli-half/"))
    error_line(admin.run("destinations", "remove", "cli-never", "--yes"), 2, "no destination")
