"""The argument parser of `python -m exporter`: every command, its actions and flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from exporter.model.runs import RunState


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exporter", description="Keep SendGrid contact lists in step with customer segments."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="dry-run a snapshot offline: counts valid, rejected, duplicates, batches",
        description="Read a snapshot as an export would, send nothing, and report what it found.",
    )
    check.add_argument("file", type=Path, metavar="FILE", help=".csv or .jsonl, optionally .gz")
    check.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="map a column to a SendGrid field (email, first_name, ..., or custom:NAME[:TYPE], "
        "TYPE Text, Number or Date); repeatable; an empty COLUMN leaves the field unmapped",
    )
    check.add_argument("--format", choices=("csv", "jsonl"), help="override the file name's format")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--rejects", type=Path, metavar="PATH", help="write the reject report (CSV)")
    check.add_argument(
        "--destination",
        metavar="NAME",
        help="use that destination's mapping (read from storage; --map adds to it)",
    )
    _settings_flag(check)

    export = commands.add_parser(
        "export",
        help="upload a snapshot (FILE --segment NAME), or export stored ones (--destination NAME)",
        description="FILE --segment NAME reads FILE whole as an export will (nothing is uploaded "
        "when it cannot be read, or when no destination selects the segment, unless --force), "
        "then uploads it into segments/<NAME>/, which exports it to every destination selecting "
        "the segment. --destination NAME exports to that destination now: the latest snapshot of "
        "each segment it selects, or --snapshot.",
    )
    export.add_argument("file", type=Path, metavar="FILE", nargs="?")
    export.add_argument("--segment", help="the segment (folder) FILE belongs to")
    export.add_argument("--destination", metavar="NAME", help="export to this destination now")
    export.add_argument(
        "--snapshot", metavar="BLOB", help="with --destination: <segment>/<file> in segments/"
    )
    export.add_argument(
        "--full-refresh", action="store_true", help="send every contact, changed or not"
    )
    export.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="mirror mode: allow removing more than the destination's max_removal_share",
    )
    export.add_argument(
        "--verify",
        action="store_true",
        help="read the list back from SendGrid after the run and heal what differs, whatever "
        "the destination's verify cadence says",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="with FILE: upload even when no destination selects the segment (yet)",
    )
    export.add_argument("--wait", action="store_true", help="follow the runs until they end")
    export.add_argument("--timeout", type=float, default=1800, help="seconds to wait (--wait)")
    export.add_argument(
        "--json", action="store_true", help="print one JSON object: the snapshot and the run ids"
    )
    _settings_flag(export)

    _destinations_parser(commands)

    runs = commands.add_parser("runs", help="list runs, show one, or follow runs to their end")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    listing = runs_commands.add_parser("list", help="the newest runs first")
    listing.add_argument("--destination")
    listing.add_argument(
        "--state",
        metavar="STATE",
        help="only runs in this state: " + ", ".join(get_args(RunState)),
    )
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    _settings_flag(listing)
    show = runs_commands.add_parser(
        "show", help="one run: counts, reject reasons with samples, SendGrid's job errors"
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--rejects", type=Path, metavar="PATH", help="download the full reject report (CSV)"
    )
    _settings_flag(show)
    follow_runs = runs_commands.add_parser(
        "follow",
        help="show runs' progress (read, planned, sent, confirmed) until they end; no RUN_ID: "
        "every active run",
    )
    follow_runs.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    follow_runs.add_argument("--timeout", type=float, default=1800, help="seconds to wait")
    _settings_flag(follow_runs)

    _snapshots_parser(commands)

    sandbox = commands.add_parser(
        "sandbox",
        help="run the local SendGrid sandbox (same flags as python -m exporter.local.sandbox)",
        add_help=False,
    )
    sandbox.add_argument("args", nargs=argparse.REMAINDER)

    up = commands.add_parser(
        "up", help="run Azurite, the SendGrid sandbox and the Functions host until Ctrl-C"
    )
    up.add_argument(
        "--data",
        type=Path,
        default=Path(".azurite"),
        help="where Azurite's data and the sandbox's state are kept (default .azurite)",
    )
    up.add_argument("--quiet", action="store_true", help="do not echo the parts' logs")
    up.add_argument(
        "--fresh",
        action="store_true",
        help="start empty: delete Azurite's data and the sandbox's state (kept in --data) first",
    )

    demo = commands.add_parser(
        "demo",
        help="start the local stack, export a generated 50k-profile segment, show the result",
    )
    demo.add_argument("--rows", type=int, default=50_000)
    demo.add_argument("--dir", type=Path, default=Path(".demo"))
    demo.add_argument(
        "--offline", action="store_true", help="only check the generated file (no stack)"
    )
    return parser


def _destinations_parser(commands: Any) -> None:
    parser = commands.add_parser("destinations", help="add, update, list, show, test, remove")
    actions = parser.add_subparsers(dest="destinations_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="a new destination, checked against SendGrid; needs --consent-by",
        description="Checks the key and the list (a --list-name is found, or created) before "
        "saving. The data-privacy consent is required: --consent-by names who accepted the "
        "terms (recorded with the time now, or --consent-at).",
    )
    update = actions.add_parser(
        "update",
        help="change a destination (flags given replace those fields; --map merges)",
    )
    for action in (add, update):
        action.add_argument("name", metavar="NAME", help="lower-case letters, digits and dashes")
        action.add_argument("--display-name")
        target = action.add_mutually_exclusive_group()
        target.add_argument("--list-id", help="the SendGrid list id")
        target.add_argument("--list-name", help="a SendGrid list name: found, or created")
        action.add_argument(
            "--api-key-secret",
            metavar="SETTING",
            help="the app setting (or Key Vault secret) that holds the API key, named "
            "SENDGRID_KEY_<NAME> (Key Vault: SENDGRID-KEY-<NAME>); never the key itself",
        )
        action.add_argument(
            "--segment", action="append", metavar="NAME", help="a segment it exports; repeatable"
        )
        action.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="FIELD=COLUMN",
            help="SendGrid field (email, first_name, ..., or custom:NAME[:TYPE], TYPE Text, "
            "Number or Date) from a column; repeatable",
        )
        action.add_argument("--sync-mode", choices=("upsert", "mirror"))
        action.add_argument("--profile-cap", type=int)
        action.add_argument("--max-removal-share", type=float)
        action.add_argument(
            "--full-refresh-every",
            type=int,
            metavar="N",
            help="send every contact on every Nth run of a segment (0: never)",
        )
        action.add_argument(
            "--verify-up-to",
            type=int,
            metavar="N",
            help="read the list back after every run of a segment of at most N members",
        )
        action.add_argument(
            "--verify-every",
            type=int,
            metavar="N",
            help="larger segments: read the list back every Nth run (0: only when asked)",
        )
        action.add_argument(
            "--create-missing-fields",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="create custom fields the mapping names that SendGrid lacks",
        )
        action.add_argument(
            "--notify",
            action="append",
            default=[],
            metavar="NAME=KIND[:EVENTS[:URL_SECRET[:SIGNING_SECRET]]]",
            help="tell a target about runs (replaces a target of that NAME): KIND webhook, slack "
            "or teams; EVENTS comma-separated of run_failed, list_drift, rejects_above[=SHARE], "
            "list_ready (default: all); the URL from the secret NOTIFY_URL_<NAME>, a webhook's "
            "signing secret from NOTIFY_SIGNING_<NAME> unless named; repeatable",
        )
        action.add_argument(
            "--no-notify", action="append", default=[], metavar="NAME", help="drop a target"
        )
        action.add_argument("--consent-by", metavar="WHO", help="who accepted the privacy terms")
        action.add_argument(
            "--consent-at", metavar="TIME", help="when (ISO 8601 with zone; default: now)"
        )
        action.add_argument(
            "--file", type=Path, metavar="JSON", help="a destination document; flags win over it"
        )
        action.add_argument("--json", action="store_true", help="print the saved document")
        _settings_flag(action)
    listing = actions.add_parser("list", help="every destination")
    listing.add_argument("--json", action="store_true")
    _settings_flag(listing)
    show = actions.add_parser("show", help="one destination's document (its key's reference only)")
    show.add_argument("name", metavar="NAME")
    _settings_flag(show)
    test = actions.add_parser("test", help="is the key valid, the list there, each field known?")
    test.add_argument("name", metavar="NAME")
    test.add_argument("--json", action="store_true")
    _settings_flag(test)
    remove = actions.add_parser(
        "remove",
        help="stop every export to it now and delete its synced state (run history stays)",
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _settings_flag(remove)


def _snapshots_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "snapshots", help="list the snapshots in segments/, show one, remove one"
    )
    actions = parser.add_subparsers(dest="snapshots_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="by segment, the newest first")
    listing.add_argument("--segment", metavar="NAME", help="only this segment's snapshots")
    listing.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    listing.add_argument("--json", action="store_true")
    _settings_flag(listing)
    show = actions.add_parser(
        "show", help="one snapshot: size, ETag, time, format (its head read), the runs of it"
    )
    show.add_argument("name", metavar="NAME", help="<segment>/<file>, as listed")
    show.add_argument("--json", action="store_true")
    _settings_flag(show)
    remove = actions.add_parser(
        "remove",
        help="delete a snapshot file (its runs not started yet are skipped; the segment's "
        "newest snapshot is then the one before)",
    )
    remove.add_argument("name", metavar="NAME", help="<segment>/<file>, as listed")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _settings_flag(remove)


def _settings_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        type=Path,
        default=Path("local.settings.json"),
        help="app settings file (its Values; the environment wins)",
    )
