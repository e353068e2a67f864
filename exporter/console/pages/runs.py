"""The runs list (`GET /runs`): filters (destination, segment, state, since), the newest runs
first with a badge of each one's state, and `GET /runs.json` (the same filters) that
`static/runs.js` polls while a listed run has not ended, to move the badges on in place.

The runs come from `exporter.admin.runs.find_runs`, as `runs list` and `GET /api/runs` get them.
"Export now" on a destination's page leads here (`?destination=NAME`) when it requested more
than one run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, get_args
from urllib.parse import urlencode

from exporter.admin.runs import RUN_STATES, find_runs
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.render import badge, url
from exporter.console.router import route
from exporter.core.errors import InputError
from exporter.model.runs import FINAL_STATES, RunRecord, RunState

DEFAULT_LIMIT: Final = 100
STATE_ORDER: Final[tuple[str, ...]] = get_args(RunState)
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_FILTER: Final = 200


@dataclass(frozen=True, slots=True)
class Filters:
    destination: str = ""
    segment: str = ""
    state: str = ""
    since_text: str = ""
    since: datetime | None = None
    limit: int = DEFAULT_LIMIT

    @property
    def any(self) -> bool:
        return bool(self.destination or self.segment or self.state or self.since_text)


def parse_since(text: str) -> datetime | None:
    """`2026-11-24`, `2026-11-24T10:00`, `2026-11-24 10:00:30`, with or without an offset or Z;
    a time without an offset is UTC. Empty: None."""
    text = text.strip()
    if not text:
        return None
    try:
        if _DATE.fullmatch(text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        found = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise InputError(
            f"since {text[:40]!r} is not a date or time: write 2026-11-24 or 2026-11-24T10:00 "
            "(UTC unless it ends with an offset)"
        ) from None
    return found.replace(tzinfo=UTC) if found.utcoffset() is None else found


def filters(query: dict[str, str]) -> Filters:
    """The filters a query names (an unknown state or a bad time: `InputError`)."""
    state = query.get("state", "").strip()
    if state and state not in RUN_STATES:
        raise InputError(f"state must be one of {', '.join(STATE_ORDER)}")
    limit_text = query.get("limit", "").strip()
    if limit_text and not (limit_text.isdigit() and 1 <= int(limit_text) <= 1000):
        raise InputError("limit must be a number from 1 to 1000")
    since_text = query.get("since", "").strip()[:MAX_FILTER]
    return Filters(
        destination=query.get("destination", "").strip()[:MAX_FILTER],
        segment=query.get("segment", "").strip()[:MAX_FILTER],
        state=state,
        since_text=since_text,
        since=parse_since(since_text),
        limit=int(limit_text) if limit_text else DEFAULT_LIMIT,
    )


def _find(ctx: Context, f: Filters) -> list[RunRecord]:
    return find_runs(
        ctx.svc,
        destination=f.destination or None,
        segment=f.segment or None,
        state=f.state or None,
        since=f.since,
        limit=f.limit,
    )


@route("GET", "/runs")
def runs_page(ctx: Context) -> Response:
    problem = ""
    try:
        f = filters(ctx.request.query)
    except InputError as exc:
        problem = str(exc)
        f = Filters(
            destination=ctx.request.query.get("destination", "")[:MAX_FILTER],
            segment=ctx.request.query.get("segment", "")[:MAX_FILTER],
            since_text=ctx.request.query.get("since", "")[:MAX_FILTER],
        )
    found = [] if problem else _find(ctx, f)
    destinations = sorted(ctx.svc.destinations.all(), key=lambda d: d.name)
    names = [d.name for d in destinations]
    segments = sorted({s for d in destinations for s in d.segments})
    return ctx.render(
        "runs.html",
        http_status=400 if problem else 200,
        runs=found,
        filters=f,
        problem=problem,
        destination_names=_with(names, f.destination),
        segment_names=_with(segments, f.segment),
        states=STATE_ORDER,
        live=any(r.state not in FINAL_STATES for r in found),
        live_url=_live_url(ctx.request.query),
    )


@route("GET", "/runs.json")
def runs_json(ctx: Context) -> Response:
    """The listed runs' states, for `runs.js` (the same filters as the page)."""
    found = _find(ctx, filters(ctx.request.query))
    return ctx.json(
        {
            "runs": [_state_json(r) for r in found],
            "final": all(r.state in FINAL_STATES for r in found),
        }
    )


def _state_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "state": run.state,
        "badge": badge(run.state),
        "rows": run.rows,
        "rejected": run.rejected,
        "sent": run.sent,
    }


def _with(names: list[str], current: str) -> list[str]:
    """The choices of a filter, with the current value even when nothing offers it any more
    (a removed destination's runs stay in the ledger)."""
    return names if not current or current in names else [*names, current]


def _live_url(query: dict[str, str]) -> str:
    kept = {
        k: v for k, v in query.items() if k in ("destination", "segment", "state", "since", "limit")
    }
    return url("/runs.json") + ("?" + urlencode(kept) if kept else "")
