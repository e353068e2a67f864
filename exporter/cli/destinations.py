"""`exporter destinations`: add, update, list, show, test and remove destinations."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from exporter.admin.connection import check_connection
from exporter.admin.destinations import (
    destination_json,
    get_destination,
    list_destinations,
    save_destination,
)
from exporter.admin.errors import RemovalIncomplete
from exporter.admin.removal import remove_destination
from exporter.admin.requests import MAX_BODY_BYTES, DestinationRequest, check_size, parse
from exporter.cli.connect import connect
from exporter.cli.exit_codes import EXIT_FAILED
from exporter.core.errors import InputError
from exporter.flow.services import Services
from exporter.model.notifications import parse_target_spec

NO_DESTINATIONS = (
    "no destinations yet (add one with: exporter destinations add NAME --list-name LIST "
    "--api-key-secret SENDGRID_KEY_NAME --segment SEGMENT --consent-by WHO)"
)


def command(args: argparse.Namespace) -> int:
    _, svc = connect(args.settings)
    action = args.destinations_command
    if action in ("add", "update"):
        return _save(svc, args)
    if action == "list":
        found = list_destinations(svc)
        if args.json:
            print(json.dumps([destination_json(d) for d in found]))
            return 0
        if not found:
            print(NO_DESTINATIONS)
            return 0
        print(f"{'NAME':<24} {'LIST ID':<36}  {'MODE':<6} {'SEGMENTS':<30} CONSENT")
        for d in found:
            consent = "consent recorded" if d.consent else "NO CONSENT: exports fail"
            print(
                f"{d.name:<24} {d.list_id:<36}  {d.sync_mode:<6} {','.join(d.segments):<30} "
                f"{consent}"
            )
        return 0
    if action == "show":
        print(json.dumps(destination_json(get_destination(svc, args.name)), indent=2))
        return 0
    if action == "test":
        report = check_connection(svc, get_destination(svc, args.name))
        if args.json:
            print(json.dumps(report.as_json()))
        else:
            for check in report.checks:
                print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<14} {check.detail}")
        return 0 if report.ok else EXIT_FAILED
    return _remove(svc, args)


def _save(svc: Services, args: argparse.Namespace) -> int:
    document: dict[str, Any] = {}
    if args.destinations_command == "update":
        document = destination_json(get_destination(svc, args.name))
        del document["consent"]  # kept as recorded, unless given again
    if args.file is not None:
        given = _read_document(args.file)
        if "list_name" in given:
            document.pop("list_id", None)
        document |= given
    flags = {
        "display_name": args.display_name,
        "api_key_secret": args.api_key_secret,
        "segments": args.segment,
        "sync_mode": args.sync_mode,
        "profile_cap": args.profile_cap,
        "max_removal_share": args.max_removal_share,
        "full_refresh_every": args.full_refresh_every,
        "verify_up_to": args.verify_up_to,
        "verify_every": args.verify_every,
        "create_missing_fields": args.create_missing_fields,
    }
    document |= {k: v for k, v in flags.items() if v is not None}
    if args.list_id or args.list_name:
        document.pop("list_id", None)
        document.pop("list_name", None)
        document |= {"list_id": args.list_id} if args.list_id else {"list_name": args.list_name}
    if args.map:
        mapping = dict(document.get("mapping") or {})
        for item in args.map:
            field, sep, column = item.partition("=")
            if not sep or not field.strip():
                raise InputError(f"--map {item!r}: expected FIELD=COLUMN")
            mapping[field.strip()] = column.strip()
        document["mapping"] = mapping
    if args.notify or args.no_notify:
        document["notifications"] = _targets(document.get("notifications"), args)
    if args.consent_by:
        document["consent"] = {"accepted_by": args.consent_by, "accepted_at": args.consent_at}
    elif args.consent_at:
        raise InputError("--consent-at goes with --consent-by")
    if args.destinations_command == "add":
        document.setdefault("display_name", args.name)
    document["name"] = args.name
    mode: Literal["create", "update"] = "create" if args.destinations_command == "add" else "update"
    saved = save_destination(svc, parse(DestinationRequest, document), mode=mode)
    d = saved.destination
    if args.json:
        print(json.dumps(destination_json(d)))
        return 0
    verb = "added" if saved.created else "updated"
    made = " (created in SendGrid)" if saved.list_created else ""
    print(
        f"destination {d.name!r} {verb}: list {d.list_id}{made}, segments {', '.join(d.segments)}"
    )
    if saved.fields_created:
        made = ", ".join(f"{n} ({t})" for n, t in saved.fields_created.items())
        print(f"  custom fields created in SendGrid: {made}")
    print(f"  key from {d.api_key_secret!r}; test it with: exporter destinations test {d.name}")
    for t in d.notifications:
        print(f"  notifies {t.name} ({t.kind}, URL from {t.url_secret!r}): {', '.join(t.events)}")
    return 0


def _targets(given: object, args: argparse.Namespace) -> list[Any]:
    """The notification targets, `--no-notify` dropped and `--notify` replacing by name."""
    targets = [t for t in given if isinstance(t, dict)] if isinstance(given, list) else []
    targets = [t for t in targets if t.get("name") not in set(args.no_notify)]
    for spec in args.notify:
        target = parse_target_spec(spec)
        targets = [t for t in targets if t.get("name") != target["name"]] + [target]
    return targets


def _read_document(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        data = file.read(MAX_BODY_BYTES + 1)
    check_size(len(data), f"{path}")
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InputError(f"{path} must hold one JSON object (a destination)")
    return document


def _remove(svc: Services, args: argparse.Namespace) -> int:
    # By name, not by its document: a removal that stopped half way (the document gone) is
    # finished by the same command again.
    name = args.name
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError(
                f"removing {name!r} stops its exports and deletes its synced "
                "state: pass --yes to confirm"
            )
        answer = input(f"remove destination {name!r}? type its name to confirm: ")
        if answer.strip() != name:
            print("not removed", file=sys.stderr)
            return EXIT_FAILED
    try:
        removal = remove_destination(svc, name)
    except RemovalIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    done = "removed" if removal.document_deleted else "removed (its document was gone already)"
    print(
        f"destination {removal.destination!r} {done}: {len(removal.stopped_runs)} unfinished "
        f"run(s) stopped, {removal.state_blobs_deleted} synced-state blob(s) and "
        f"{removal.run_blobs_deleted} batch blob(s) deleted; its run history stays"
    )
    for run_id in removal.stopped_runs:
        print(f"  stopped run {run_id}")
    return 0
