"""What a notification says, in each target's format: a webhook's JSON document, a Slack message
(`text` and Block Kit `blocks`), a Microsoft Teams message (an Adaptive Card).

Built from the run's record when the notification is delivered: ids, counts, states and reasons
(the reasons are masked when recorded); never a contact's data. A webhook's document is the
reference; Slack and Teams show the same facts to people.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from exporter.core.redact import mask_emails
from exporter.model.destinations import Destination
from exporter.model.notifications import NotificationTarget
from exporter.model.runs import RunRecord

MAX_REASON: Final = 1000
"""Characters of a run's reason a notification shows."""

CARD_SCHEMA: Final = "http://adaptivecards.io/schemas/adaptive-card.json"


def reject_share(run: RunRecord) -> float:
    """Rejected rows as a share of the rows read (0 when none was read)."""
    return run.rejected / run.rows if run.rows else 0.0


def render(
    run: RunRecord,
    destination: Destination,
    target: NotificationTarget,
    *,
    event: str,
    delivery: str,
    sent_at: datetime,
) -> bytes:
    """The body to POST (compact UTF-8 JSON) in the target's format."""
    document = webhook_document(
        run, destination, target, event=event, delivery=delivery, sent_at=sent_at
    )
    if target.kind == "slack":
        document = slack_message(document)
    elif target.kind == "teams":
        document = teams_message(document)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def webhook_document(
    run: RunRecord,
    destination: Destination,
    target: NotificationTarget,
    *,
    event: str,
    delivery: str,
    sent_at: datetime,
) -> dict[str, Any]:
    drift = None
    if run.missing is not None:
        drift = {"missing": run.missing, "changed": run.changed, "extra": run.extra}
    document: dict[str, Any] = {
        "event": event,
        "delivery": delivery,
        "run_id": run.run_id,
        "details": f"/api/runs/{run.run_id}",
        "destination": run.destination,
        "destination_name": destination.display_name,
        "segment": run.segment,
        "snapshot": run.snapshot,
        "trigger": run.trigger,
        "list_id": run.list_id,
        "members": run.list_count,
        "members_note": run.list_count_note,
        "expected_members": run.members,
        "verified": run.verified,
        "confirmation": _confirmation(run),
        "verify_note": _short(run.verify_note),
        "state": run.state,
        "error": _short(run.error),
        "counts": {
            "rows": run.rows,
            "valid": run.valid,
            "rejected": run.rejected,
            "duplicates": run.duplicates,
            "unchanged": run.unchanged,
            "sent": run.sent,
            "created": run.created,
            "updated": run.updated,
            "errored": run.errored,
            "removed": run.removed,
            "batches": run.batches,
            "batches_failed": run.batches_failed,
        },
        "rejects": {
            "share": round(reject_share(run), 6),
            "threshold": target.reject_share,
            "reasons": dict(run.reasons),
        },
        "drift": drift,
        "started_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "sent_at": _iso(sent_at),
    }
    document["summary"] = title(document)
    return document


def title(d: dict[str, Any]) -> str:
    """One line saying what happened, for people."""
    where = f"{d['destination_name']} ({d['destination']}), segment {d['segment']}"
    event = d["event"]
    if event == "list_ready":
        members = "an unknown number of" if d["members"] is None else f"{d['members']:,}"
        return f"List ready: {where}: list {d['list_id']} holds {members} members"
    if event == "run_failed":
        return f"Run failed: {where}"
    if event == "list_drift":
        return f"List differs from the segment: {where}"
    share, threshold = d["rejects"]["share"], d["rejects"]["threshold"]
    return f"{share:.1%} of the rows rejected (over {threshold:.1%}): {where}"


def facts(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs people read (Slack's fields, Teams' facts)."""
    counts = d["counts"]
    members = "unknown" if d["members"] is None else f"{d['members']:,}"
    if d["members"] is None and d["members_note"]:
        members += f" ({d['members_note']})"
    found = [
        ("Destination", f"{d['destination_name']} ({d['destination']})"),
        ("Segment", d["segment"]),
        ("List", d["list_id"] or "none"),
        ("Members", f"{members} (segment: {d['expected_members']:,})"),
        ("Run", f"{d['run_id']}: {d['state']}"),
        (
            "Rows",
            f"{counts['rows']:,} read, {counts['rejected']:,} rejected "
            f"({d['rejects']['share']:.1%}), {counts['sent']:,} sent",
        ),
        ("Verified", _verified(d)),
        ("Finished", d["finished_at"] or "not yet"),
    ]
    if d["error"]:
        found.append(("Reason", d["error"]))
    drift = d["drift"]
    if d["event"] == "list_drift" and drift:
        found.append(
            (
                "Differences",
                f"{drift['missing'] or 0:,} missing, {drift['changed'] or 0:,} changed, "
                f"{drift['extra'] or 0:,} not in the segment",
            )
        )
    if d["event"] == "rejects_above" and d["rejects"]["reasons"]:
        reasons = sorted(d["rejects"]["reasons"].items(), key=lambda kv: -kv[1])[:5]
        found.append(("Rejected for", ", ".join(f"{k} {v:,}" for k, v in reasons)))
    return found


def slack_message(d: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming webhooks: `text` (the notification's fallback) and Block Kit `blocks`."""
    fields = [
        {"type": "mrkdwn", "text": f"*{_slack(label)}*\n{_slack(value)[:1900]}"}
        for label, value in facts(d)
    ]
    return {
        "text": _slack(d["summary"]),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_slack(d['summary'])}*"}},
            *(
                {"type": "section", "fields": fields[i : i + 10]}  # at most 10 fields a section
                for i in range(0, len(fields), 10)
            ),
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _slack(f"delivery {d['delivery']}")}],
            },
        ],
    }


def teams_message(d: dict[str, Any]) -> dict[str, Any]:
    """Microsoft Teams' incoming webhooks (Workflows, and the older connectors): a message with
    one Adaptive Card."""
    card = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": d["summary"],
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": value} for label, value in facts(d)],
            },
            {
                "type": "TextBlock",
                "text": f"delivery {d['delivery']}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def _verified(d: dict[str, Any]) -> str:
    if d["verified"]:
        return "yes: read back, the list holds exactly the segment"
    why = d["verify_note"] or "not read back this run"
    if d["confirmation"] == "import_jobs":
        return f"no: SendGrid's import jobs took every contact ({why})"
    return f"no: {why}"


def _confirmation(run: RunRecord) -> str | None:
    """How the run knows its changes are applied: the list read back and found equal, or (not
    read back) every import job completed with every contact taken; None: it does not."""
    if run.state != "succeeded":
        return None
    return "read_back" if run.verified else "import_jobs"


def _short(text: str) -> str:
    text = mask_emails(text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at is not None else None


def _slack(text: str) -> str:
    """Text as Slack's mrkdwn shows it literally (`&`, `<` and `>` escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
