"""Adding and editing a destination: the seed's flow (display name, key, list, "I agree",
Connect, Data matching, segments, Save), done better.

One form, one page. Without JavaScript each step is a submit button of the form (`action`:
load the account's lists, load the segment's columns, add a custom field row, preview, dry
run, connect, save) and the page comes back with what was typed and what the step found;
`static/destinations.js` does the same steps in place through the JSON endpoints of
`destinations_live`. Saving is `admin.destinations.save_destination`, as for the CLI and the
HTTP API; its errors come back next to the form.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from exporter.admin.connection import ConnectionReport
from exporter.admin.destinations import get_destination, save_destination
from exporter.admin.lists import AccountList, account_lists, key_names, test_candidate
from exporter.admin.preview import (
    Preview,
    SegmentColumns,
    SegmentDryRun,
    dry_run,
    preview,
    segment_columns,
    stored_segments,
)
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.pages.destinations_form import (
    CONSENT_TEXT,
    MAPPED,
    TYPES,
    CustomRow,
    DestinationForm,
    reserved_fields,
)
from exporter.console.router import route, status_of
from exporter.core.redact import mask_emails
from exporter.model.destinations import Destination

Mode = Literal["add", "edit"]
_STEPS = ("lists", "columns", "preview", "dry_run", "connect")


@route("GET", "/new-destination")
def new_destination(ctx: Context) -> Response:
    form = DestinationForm()
    segments = stored_segments(ctx.svc)
    form.segment = segments[0] if segments else ""
    return _page(ctx, form, "add", None)


@route("POST", "/new-destination")
def post_new_destination(ctx: Context) -> Response:
    return _step(ctx, DestinationForm.from_request(ctx.request), "add", None)


@route("GET", "/destinations/{name}/edit")
def edit_destination(ctx: Context, name: str) -> Response:
    existing = get_destination(ctx.svc, name)
    return _page(ctx, DestinationForm.from_destination(existing), "edit", existing)


@route("POST", "/destinations/{name}/edit")
def post_edit_destination(ctx: Context, name: str) -> Response:
    existing = get_destination(ctx.svc, name)
    form = DestinationForm.from_request(ctx.request)
    form.name = existing.name
    return _step(ctx, form, "edit", existing)


def _step(
    ctx: Context, form: DestinationForm, mode: Mode, existing: Destination | None
) -> Response:
    action = ctx.request.value("action", "save")
    if action == "save":
        return _save(ctx, form, mode, existing)
    if action == "add-field":
        form.custom.append(CustomRow())
        return _page(ctx, form, mode, existing, focus="custom")
    if action == "load-columns":
        return _page(ctx, form, mode, existing, resuggest=True, focus="matching")
    if action == "dry-run":
        return _page(ctx, form, mode, existing, run_dry=True, focus="dry-run")
    if action == "connect":
        return _page(ctx, form, mode, existing, connect=True, focus="connect")
    return _page(ctx, form, mode, existing, focus="lists" if action == "load-lists" else "")


def _save(
    ctx: Context, form: DestinationForm, mode: Mode, existing: Destination | None
) -> Response:
    now = datetime.fromtimestamp(ctx.now, UTC)
    if mode == "add" and not form.consent:
        problem = "tick “I agree” to the data-privacy terms: no destination is saved without it"
        return _page(ctx, form, mode, existing, error=problem, status=400, focus="consent")
    try:
        request = form.request(ctx.user, now)
        saved = save_destination(
            ctx.svc, request, mode="create" if mode == "add" else "update", now=now
        )
    except Exception as exc:
        known = status_of(exc)
        if known is None:
            raise
        return _page(ctx, form, mode, existing, error=mask_emails(str(exc)), status=known[0])
    query = "created" if saved.created else "updated"
    if saved.list_created:
        query += "&list_created=1"
    return ctx.redirect(f"/destinations/{saved.destination.name}?saved={query}")


def _page(
    ctx: Context,
    form: DestinationForm,
    mode: Mode,
    existing: Destination | None,
    *,
    resuggest: bool = False,
    run_dry: bool = False,
    connect: bool = False,
    error: str = "",
    status: int = 200,
    focus: str = "",
) -> Response:
    """The form with what the steps asked for found (each step's own error beside it)."""
    found: dict[str, Any] = {f"{step}_error": "" for step in _STEPS}
    lists: list[AccountList] | None = None
    if form.api_key_secret:
        lists = _attempt(found, "lists", lambda: account_lists(ctx.svc, form.api_key_secret))
    columns: SegmentColumns | None = None
    if form.segment:
        columns = _attempt(found, "columns", lambda: segment_columns(ctx.svc, form.segment))
    if columns is not None:
        _suggest(form, columns, resuggest=resuggest)
    shown: Preview | None = None
    result: SegmentDryRun | None = None
    checks: ConnectionReport | None = None
    if columns is not None and form.columns.get("email"):
        shown = _attempt(found, "preview", lambda: preview(ctx.svc, form.segment, form.mapping()))
        if run_dry:
            result = _attempt(
                found, "dry_run", lambda: dry_run(ctx.svc, form.segment, form.mapping())
            )
    elif run_dry:
        found["dry_run_error"] = "choose a segment and its email column first"
    if connect:
        checks = _attempt(
            found, "connect", lambda: test_candidate(ctx.svc, form.connection_request())
        )
    segments = stored_segments(ctx.svc)
    if form.segment and form.segment not in segments:
        segments.append(form.segment)
    return ctx.render(
        "destination_form.html",
        http_status=status,
        mode=mode,
        form=form,
        existing=existing,
        action_path=(
            "/new-destination" if existing is None else f"/destinations/{existing.name}/edit"
        ),
        key_names=key_names(ctx.settings),
        lists=lists,
        segments=segments,
        columns=columns,
        preview=shown,
        dry_run=result,
        checks=checks,
        error=error,
        focus=focus,
        consent_text=CONSENT_TEXT,
        mapped=MAPPED,
        types=TYPES,
        reserved=reserved_fields(),
        found=found,
    )


def _attempt(found: dict[str, Any], what: str, step: Any) -> Any:
    """A step's result, or None with its error in `found[what + "_error"]` (an expected
    error only: a bug still fails the page)."""
    try:
        return step()
    except Exception as exc:
        if status_of(exc) is None:
            raise
        found[f"{what}_error"] = mask_emails(str(exc))
        return None


def _suggest(form: DestinationForm, columns: SegmentColumns, *, resuggest: bool) -> None:
    """Pre-select the column the default mapping takes for each field not chosen yet (a new
    form; a stored mapping that leaves the field to the defaults) and, when the segment
    changed (`resuggest`), for each field whose column its latest snapshot lacks."""
    present = set(columns.columns)
    for name, _ in MAPPED:
        chosen = form.columns.get(name)
        if chosen is None or (resuggest and chosen and chosen not in present):
            form.columns[name] = columns.suggested.get(name, "")
