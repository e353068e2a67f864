"""The demo and the benchmark script still run end to end (small sizes; no timing asserted)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_demo_checks_a_generated_segment_and_agrees_with_what_was_planted(tmp_path: Path) -> None:
    done = run("-m", "exporter", "demo", "--offline", "--rows", "3000", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "rows read" in done.stdout
    assert "       3,000" in done.stdout
    assert (tmp_path / "segment.csv").exists()
    with (tmp_path / "rejects.csv").open() as report:
        assert report.readline().strip() == "row,line,reason,message,partition"
    report_text = (tmp_path / "rejects.csv").read_text()
    with (tmp_path / "segment.csv").open(newline="") as segment:
        emails = {row["PrimaryEmail"].strip() for row in csv.DictReader(segment)}
    assert len(report_text.splitlines()) > 1  # the demo segment has invalid emails
    assert not [e for e in emails if e and e in report_text]


def test_plan_benchmark_runs_and_its_counts_match_the_generator() -> None:
    done = run("bench/plan.py", "--sizes", "3000", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    generated, planned = result["generated"], result["plan"]["counts"]
    assert result["rows"] == result["plan"]["rows"] == result["baseline"]["rows"] == 3000
    assert (planned["valid"], planned["rejected"], planned["duplicates"]) == (
        generated["valid"],
        generated["invalid"],
        generated["duplicates"],
    )
    assert result["plan"]["peak_rss_mb"] > 0 and result["ratio"] > 0


def test_exporter_sandbox_command_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "sandbox", "--port", "0", "--seed", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        url = line.split(" on ", 1)[1].strip()
        with urllib.request.urlopen(f"{url}/__sandbox/state", timeout=5) as answer:
            assert json.load(answer)["contacts"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
