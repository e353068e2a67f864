"""Destinations for tests that are about the field mapping (custom fields and their types)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from exporter.model.destinations import Consent, Destination


def destination(mapping: dict[str, str], **values: Any) -> Destination:
    """Destination `marketing` (segment `loyal`, key secret SENDGRID_KEY_FLOW, consent given)
    mapping `Email` and `mapping`; `values` replace any other field."""
    return Destination.model_validate(
        {
            "name": "marketing",
            "display_name": "Marketing",
            "list_id": "0b6a4a0e-8d1c-4f63-9b8e-8a1f1c3c7c11",
            "api_key_secret": "SENDGRID_KEY_FLOW",
            "segments": ["loyal"],
            "mapping": {"email": "Email", **mapping},
            "consent": Consent(accepted_by="dpo", accepted_at=datetime(2026, 1, 1, tzinfo=UTC)),
            **values,
        }
    )
