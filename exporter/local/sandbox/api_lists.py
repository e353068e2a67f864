"""The lists endpoints: pages of lists, create, read (with a contact sample), count, remove
contacts, delete (keeping the contacts or deleting them: `delete_contacts`).

A removal from a list, and a list deletion with its contacts, run in SendGrid as background jobs
whose ids this answers but does not track (here: a removal after the list lag, a deletion at
once). Renaming a list is not implemented (501). Page tokens are opaque, as SendGrid's.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any, Final

from werkzeug.wrappers import Response

from exporter.local.sandbox.answers import Call, error_response, json_response
from exporter.local.sandbox.api_contacts import with_self
from exporter.local.sandbox.store_model import Conflict, NotFound

PAGE_SIZE_DEFAULT: Final = 100


def get_lists(call: Call) -> Response:
    args = call.request.args
    size = int(float(args.get("page_size", PAGE_SIZE_DEFAULT)))
    token = args.get("page_token") or ""
    offset = _page_offset(token)
    if offset is None:
        return error_response(400, "is not a valid page token", "page_token")
    lists = call.store.lists()
    page = lists[offset : offset + size]
    link = f"{call.base}/v3/marketing/lists?page_size={size}"
    meta: dict[str, Any] = {"self": link + (f"&page_token={token}" if token else "")}
    if offset + size < len(lists):
        meta["next"] = f"{link}&page_token={_page_token(offset + size)}"
    if offset > 0:
        previous = max(0, offset - size)
        meta["prev"] = link + (f"&page_token={_page_token(previous)}" if previous else "")
    meta["count"] = len(lists)
    result = [_list_view(x.id, x.name, x.contact_count, call.base) for x in page]
    return json_response(200, {"result": result, "_metadata": meta})


def create_list(call: Call) -> Response:
    try:
        created = call.store.create_list(call.body["name"])
    except Conflict:
        return error_response(400, "a list with this name already exists", "name")
    return json_response(201, _list_view(created.id, created.name, 0, call.base))


def get_list(call: Call) -> Response:
    found = call.store.get_list(call.params[0])
    if found is None:
        return error_response(404, "list not found")
    view = _list_view(found.id, found.name, found.contact_count, call.base)
    if call.request.args.get("contact_sample", "").lower() == "true":
        try:
            sample = call.store.sample_member(found.id)
        except NotFound:
            return error_response(404, "list not found")
        if sample is not None:
            view["contact_sample"] = with_self(sample, call.base)
    return json_response(200, view)


def list_contact_count(call: Call) -> Response:
    found = call.store.get_list(call.params[0])
    if found is None:
        return error_response(404, "list not found")
    count = found.contact_count
    return json_response(200, {"contact_count": count, "billable_count": count})


def remove_from_list(call: Call) -> Response:
    raw = call.request.args.get("contact_ids", "")
    ids = [x.strip() for x in raw.split(",") if x.strip()]
    if not ids:
        return error_response(400, "must name at least one contact id", "contact_ids")
    if call.store.get_list(call.params[0]) is None:
        return error_response(404, "list not found")
    try:
        call.store.remove_from_list(call.params[0], ids, lag=call.faults.list_lag)
    except NotFound as exc:
        return error_response(404, str(exc), "contact_ids")
    return json_response(202, {"job_id": str(uuid.uuid4())})


def delete_list(call: Call) -> Response:
    delete_contacts = call.request.args.get("delete_contacts", "").lower() == "true"
    try:
        call.store.delete_list(call.params[0], delete_contacts=delete_contacts)
    except NotFound:
        return error_response(404, "list not found")
    if delete_contacts:  # SendGrid deletes the contacts in a job; here they are gone
        return json_response(200, {"job_id": str(uuid.uuid4())})
    return Response(status=204)


def _list_view(list_id: str, name: str, count: int, base: str) -> dict[str, Any]:
    return {
        "id": list_id,
        "name": name,
        "contact_count": count,
        "_metadata": {"self": f"{base}/v3/marketing/lists/{list_id}"},
    }


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _page_offset(token: str) -> int | None:
    """The offset an opaque page token stands for; 0 for none, None for a forged one."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, number = text.partition(":")
    if prefix != "offset" or not number.isdigit():
        return None
    return int(number)
