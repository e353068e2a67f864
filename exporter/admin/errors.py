"""The administration's errors: the caller (CLI exit code, HTTP status) tells them apart by type."""

from __future__ import annotations

from exporter.core.errors import ExporterError, InputError


class NotFoundError(InputError):
    """The named destination, run or snapshot does not exist."""


class ConflictError(InputError):
    """The request contradicts what exists: a name already taken, a list name several lists
    share, an export to a destination without recorded consent."""


class SendGridRefused(ExporterError):
    """SendGrid refused the destination's key or list: the key or the list must change."""


class TooLarge(InputError):
    """A request body or document over `MAX_BODY_BYTES` (HTTP 413): not parsed."""


class RemovalIncomplete(ExporterError):
    """Storage failed in the middle of a removal: what is done stays done, and the same removal
    again finishes the rest (HTTP 503, CLI exit 1)."""
