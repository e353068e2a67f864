"""The control endpoints under `/__sandbox/` (no auth, no rate limit), for tests and the local
stack: the state, faults, reset, a list's members, request counts, an import job's errors, and
the export files.

Export files are served as S3 presigned URLs serve them: the signature in the query is the only
credential (a wrong one is a 403; a request that also carries an Authorization header is a 400,
as S3 answers to two auth mechanisms), gzip bytes as stored (no Content-Encoding).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from exporter.local.sandbox.answers import error_response, json_response
from exporter.local.sandbox.store_model import Expired, Forbidden, NotFound

if TYPE_CHECKING:  # the app dispatches to this module
    from exporter.local.sandbox.app import SandboxApp


def control(app: SandboxApp, request: Request) -> Response:
    """`/__sandbox/...`: state, faults, reset, list members, request counts, job errors,
    export files (signed URLs, no key)."""
    method, path = request.method.upper(), request.path
    parts = path.strip("/").split("/")[1:]
    routes: dict[tuple[str, ...], tuple[str, Callable[[], Response]]] = {
        ("state",): ("GET", lambda: json_response(200, _state(app))),
        ("faults",): ("POST", lambda: _post_faults(app, request)),
        ("reset",): ("POST", lambda: _post_reset(app)),
        ("requests",): ("GET", lambda: json_response(200, app.request_counts())),
    }
    if len(parts) == 3 and parts[0] == "lists" and parts[2] == "contacts":
        by_id = request.args.get("custom_fields") == "id"
        routes[tuple(parts)] = ("GET", lambda: _members(app, parts[1], by_id))
    if len(parts) == 2 and parts[0] == "import-errors":
        routes[tuple(parts)] = ("GET", lambda: _import_errors(app, parts[1]))
    if len(parts) == 3 and parts[0] == "export-files":
        routes[tuple(parts)] = ("GET", lambda: _export_file(app, request, parts[1], parts[2]))
    found = routes.get(tuple(parts))
    if found is None:
        return error_response(404, "not found")
    allowed, action = found
    if method != allowed:
        response = error_response(405, "method not allowed")
        response.headers["Allow"] = allowed
        return response
    return action()


def _state(app: SandboxApp) -> dict[str, Any]:
    state = app.store.summary()
    state["faults"] = app.faults.as_dict()
    state["seed"] = app.config.seed
    state["api_key_required"] = app.keys.required
    state["api_key_names"] = app.keys.names()
    state["state_file"] = None if app.config.state_file is None else str(app.config.state_file)
    return state


def _post_faults(app: SandboxApp, request: Request) -> Response:
    try:
        changes = json.loads(request.get_data() or b"{}")
    except ValueError:
        return error_response(400, "invalid JSON body")
    if not isinstance(changes, dict):
        return error_response(400, "must be a JSON object")
    try:
        faults = app.set_faults(changes)
    except (TypeError, ValueError) as exc:
        return error_response(400, str(exc))
    return json_response(200, faults.as_dict())


def _post_reset(app: SandboxApp) -> Response:
    app.reset()
    return json_response(200, _state(app))


def _members(app: SandboxApp, list_id: str, custom_by_id: bool = False) -> Response:
    """`?custom_fields=id` shows custom values keyed as stored (field ids), else by name."""
    try:
        return json_response(200, app.store.list_members(list_id, custom_by_id=custom_by_id))
    except NotFound:
        return error_response(404, "list not found")


def _export_file(app: SandboxApp, request: Request, export_id: str, number: str) -> Response:
    """An export file, as an S3 presigned URL serves it: the signature in the query is the
    only credential; gzip bytes as stored (no Content-Encoding: the client unpacks them)."""
    response = _export_file_answer(app, request, export_id, number)
    app.count("GET /__sandbox/export-files/{id}/{n}", str(response.status_code))
    return response


def _export_file_answer(app: SandboxApp, request: Request, export_id: str, number: str) -> Response:
    if "Authorization" in request.headers:
        return error_response(
            400,
            "only one auth mechanism allowed: the URL's signature, or an Authorization "
            "header, not both",
        )
    if not number.isdigit():
        return error_response(404, "export file not found")
    try:
        data = app.store.export_file(export_id, int(number), request.args.get("sig", ""))
    except Forbidden:
        return error_response(403, "the signature does not match")
    except Expired:
        return error_response(404, "the export file has expired")
    except NotFound:
        return error_response(404, "export file not found")
    return Response(data, status=200, mimetype="application/gzip")


def _import_errors(app: SandboxApp, job_id: str) -> Response:
    try:
        errors = app.store.job_errors(job_id)
    except NotFound:
        return error_response(404, "job not found")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "error"])
    writer.writerows(errors)
    return Response(out.getvalue(), mimetype="text/csv")
