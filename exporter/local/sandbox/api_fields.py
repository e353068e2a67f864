"""The field definitions endpoints: the reserved fields and the custom ones, and creating one,
with names as SendGrid allows them (letters, digits, _; not starting with a digit; unique
regardless of case, reserved names included)."""

from __future__ import annotations

import re
from typing import Final, cast

from werkzeug.wrappers import Response

from exporter.local.sandbox.answers import Call, error_response, json_response
from exporter.local.sandbox.store_model import Conflict, FieldType

# Reserved fields as SendGrid lists them (the spec's example) plus the identifier fields.
RESERVED_FIELDS: Final[tuple[tuple[str, FieldType, bool], ...]] = (
    ("first_name", "Text", False),
    ("last_name", "Text", False),
    ("email", "Text", False),
    ("alternate_emails", "Text", False),
    ("address_line_1", "Text", False),
    ("address_line_2", "Text", False),
    ("city", "Text", False),
    ("state_province_region", "Text", False),
    ("postal_code", "Text", False),
    ("country", "Text", False),
    ("phone_number", "Text", False),
    ("whatsapp", "Text", False),
    ("line", "Text", False),
    ("facebook", "Text", False),
    ("unique_name", "Text", False),
    ("email_domains", "Text", True),
    ("last_clicked", "Date", True),
    ("last_opened", "Date", True),
    ("last_emailed", "Date", True),
    ("singlesend_id", "Text", True),
    ("automation_id", "Text", True),
    ("created_at", "Date", True),
    ("updated_at", "Date", True),
    ("contact_id", "Text", True),
    ("phone_number_id", "Text", False),
    ("external_id", "Text", False),
    ("anonymous_id", "Text", False),
)
RESERVED_NAMES: Final = frozenset(name for name, _, _ in RESERVED_FIELDS)
_FIELD_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A custom field name SendGrid creates (the spec's `CreateFieldDefinition`; length: the spec)."""


def get_field_definitions(call: Call) -> Response:
    custom = [
        {"id": f.id, "name": f.name, "field_type": f.field_type} for f in call.store.custom_fields()
    ]
    reserved = [
        {"id": f"_rf{i}_{kind[0]}", "name": name, "field_type": kind}
        | ({"read_only": True} if read_only else {})
        for i, (name, kind, read_only) in enumerate(RESERVED_FIELDS)
    ]
    meta = {"self": f"{call.base}/v3/marketing/field_definitions"}
    return json_response(
        200, {"custom_fields": custom, "reserved_fields": reserved, "_metadata": meta}
    )


def create_field_definition(call: Call) -> Response:
    name: str = call.body["name"]
    field_type = cast(FieldType, call.body["field_type"])
    if not _FIELD_NAME_RE.fullmatch(name):
        return error_response(
            400,
            "must hold only letters A-Z, digits and underscores, and not start with a digit",
            "name",
        )
    try:
        created = call.store.create_custom_field(name, field_type, reserved=RESERVED_NAMES)
    except Conflict as exc:
        return error_response(400, str(exc), "name")
    meta = {"self": f"{call.base}/v3/marketing/field_definitions/{created.id}"}
    return json_response(
        200,
        {
            "id": created.id,
            "name": created.name,
            "field_type": created.field_type,
            "_metadata": meta,
        },
    )
