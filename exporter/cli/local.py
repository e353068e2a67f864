"""`exporter up`, `demo` and `sandbox`: start the local tooling (Azurite, the SendGrid sandbox,
the Functions host). Developer commands, never part of the function app: the only module of the
CLI that imports `exporter.local`, on demand."""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import time
from typing import Any

from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.admin.destinations import add_destination
from exporter.admin.operations import follow, upload_snapshot
from exporter.admin.views import summary
from exporter.cli.check import render, run_check
from exporter.cli.connect import connect_to
from exporter.cli.progress import printer
from exporter.core.mapping import FieldMapping
from exporter.core.samples import generate


def sandbox(argv: list[str]) -> int:
    """The local SendGrid sandbox, with the same flags as `python -m exporter.local.sandbox`."""
    # Imported here: openapi-core is slow to import and only the sandbox needs it.
    from exporter.local.sandbox.server import main as sandbox_main  # noqa: PLC0415

    return sandbox_main(argv)


def demo_offline(args: argparse.Namespace) -> int:
    args.dir.mkdir(parents=True, exist_ok=True)
    segment = args.dir / "segment.csv"
    rejects = args.dir / "rejects.csv"
    sample = generate(segment, rows=args.rows, seed=7, blank_rate=0.001)
    print(
        f"generated {segment}: {sample.rows:,} profiles, {sample.invalid:,} invalid emails, "
        f"{sample.duplicates:,} duplicates"
    )
    summary = run_check(segment, FieldMapping(), None, rejects)
    print(render(summary, rejects))
    print("(offline dry run: nothing was sent; exporting to SendGrid comes with the function app)")
    planted = (sample.valid, sample.invalid, sample.duplicates, sample.blank)
    found = (summary["valid"], summary["rejected"], summary["duplicates"], summary["blank"])
    if found != planted:
        print(f"error: the generator planted {planted}, the check found {found}", file=sys.stderr)
        return 1
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C does, so every child is stopped on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def up(args: argparse.Namespace) -> int:
    from exporter.local.stack import Stack  # noqa: PLC0415  # local tooling, loaded on demand

    _stop_on_sigterm()
    stack = Stack.for_up(args.data.resolve(), echo=not args.quiet)
    taken = stack.ports_in_use()
    if taken:
        ports = ", ".join(f"{port} ({part})" for part, port in taken)
        print(
            f"error: port {ports} in use: is another `exporter up` running? Stop it first "
            f"(nothing was started{', nothing deleted' if args.fresh else ''})",
            file=sys.stderr,
        )
        return 1
    if args.fresh:
        deleted = stack.reset_data()
        gone = ", ".join(str(p) for p in deleted) or "nothing was there"
        print(f"--fresh: Azurite's data and the sandbox's state deleted ({gone})")
    try:
        with stack:
            print("local stack is up (Ctrl-C stops it):")
            for line in up_banner(stack):
                print(line)
            print("drop a snapshot with: python -m exporter export FILE --segment NAME --wait")
            sys.stdout.flush()
            while stack.host is not None and stack.host.alive():
                if stack.sandbox is not None and not stack.sandbox.alive():
                    print("error: the SendGrid sandbox stopped", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            print("error: the Functions host stopped", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0


def up_banner(stack: Any) -> list[str]:
    """What `up` started and where it keeps what, the API keys the sandbox accepts (names)."""
    state = stack.sandbox_state()
    lists, contacts = len(state.get("lists") or []), int(state.get("contacts") or 0)
    names = list(state.get("api_key_names") or [])
    settings = stack.settings_file
    if names:
        accepts = f"accepts the API keys of {settings.name}: {', '.join(names)}"
    elif settings.is_file():
        accepts = f"accepts no API key yet: add SENDGRID_KEY_<NAME> to {settings}"
    else:
        accepts = f"accepts no API key: {settings} is missing (copy local.settings.example.json)"
    kept = stack.sandbox_state_file
    azurite = stack.azurite
    ports = f"{azurite.blob_port}-{azurite.table_port}"
    storage = "UseDevelopmentStorage=true" if stack.fixed_ports else "a connection string"
    return [
        f"  storage  Azurite, {storage} (ports {ports}), data in {stack.azurite_dir}",
        f"  SendGrid sandbox at {stack.sandbox_url}, {accepts}; state in {kept} "
        f"({lists} lists, {contacts:,} contacts; `up --fresh` starts both empty)",
        f"  Functions host, HTTP on {stack.host_url}/api",
        f"  web console at {stack.host_url}/api/console/ (sign in with LOCAL_FUNCTION_KEY "
        f"of {settings.name})",
        f"  {settings.name} is followed: SENDGRID_KEY_* and AzureWebJobs.<function>.Disabled "
        f"apply at once, other changes say to restart",
    ]


def demo(args: argparse.Namespace) -> int:
    from exporter.local.stack import Stack  # noqa: PLC0415  # local tooling, loaded on demand

    _stop_on_sigterm()
    root = args.dir.resolve()
    shutil.rmtree(root / "stack", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    key = "SG.demo-" + secrets.token_hex(8)  # the sandbox takes any key; none is real here
    print("starting Azurite, the SendGrid sandbox and the Functions host ...", flush=True)
    try:
        with Stack(root / "stack", settings={"SENDGRID_KEY_DEMO": key}) as stack:
            return _demo_run(args, stack, key)
    except KeyboardInterrupt:
        print("interrupted: everything the demo started was stopped", file=sys.stderr)
        return 130


def _demo_run(args: argparse.Namespace, stack: Any, key: str) -> int:
    client = SendGridClient(key, SendGridSettings(base_url=stack.sandbox_url))
    storage, svc = connect_to(stack.settings)
    saved = add_destination(
        svc,
        "demo",
        display_name="Demo: loyal customers",
        list_name="Demo: loyal customers",
        api_key_secret="SENDGRID_KEY_DEMO",
        segments=["loyal-customers"],
        consent_by="make demo",
    )
    list_id = saved.destination.list_id
    print(f"sandbox list {list_id!r} and destination 'demo' (consent recorded)")
    segment = args.dir.resolve() / "loyal-customers.csv"
    sample = generate(segment, rows=args.rows, seed=7, blank_rate=0.001)
    print(
        f"generated {segment.name}: {sample.rows:,} profiles ({sample.invalid:,} invalid emails, "
        f"{sample.duplicates:,} duplicates, {sample.blank:,} blank rows)"
    )
    started = time.monotonic()
    version = upload_snapshot(storage, segment, "loyal-customers")
    print(f"dropped it into segments/{version.name}; following the run ...", flush=True)
    (run,) = follow(svc, version, 1, timeout=600, on_progress=printer())
    elapsed = time.monotonic() - started
    print(summary(run, svc.ledger.batches(run.run_id)))
    count = client.list_count(list_id)
    print(f"the sandbox's list holds {count:,} contacts; the run sent {run.valid:,} valid ones")
    verified = "read back and found equal" if run.verified else "not read back"
    print(f"from drop to the end of the run (the list {verified}): {elapsed:.1f} s")
    if count != run.valid or run.valid != sample.valid:
        print("error: the list does not hold exactly the valid contacts", file=sys.stderr)
        return 1
    return 0 if run.state == "succeeded" else 1
