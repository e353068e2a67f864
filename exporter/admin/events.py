"""The administration's structured log lines: names, ids and counts only.

Nothing the administration logs holds an API key (only its reference) or an email address.
The logger keeps the name `exporter.admin.commands`, the one log queries know it by.
"""

from __future__ import annotations

import logging

from exporter.core.redact import mask_emails

log = logging.getLogger("exporter.admin.commands")


def event(event: str, **fields: object) -> None:
    """One structured log line: names, ids and counts only."""
    log.info("%s %s", event, mask_emails(" ".join(f"{k}={v}" for k, v in fields.items())))
