"""Removals under faults: 50,000 members leave a mirror-mode list while SendGrid misbehaves.

Starts the local stack, exports a segment of 60,000 profiles to a mirror-mode destination, then
turns on the sandbox's fault mix (8% 429s, 8% 5xx, 4% dropped connections, 4% lost answers: the
request took effect, the answer never came) and exports the segment's first 10,000 profiles: the
other 50,000 must come off the list. Prints the run's outcome, its wall time, every SendGrid
request it took by kind and answer (from the sandbox's counters), and whether the list, read
back through the sandbox, holds exactly the 10,000. The sandbox's own rate limit (600 requests a
minute per key, as SendGrid's are per endpoint) stays on.

    python bench/removals.py [--members 60000] [--stay 10000] [--seed 11] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "SG.bench-removals-key"
FAULTS = {"throttle_rate": 0.08, "error_rate": 0.08, "drop_rate": 0.04, "lose_rate": 0.04}
KINDS = {
    "search": "POST /v3/marketing/contacts/search/emails",
    "remove": "DELETE /v3/marketing/lists/{id}/contacts",
    "upsert": "PUT /v3/marketing/contacts",
    "job check": "GET /v3/marketing/contacts/imports/{id}",
    "list": "GET /v3/marketing/lists/{id}",
    "export": "POST /v3/marketing/contacts/exports",
    "export check": "GET /v3/marketing/contacts/exports/{id}",
    "export file": "GET /__sandbox/export-files/{id}/{n}",
}


def control(sandbox: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{sandbox}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def by_kind(before: dict[str, int], after: dict[str, int]) -> dict[str, Counter[str]]:
    """{"search": {"200": 480, "429": 41, "500": 39, "dropped": 18, "lost": 20}, ...}."""
    out: dict[str, Counter[str]] = {}
    for key, count in after.items():
        delta = count - before.get(key, 0)
        if not delta:
            continue
        endpoint, _, answer = key.rpartition(" ")
        kind = next((k for k, p in KINDS.items() if endpoint == p), endpoint)
        out.setdefault(kind, Counter())[answer] += delta
    return out


def segment(folder: Path, name: str, count: int) -> Path:
    path = folder / name
    rows = ["Email,FirstName"] + [f"member{i:06d}@example.com,Name{i}" for i in range(count)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=60_000)
    parser.add_argument("--stay", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from exporter.adapters.azure_storage import Storage
    from exporter.admin.destinations import add_destination
    from exporter.admin.operations import follow, upload_snapshot
    from exporter.local.stack import Stack
    from exporter.wiring import services_from_env

    leaving = args.members - args.stay
    with tempfile.TemporaryDirectory(prefix="bench-removals-") as tmp:
        folder = Path(tmp)
        with Stack(
            folder / "stack",
            settings={"SENDGRID_KEY_BENCH": KEY},
            sandbox_args=["--seed", str(args.seed)],
        ) as stack:
            svc = services_from_env(stack.settings)
            storage = Storage.from_env(stack.settings)
            saved = add_destination(
                svc,
                "bench",
                list_name="bench removals",
                api_key_secret="SENDGRID_KEY_BENCH",
                segments=["bench"],
                consent_by="bench",
                sync_mode="mirror",
                max_removal_share=1.0,
            )
            list_id = saved.destination.list_id
            everyone = segment(folder, "all.csv", args.members)
            (first,) = follow(
                svc,
                upload_snapshot(storage, everyone, "bench"),
                1,
                timeout=1800,
                on_progress=lambda _: None,
            )
            assert first.state == "succeeded", first.error
            time.sleep(1.1)  # blob times have one-second resolution: the next one is newer
            control(stack.sandbox_url, "/__sandbox/faults", FAULTS)
            before = control(stack.sandbox_url, "/__sandbox/requests")
            started = time.perf_counter()
            fewer = segment(folder, "fewer.csv", args.stay)
            (run,) = follow(
                svc,
                upload_snapshot(storage, fewer, "bench"),
                1,
                timeout=3600,
                on_progress=lambda _: None,
                poll=1.0,
            )
            seconds = time.perf_counter() - started
            after = control(stack.sandbox_url, "/__sandbox/requests")
            control(stack.sandbox_url, "/__sandbox/faults", dict.fromkeys(FAULTS, 0))
            members = control(stack.sandbox_url, f"/__sandbox/lists/{list_id}/contacts")
            batches = svc.ledger.batches(run.run_id)
    expected = {f"member{i:06d}@example.com" for i in range(args.stay)}
    held = {m["email"] for m in members}
    exact = held == expected and all(
        m.get("first_name") == f"Name{int(m['email'][6:12])}" for m in members
    )
    requests = by_kind(before, after)
    removal_batches = [b for b in batches if b.kind == "remove"]
    print(
        f"{args.members:,} members, {leaving:,} leave, faults {FAULTS} "
        f"(sandbox seed {args.seed}; its rate limit: 600 requests a minute)"
    )
    print(
        f"  run {run.state} in {seconds:.1f} s: removed {run.removed:,} of {run.leavers:,} "
        f"leavers in {len(removal_batches)} removal batches "
        f"({sum(b.state == 'failed' for b in removal_batches)} failed); "
        f"verified {run.verified} after {run.looks} looks, {run.heals} heals"
    )
    for kind, answers in sorted(requests.items()):
        total = sum(answers.values())
        detail = ", ".join(f"{answer} {n:,}" for answer, n in sorted(answers.items()))
        print(f"  {kind:<13} {total:>6,} requests: {detail}")
    print(
        f"  the list holds {len(held):,} contacts: "
        + ("exactly the 10,000 who stayed, fields included" if exact else "NOT the segment")
    )
    if args.json:
        print(
            json.dumps(
                {
                    "members": args.members,
                    "leaving": leaving,
                    "seconds": round(seconds, 1),
                    "state": run.state,
                    "removed": run.removed,
                    "verified": run.verified,
                    "requests": {k: dict(v) for k, v in requests.items()},
                    "exact": exact,
                }
            )
        )
    return 0 if exact and run.state == "succeeded" and run.removed == leaving else 1


if __name__ == "__main__":
    raise SystemExit(main())
