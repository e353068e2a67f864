"""The flow's structured log lines: ids and counts, never an address or a key."""

from __future__ import annotations

import logging

from exporter.core.redact import mask_emails

log = logging.getLogger("exporter.flow.runs")


def event(name: str, **fields: object) -> None:
    """One structured log line (`run finished run_id=… state=…`); callers pass ids and counts."""
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.info("%s %s", name, mask_emails(text))


def brief(exc: BaseException) -> str:
    """An exception as one line for a run's record: its type and message, addresses masked."""
    return mask_emails(f"{type(exc).__name__}: {exc}")[:2000]
