"""HTTP API: destinations, exports on demand, runs, snapshots. Every route needs a function key.

Each trigger reads its route, query and body, calls one function of `exporter.admin` (the same
code as the CLI), and answers JSON. Errors map to statuses by type: 400 invalid input (with the
validation message), 404 unknown, 409 conflict, 413 a body over `MAX_BODY_BYTES`
(refused by its Content-Length, or by its size, before it is parsed), 502 SendGrid refused the
key or list, 503 SendGrid unreachable or rate limited, or a removal interrupted (try again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from exporter.admin.connection import check_connection
from exporter.admin.destinations import (
    destination_json,
    get_destination,
    list_destinations,
    save_destination,
)
from exporter.admin.errors import (
    ConflictError,
    NotFoundError,
    RemovalIncomplete,
    SendGridRefused,
    TooLarge,
)
from exporter.admin.exports import export_now
from exporter.admin.removal import remove_destination
from exporter.admin.requests import DestinationRequest, ExportBody, check_size, parse
from exporter.admin.runs import find_runs, run_details
from exporter.admin.snapshots import list_snapshots, remove_snapshot, show_snapshot
from exporter.admin.views import details_json, run_json
from exporter.core.errors import InputError
from exporter.core.redact import mask_emails
from exporter.ports.sendgrid import RateLimited, TransientError
from exporter.triggers import services

bp = func.Blueprint()
log = logging.getLogger("exporter.triggers.api")
AUTH = func.AuthLevel.FUNCTION
Answer = tuple[int, Any]


@bp.route(route="destinations", methods=["GET"], auth_level=AUTH)
def api_list_destinations(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: (200, {"destinations": _destinations()}))


@bp.route(route="destinations/{name}", methods=["GET"], auth_level=AUTH)
def api_get_destination(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: (200, destination_json(get_destination(services(), _name(req)))))


@bp.route(route="destinations/{name}", methods=["PUT"], auth_level=AUTH)
def api_put_destination(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: _put_destination(req))


@bp.route(route="destinations/{name}", methods=["DELETE"], auth_level=AUTH)
def api_delete_destination(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: (200, remove_destination(services(), _name(req)).as_json()))


@bp.route(route="destinations/{name}/test", methods=["POST"], auth_level=AUTH)
def api_test_destination(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: _test_destination(req))


@bp.route(route="destinations/{name}/exports", methods=["POST"], auth_level=AUTH)
def api_export(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: _export(req))


@bp.route(route="runs", methods=["GET"], auth_level=AUTH)
def api_list_runs(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: _list_runs(req))


@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=AUTH)
def api_get_run(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: (200, details_json(run_details(services(), req.route_params["run_id"]))))


@bp.route(route="snapshots", methods=["GET"], auth_level=AUTH)
def api_list_snapshots(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: _list_snapshots(req))


# A snapshot's name is a path (`<segment>/<file>`): a catch-all parameter, which may be empty
# (then the list: a host may route `/snapshots` here too). Checked in `admin.snapshots`.
@bp.route(route="snapshots/{*name}", methods=["GET"], auth_level=AUTH)
def api_get_snapshot(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name")
    if not name:
        return _answer(lambda: _list_snapshots(req))
    return _answer(lambda: (200, show_snapshot(services(), name).as_json()))


@bp.route(route="snapshots/{*name}", methods=["DELETE"], auth_level=AUTH)
def api_delete_snapshot(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(lambda: _delete_snapshot(req))


# --- request and answer ----------------------------------------------------------------------


def _destinations() -> list[dict[str, Any]]:
    return [destination_json(d) for d in list_destinations(services())]


def _name(req: func.HttpRequest) -> str:
    return str(req.route_params["name"])


def _body(req: func.HttpRequest) -> bytes:
    """The request's body, at most `MAX_BODY_BYTES`: a larger one is refused by its
    declared length before it is read, and by its size before it is parsed."""
    declared = (req.headers.get("Content-Length") or "").strip()
    if declared.isdigit():
        check_size(int(declared))
    body = req.get_body() or b""
    check_size(len(body))
    return body


def _put_destination(req: func.HttpRequest) -> Answer:
    name = _name(req)
    request = parse(DestinationRequest, _body(req))
    if request.name not in (None, name):
        raise InputError(f"the body names destination {request.name!r}, the URL {name!r}")
    saved = save_destination(services(), request.model_copy(update={"name": name}))
    body = {
        "destination": destination_json(saved.destination),
        "created": saved.created,
        "list_created": saved.list_created,
    }
    return (201 if saved.created else 200), body


def _test_destination(req: func.HttpRequest) -> Answer:
    svc = services()
    report = check_connection(svc, get_destination(svc, _name(req)))
    return (200 if report.ok else 502), report.as_json()


def _export(req: func.HttpRequest) -> Answer:
    body = parse(ExportBody, _body(req))
    exported = export_now(services(), _name(req), body, trigger="api")
    answer = exported.as_json()
    for run in answer["runs"]:
        run["url"] = f"/api/runs/{run['run_id']}"
    return 202, answer


def _list_runs(req: func.HttpRequest) -> Answer:
    limit = req.params.get("limit") or "50"
    if not limit.isdigit():
        raise InputError("limit must be a whole number from 1 to 1000")
    found = find_runs(
        services(),
        destination=req.params.get("destination") or None,
        state=req.params.get("state") or None,
        limit=int(limit),
    )
    return 200, {"runs": [run_json(r) for r in found]}


def _list_snapshots(req: func.HttpRequest) -> Answer:
    limit = req.params.get("limit") or "1000"
    if not limit.isdigit():
        raise InputError("limit must be a whole number from 1 to 10000")
    listing = list_snapshots(services(), req.params.get("segment") or None, limit=int(limit))
    return 200, listing.as_json()


def _delete_snapshot(req: func.HttpRequest) -> Answer:
    name = req.route_params.get("name")
    if not name:
        raise InputError("name the snapshot to remove: DELETE /api/snapshots/<segment>/<file>")
    removed = remove_snapshot(services(), name, etag=req.params.get("etag") or None)
    return 200, removed.as_json()


def _answer(action: Callable[[], Answer]) -> func.HttpResponse:
    headers: dict[str, str] = {}
    try:
        status, body = action()
    except NotFoundError as exc:
        status, body = 404, _error(exc)
    except ConflictError as exc:
        status, body = 409, _error(exc)
    except TooLarge as exc:
        status, body = 413, _error(exc)
    except InputError as exc:
        status, body = 400, _error(exc)
    except SendGridRefused as exc:
        status, body = 502, _error(exc)
    except RateLimited as exc:
        status, body = 503, _error(exc)
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    except TransientError as exc:
        status, body = 503, _error(exc)
    except RemovalIncomplete as exc:
        status, body = 503, _error(exc)
        headers["Retry-After"] = "5"
    if status >= 400:
        log.info("api answered %s: %s", status, body.get("error", ""))
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False, default=str),
        status_code=status,
        headers=headers,
        mimetype="application/json",
        charset="utf-8",
    )


def _error(exc: Exception) -> dict[str, Any]:
    return {"error": mask_emails(str(exc))}
