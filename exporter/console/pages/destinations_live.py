"""The add/edit form's live steps as JSON (`static/destinations.js`): the account's lists, the
segment's columns, the preview, the dry run, the connection test. Each takes the form as it
stands (POSTed, with its CSRF token) and calls the same `exporter.admin` code as the page's
submit buttons; errors answer JSON with the status the HTTP API gives them."""

from __future__ import annotations

from exporter.admin.lists import account_lists, test_candidate
from exporter.admin.preview import dry_run, preview, segment_columns
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.pages.destinations_form import DestinationForm
from exporter.console.router import route
from exporter.core.errors import InputError


def _form(ctx: Context) -> DestinationForm:
    return DestinationForm.from_request(ctx.request)


def _segment(form: DestinationForm) -> str:
    if not form.segment:
        raise InputError("choose a segment first")
    return form.segment


@route("POST", "/destination-form/lists.json")
def lists_json(ctx: Context) -> Response:
    found = account_lists(ctx.svc, _form(ctx).api_key_secret)
    return ctx.json({"lists": [f.as_json() for f in found]})


@route("POST", "/destination-form/columns.json")
def columns_json(ctx: Context) -> Response:
    return ctx.json(segment_columns(ctx.svc, _segment(_form(ctx))).as_json())


@route("POST", "/destination-form/preview.json")
def preview_json(ctx: Context) -> Response:
    form = _form(ctx)
    return ctx.json(preview(ctx.svc, _segment(form), form.mapping()).as_json())


@route("POST", "/destination-form/dry-run.json")
def dry_run_json(ctx: Context) -> Response:
    form = _form(ctx)
    return ctx.json(dry_run(ctx.svc, _segment(form), form.mapping()).as_json())


@route("POST", "/destination-form/connect.json")
def connect_json(ctx: Context) -> Response:
    return ctx.json(test_candidate(ctx.svc, _form(ctx).connection_request()).as_json())
