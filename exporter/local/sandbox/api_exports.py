"""The contact exports endpoints: start one, its status, all of them.

An export (`POST /v3/marketing/contacts/exports`) is `pending` for `export_delay`, then `ready`
with the members visible at that moment (or `failure`), written once as gzip-compressed CSV or
JSON Lines files split by `max_file_size`, and served like S3 presigned URLs from the sandbox
itself (`/__sandbox/export-files/<id>/<n>?sig=...`, see `control`). The CSV layout
(`store_exports.EXPORT_CSV_COLUMNS`) is our best knowledge of SendGrid's real export, not a
documented format. Segments do not exist here (an export naming any is a 400); export
notifications are not sent; `expires_at` is not enforced, but only the files of the latest
`KEPT_EXPORTS` exports are kept (older URLs answer 404 "expired").
"""

from __future__ import annotations

import time
from typing import Any

from werkzeug.wrappers import Response

from exporter.local.sandbox.answers import Call, error_response, json_response
from exporter.local.sandbox.store_exports import MB
from exporter.local.sandbox.store_model import ExportInfo, NotFound, iso_timestamp


def start_export(call: Call) -> Response:
    body: dict[str, Any] = call.body
    if body.get("segment_ids"):
        return error_response(400, "segments do not exist in the sandbox", "segment_ids")
    max_file_size = int(body.get("max_file_size", 5000))
    if max_file_size < 1:
        return error_response(400, "must be at least 1", "max_file_size")
    due = time.monotonic() + call.faults.export_delay
    try:
        export = call.store.submit_export(
            body.get("list_ids") or [],
            due=due,
            file_type="json" if body.get("file_type") == "json" else "csv",
            max_file_bytes=max_file_size * MB,
        )
    except NotFound as exc:
        return error_response(404, str(exc), "list_ids")
    call.wake()
    meta = {"self": f"{call.base}/v3/marketing/contacts/exports/{export.id}"}
    return json_response(202, {"id": export.id, "_metadata": meta})


def get_export(call: Call) -> Response:
    export = call.store.export(call.params[0])
    if export is None:
        return error_response(404, "export not found")
    return json_response(200, _export_view(export, call.base))


def get_exports(call: Call) -> Response:
    names = {x.id: x.name for x in call.store.lists()}
    result = []
    for export in call.store.exports():
        view = _export_view(export, call.base)
        view.pop("updated_at")
        view.pop("contact_count", None)
        view.pop("message", None)
        view["export_type"] = "list_export" if export.list_ids else "contacts_export"
        view["lists"] = [{"ID": x, "Name": names.get(x, "")} for x in export.list_ids]
        view["segments"] = []
        result.append(view)
    meta = {"self": f"{call.base}/v3/marketing/contacts/exports"}
    return json_response(200, {"result": result, "_metadata": meta})


def _export_view(export: ExportInfo, base: str) -> dict[str, Any]:
    """The spec's `ContactExport`; file URLs carry the export's signature, like presigned URLs."""
    view: dict[str, Any] = {
        "id": export.id,
        "status": export.status,
        "created_at": iso_timestamp(export.created_at),
        "updated_at": iso_timestamp(export.updated_at),
        "expires_at": iso_timestamp(export.expires_at),
    }
    if export.completed_at is not None:
        view["completed_at"] = iso_timestamp(export.completed_at)
    if export.status == "ready":
        view["urls"] = [
            f"{base}/__sandbox/export-files/{export.id}/{n}?sig={export.token}"
            for n in range(1, export.file_count + 1)
        ]
        view["contact_count"] = export.contact_count
    if export.status == "failure":
        view["message"] = export.message
    view["_metadata"] = {"self": f"{base}/v3/marketing/contacts/exports/{export.id}"}
    return view
