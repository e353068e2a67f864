"""End to end: the timer re-exports through the host, and `exporter demo` does what it says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from exporter.adapters.azure_storage import Storage
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.operations import upload_snapshot
from exporter.core.samples import generate
from exporter.local.stack import REPO_ROOT, Stack
from exporter.model.destinations import Consent, Destination
from exporter.wiring import services_from_env

pytestmark = pytest.mark.e2e
KEY = "SG.e2e-timer-key"


def test_the_timer_re_exports_the_latest_snapshot(tmp_path: Path) -> None:
    settings = {"SENDGRID_KEY_T": KEY, "REFRESH_SCHEDULE": "*/4 * * * * *"}  # every 4 s
    with Stack(tmp_path / "stack", settings=settings, sandbox_args=["--job-delay", "0.1"]) as stack:
        svc = services_from_env(stack.settings)
        client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
        list_id = client.create_list("timer").id
        # Named by time, as exports are: two uploads in one second are ordered by name.
        generate(tmp_path / "2026-11-23.csv", rows=50, seed=1)
        generate(tmp_path / "2026-11-24.csv", rows=80, seed=2)
        storage = Storage.from_env(stack.settings)
        upload_snapshot(storage, tmp_path / "2026-11-23.csv", "nightly")
        upload_snapshot(storage, tmp_path / "2026-11-24.csv", "nightly")
        hosts = storage.blobs.get_container_client("azure-webjobs-hosts")

        def receipts() -> int:
            try:
                return len([b for b in hosts.list_blobs() if "/nightly/" in b.name])
            except ResourceNotFoundError:  # created with the host's first receipt
                return 0

        deadline = time.monotonic() + 30
        while receipts() < 2:
            assert time.monotonic() < deadline, "the blob trigger did not see the uploads"
            time.sleep(0.2)
        # Both seen while no destination selected the segment: only the timer exports now.
        svc.destinations.put(
            Destination(
                name="nightly",
                display_name="nightly",
                list_id=list_id,
                api_key_secret="SENDGRID_KEY_T",
                segments=["nightly"],
                consent=Consent(accepted_by="ops", accepted_at=datetime.now(UTC)),
            )
        )
        deadline = time.monotonic() + 60
        done: list = []
        while time.monotonic() < deadline:
            runs = [r for r in svc.ledger.runs(limit=100) if r.trigger == "timer"]
            done = [r for r in runs if r.final]
            if len(done) >= 2:
                break
            time.sleep(0.5)
        assert len(done) >= 2, "the timer did not fire twice within a minute"
        assert {r.snapshot for r in done} == {"nightly/2026-11-24.csv"}  # the latest only
        assert all(r.state in ("succeeded", "succeeded_with_errors") for r in done)
        assert len({r.run_id for r in done}) == len(done)
        assert client.list_count(list_id) == done[0].valid


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found | {g for c in found for g in children_of(c)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()


def test_demo_exports_and_reports_the_exact_list_count(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "demo", "--rows", "5000", "--dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(
        r"the sandbox's list holds ([\d,]+) contacts; the run sent ([\d,]+)", done.stdout
    )
    assert found and found.group(1) == found.group(2), done.stdout
    assert "run 2" in done.stdout and "succeeded" in done.stdout
    assert re.search(r"\d+ batches: \d+ confirmed", done.stderr)  # the progress bar


def test_demo_interrupted_stops_everything_it_started(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--rows", "5000", "--dir", str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "sandbox list" in line:  # the stack is up
                break
        started = children_of(demo.pid)
        assert len(started) >= 3  # Azurite, the sandbox, the host
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
        assert not [pid for pid in started if alive(pid)]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
