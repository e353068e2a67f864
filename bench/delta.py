"""Delta benchmark: a refresh costs what changed, not what exists.

Starts the local stack, exports a generated segment (1M profiles by default) to a mirror-mode
destination, then the same segment with 1% of the profiles changed and 0.5% removed, then asks
for that snapshot again with `verify` (the list read back from SendGrid and compared member by
member: what verification costs). Prints, for each run: contacts sent, unchanged, removed,
SendGrid requests by kind (from the sandbox's counters), wall time from request to the run's
end; and the Functions host's peak RSS (it plans the runs and compares the list: the memory of
a 1M-profile run).

    python bench/delta.py [--rows 1000000] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plan import DATA, machine, parse_size, sample  # noqa: E402

KEY = "SG.bench-delta-key"


def changed_copy(source: Path, rows: int, seed: int) -> tuple[Path, int, int]:
    """The same segment with every 100th profile renamed and every 200th (offset 7) gone."""
    target = DATA / f"segment-{rows}-seed{seed}-delta.csv"
    changed = removed = 0
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        first_name = header.index("FirstName")
        with target.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            for i, row in enumerate(reader):
                if i % 200 == 7:
                    removed += 1
                    continue
                if i % 100 == 3:
                    row[first_name] = f"Changed{i}"
                    changed += 1
                writer.writerow(row)
    return target, changed, removed


def counters(sandbox: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{sandbox}/__sandbox/requests", timeout=30) as answer:
        counts: dict[str, int] = json.load(answer)
    kinds = {
        "upsert": "PUT /v3/marketing/contacts ",
        "search": "POST /v3/marketing/contacts/search",
        "remove": "DELETE /v3/marketing/lists/",
        "job": "GET /v3/marketing/contacts/imports/",
        "export": "POST /v3/marketing/contacts/exports ",
        "export_check": "GET /v3/marketing/contacts/exports/",
        "export_file": "GET /__sandbox/export-files/",
    }
    return {k: sum(n for key, n in counts.items() if key.startswith(p)) for k, p in kinds.items()}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def export(
    stack: Any, svc: Any, storage: Any, path: Path | None, segment: str, *, verify_only: str = ""
) -> dict[str, Any]:
    """Upload `path` and follow its run; or (`verify_only`: a snapshot's blob name) export that
    snapshot again on demand with `verify`, and follow that run."""
    from exporter.admin.exports import export_now
    from exporter.admin.operations import follow, follow_runs, upload_snapshot
    from exporter.admin.requests import ExportBody

    before = counters(stack.sandbox_url)
    host = stack.host.pid
    at_start = rss_mb(host)
    peak = [at_start]

    def watch(_: object) -> None:  # the host's RSS, sampled at each progress poll
        peak[0] = max(peak[0], rss_mb(host))

    start = time.perf_counter()
    if verify_only:
        body = ExportBody(snapshot=verify_only, verify=True)
        started = export_now(svc, "bench", body, trigger="cli")
        ids = [r.run_id for r in started.runs]
        (run,) = follow_runs(svc, ids, timeout=3600, on_progress=watch, poll=0.2)
    else:
        assert path is not None
        version = upload_snapshot(storage, path, segment)
        (run,) = follow(svc, version, 1, timeout=3600, on_progress=watch, poll=0.2)
    seconds = time.perf_counter() - start
    after = counters(stack.sandbox_url)
    return {
        "seconds": round(seconds, 2),
        "host_rss_mb": {"start": round(at_start), "peak_sampled": round(peak[0])},
        "state": run.state,
        "valid": run.valid,
        "sent": run.sent,
        "unchanged": run.unchanged,
        "removed": run.removed,
        "list_count": run.list_count,
        "drift": run.drift,
        "verified": run.verified,
        "looks": run.looks,
        "snapshot": run.snapshot,
        "requests": {k: after[k] - before[k] for k in after},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=parse_size, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from exporter.adapters.azure_storage import Storage
    from exporter.admin.destinations import add_destination
    from exporter.local.stack import Stack
    from exporter.wiring import services_from_env

    first, _ = sample(args.rows, args.seed)
    second, changed, removed = changed_copy(first, args.rows, args.seed)
    info = machine()
    print(
        f"python {info['python']}, {info['cpus']} CPUs; {args.rows:,} profiles, then "
        f"{changed:,} changed and {removed:,} removed"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp,
        Stack(Path(tmp), settings={"SENDGRID_KEY_BENCH": KEY}) as stack,
    ):
        svc = services_from_env(stack.settings)
        storage = Storage.from_env(stack.settings)
        add_destination(
            svc,
            "bench",
            list_name="bench delta",
            api_key_secret="SENDGRID_KEY_BENCH",
            segments=["bench"],
            consent_by="bench",
            sync_mode="mirror",
            profile_cap=10 * args.rows,
        )
        runs = [export(stack, svc, storage, path, "bench") for path in (first, second)]
        snapshot = str(runs[1]["snapshot"])
        runs.append(export(stack, svc, storage, None, "bench", verify_only=snapshot))
        assert stack.host is not None
        host_peak = peak_rss_mb(stack.host.pid)
    for label, run in zip(("full", "delta", "verify"), runs, strict=True):
        req = run["requests"]
        count = "unknown" if run["list_count"] is None else f"{run['list_count']:,}"
        drift = "" if run["drift"] is None else f" (drift {run['drift']:+})"
        print(
            f"  {label:<6} {run['seconds']:7.2f} s  {run['state']:<21} valid {run['valid']:>9,}"
            f"  sent {run['sent']:>9,}  unchanged {run['unchanged']:>9,}"
            f"  removed {run['removed']:>6,}  list {count}{drift}"
            f"  verified {run['verified']} ({run['looks']} looks)"
        )
        print(
            f"        requests: {req['upsert']} upserts, {req['search']} searches, "
            f"{req['remove']} removals, {req['job']} job checks, {req['export']} exports, "
            f"{req['export_check']} export checks, {req['export_file']} export files"
        )
        rss = run["host_rss_mb"]
        print(f"        host RSS: {rss['start']} MB before, {rss['peak_sampled']} MB at most")
    print(f"  host peak RSS over both runs: {host_peak:.0f} MB")
    ok = (
        all(r["state"] == "succeeded" and r["drift"] == 0 for r in runs)
        and runs[1]["removed"] > 0
        and runs[2]["verified"]
    )
    if args.json:
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "changed": changed,
                    "removed": removed,
                    "runs": runs,
                    "host_peak_rss_mb": host_peak,
                    "machine": info,
                }
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
