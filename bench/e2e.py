"""End-to-end benchmark: a segment from blob drop to every SendGrid import job completed.

Starts the local stack (Azurite, the SendGrid sandbox, the Functions host), then measures in
the same run:
- pipeline: upload the snapshot into `segments/`, and wait until every import job of its run
  is confirmed (blob trigger -> planner -> batch blobs -> workers -> import jobs), then until
  the run has read the list back and found it equal (verified: the segment is under 100,000);
- baseline: one script that reads the same file (with the same planner, so the batches are the
  same), PUTs each batch straight to the sandbox one after the other, then polls the jobs.
Both talk to the same sandbox, which validates every request against SendGrid's spec (that is
most of the time). Prints both, the ratio, and the request counts.

    python bench/e2e.py [--rows 100000] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
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

from plan import machine, parse_size, sample  # noqa: E402

KEY = "SG.bench-sandbox-key"


def requests_to(sandbox: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{sandbox}/__sandbox/requests", timeout=30) as answer:
        counts: dict[str, int] = json.load(answer)
    return counts


def upserts(counts: dict[str, int]) -> int:
    return sum(n for k, n in counts.items() if k.startswith("PUT /v3/marketing/contacts 202"))


def pipeline(stack: Any, path: Path, segment: str) -> dict[str, Any]:
    from exporter.adapters.azure_storage import Storage
    from exporter.adapters.sendgrid import SendGridClient
    from exporter.adapters.settings import SendGridSettings
    from exporter.admin.destinations import add_destination
    from exporter.admin.operations import follow, upload_snapshot
    from exporter.wiring import services_from_env

    client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
    storage = Storage.from_env(stack.settings)
    svc = services_from_env(stack.settings)
    list_id = add_destination(
        svc,
        "bench",
        list_name="bench pipeline",
        api_key_secret="SENDGRID_KEY_BENCH",
        segments=[segment],
        consent_by="bench",
    ).destination.list_id
    before = upserts(requests_to(stack.sandbox_url))
    start = time.perf_counter()
    confirmed: list[float] = []

    def watch(states: dict[str, Any]) -> None:  # the first poll that sees every job confirmed
        done = [p for p in states.values() if p.planned and p.confirmed == p.planned]
        if done and not confirmed:
            confirmed.append(time.perf_counter() - start)

    version = upload_snapshot(storage, path, segment)
    (run,) = follow(svc, version, 1, timeout=1800, on_progress=watch, poll=0.1)
    seconds = time.perf_counter() - start
    return {
        "seconds": confirmed[0] if confirmed else seconds,
        "verified_seconds": seconds,
        "verified": run.verified,
        "state": run.state,
        "valid": run.valid,
        "batches": run.batches,
        "upsert_requests": upserts(requests_to(stack.sandbox_url)) - before,
        "created_or_updated": run.created + run.updated,
        "list_count": client.list_count(list_id),
    }


def baseline(stack: Any, path: Path) -> dict[str, Any]:
    from exporter.adapters.sendgrid import SendGridClient
    from exporter.adapters.settings import SendGridSettings
    from exporter.core.planning import plan_file

    client = SendGridClient(KEY, SendGridSettings(base_url=stack.sandbox_url))
    contact_list = client.create_list("bench baseline")
    start = time.perf_counter()
    jobs: list[str] = []

    def put(batch: Any) -> None:
        jobs.append(client.upsert([contact_list.id], batch.contacts_json()))

    stats = plan_file(path, on_batch=put)
    pending = set(jobs)
    while pending:
        pending = {j for j in pending if not client.import_status(j).settled}
        if pending:
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "valid": stats.valid,
        "batches": stats.batches,
        "upsert_requests": len(jobs),
        "list_count": client.list_count(contact_list.id),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=parse_size, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from exporter.local.stack import Stack

    path, planted = sample(args.rows, args.seed)
    info = machine()
    print(
        f"python {info['python']}, {info['cpus']} CPUs, {info['platform']}; "
        f"{args.rows:,} profiles (seed {args.seed})"
    )
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        stack = Stack(Path(tmp), settings={"SENDGRID_KEY_BENCH": KEY})
        with stack:
            direct = baseline(stack, path)
            piped = pipeline(stack, path, "bench-segment")
    ratio = piped["seconds"] / direct["seconds"]
    print(
        f"  baseline (read + PUT each batch + poll jobs): {direct['seconds']:6.2f} s, "
        f"{direct['upsert_requests']} upserts, list holds {direct['list_count']:,}"
    )
    print(
        f"  pipeline (blob drop -> every job confirmed):  {piped['seconds']:6.2f} s, "
        f"{piped['upsert_requests']} upserts, list holds {piped['list_count']:,}, "
        f"run {piped['state']}"
    )
    print(
        f"  ... and the list read back and found equal: {piped['verified_seconds']:6.2f} s "
        f"(verified {piped['verified']})"
    )
    print(
        f"  pipeline / baseline: {ratio:.2f}x; "
        f"{args.rows / piped['seconds']:,.0f} profiles/s end to end"
    )
    ok = (
        piped["state"] == "succeeded"
        and piped["verified"]
        and piped["list_count"] == piped["valid"] == direct["list_count"]
        and (planted is None or piped["valid"] == planted["valid"])
    )
    if args.json:
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "baseline": direct,
                    "pipeline": piped,
                    "ratio": ratio,
                    "machine": info,
                }
            )
        )
    if not ok:
        print("error: the list does not hold exactly the valid contacts", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
