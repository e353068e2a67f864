"""Destinations: the list (each segment's last run), one destination's page (its document
without any key, its runs), "Export now" (a full refresh or a mass removal only after a
confirmation) and "Remove destination" (the name typed to confirm, as the CLI asks). Each action
is the administration's own function, as for the CLI and the HTTP API."""

from __future__ import annotations

from typing import Any, Final

from exporter.admin.destinations import destination_json, get_destination, list_destinations
from exporter.admin.exports import export_now
from exporter.admin.removal import remove_destination
from exporter.admin.requests import ExportBody
from exporter.admin.runs import find_runs
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.pages.destinations_form import target_spec
from exporter.console.router import route
from exporter.model.destinations import Destination
from exporter.model.runs import RunRecord

RUNS_SHOWN: Final = 20
RUNS_SCANNED: Final = 200
"""Runs of a destination read for the list's "last run per segment" (the newest first)."""


@route("GET", "/destinations")
def destinations(ctx: Context) -> Response:
    rows = []
    for destination in list_destinations(ctx.svc):
        last: dict[str, RunRecord] = {}
        for run in find_runs(ctx.svc, destination=destination.name, limit=RUNS_SCANNED):
            last.setdefault(run.segment, run)
        rows.append(
            {
                "destination": destination,
                "segments": [(s, last.get(s)) for s in destination.segments],
            }
        )
    return ctx.render("destinations.html", rows=rows)


@route("GET", "/destinations/{name}")
def destination(ctx: Context, name: str) -> Response:
    return _show(ctx, get_destination(ctx.svc, name))


def _show(
    ctx: Context,
    destination: Destination,
    *,
    status: int = 200,
    notice: str = "",
    remove_error: str = "",
) -> Response:
    saved = ctx.request.query.get("saved", "")
    if saved in ("created", "updated") and not notice:
        notice = f"Destination {saved}."
        if ctx.request.query.get("list_created"):
            notice += " Its list was created in SendGrid."
    return ctx.render(
        "destination.html",
        http_status=status,
        destination=destination,
        document=_document(destination),
        runs=find_runs(ctx.svc, destination=destination.name, limit=RUNS_SHOWN),
        notice=notice,
        remove_error=remove_error,
    )


def _document(destination: Destination) -> dict[str, Any]:
    """What the page shows of the stored document: the key's reference, never a key."""
    document = destination_json(destination)
    document["notifications"] = [target_spec(t) for t in destination.notifications]
    return document


@route("POST", "/destinations/{name}/export")
def export(ctx: Context, name: str) -> Response:
    destination = get_destination(ctx.svc, name)
    full_refresh = ctx.request.checked("full_refresh")
    mass_removal = ctx.request.checked("allow_mass_removal")
    if (full_refresh or mass_removal) and not ctx.request.checked("confirmed"):
        return ctx.render(
            "destination_export.html",
            destination=destination,
            full_refresh=full_refresh,
            allow_mass_removal=mass_removal,
        )
    body = ExportBody(full_refresh=full_refresh, allow_mass_removal=mass_removal)
    exported = export_now(ctx.svc, name, body, trigger="api")
    if len(exported.runs) == 1:
        return ctx.redirect(f"/runs/{exported.runs[0].run_id}")
    if exported.runs:
        return ctx.redirect(f"/runs?destination={name}")
    waiting = ", ".join(exported.without_snapshot) or "none selected"
    return _show(
        ctx,
        destination,
        notice=f"Nothing to export: no snapshot yet for the segments ({waiting}).",
    )


@route("POST", "/destinations/{name}/remove")
def remove(ctx: Context, name: str) -> Response:
    typed = ctx.request.value("confirm_name")
    if typed != name:
        return _show(
            ctx,
            get_destination(ctx.svc, name),
            status=400,
            remove_error=(f"Not removed: type the destination's name, {name}, exactly to confirm."),
        )
    removal = remove_destination(ctx.svc, name)
    return ctx.render("destination_removed.html", removal=removal)
