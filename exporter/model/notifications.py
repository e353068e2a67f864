"""Notifications: whom a destination tells about its runs, of what, and how each telling went.

A destination lists its targets (`NotificationTarget`): a webhook (a JSON payload signed with
HMAC-SHA256), a Slack or a Microsoft Teams incoming webhook, each with the events it wants:

- `run_failed`: a run of the destination ended `failed`;
- `list_drift`: the run's looks at its list found it different from the segment twice, a lag
  apart (after healing it, when it could): what SendGrid holds is not what the segment says;
- `rejects_above`: more than `reject_share` of the snapshot's rows were rejected;
- `list_ready`: the run succeeded, so every change it made is applied in SendGrid (read back and
  found equal, or, on a run that does not read its list back, every import job completed with
  every contact taken): a Single Send to the list reaches the whole segment.

A target's URL is a secret (a Slack or Teams webhook URL is all it takes to post to the channel),
so a destination names it (`url_secret`, `NOTIFY_URL_<NAME>`) as it names its API key, and so is
a webhook's signing secret (`signing_secret`, `NOTIFY_SIGNING_<NAME>`): see
`exporter.model.keys`. How each notification went is recorded on its run (`NotificationRecord`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from exporter.core.errors import InputError
from exporter.model.keys import NOTIFY_NAME_RULE, is_notify_signing_name, is_notify_url_name

NotifyEvent = Literal["run_failed", "list_drift", "rejects_above", "list_ready"]
TargetKind = Literal["webhook", "slack", "teams"]
NotifyState = Literal["queued", "delivered", "failed"]

EVENTS: Final[tuple[NotifyEvent, ...]] = get_args(NotifyEvent)
KINDS: Final[tuple[TargetKind, ...]] = get_args(TargetKind)

TARGET_PATTERN: Final = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"
"""A target's name: 1 to 32 lower-case letters, digits and dashes (it names its secrets)."""

MAX_TARGETS: Final = 10
"""Targets one destination notifies (each run records each target's notifications)."""

DEFAULT_REJECT_SHARE: Final = 0.05

MAX_URL: Final = 2048
MIN_SIGNING: Final = 16
MAX_SIGNING: Final = 512
MAX_ERROR: Final = 300
"""Characters of a delivery's last error kept on the run."""

LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
"""Where a target may be plain http (a receiver on this machine); anywhere else: https only."""

SIGNATURE_HEADER: Final = "X-Exporter-Signature"
EVENT_HEADER: Final = "X-Exporter-Event"
DELIVERY_HEADER: Final = "X-Exporter-Delivery"
SIGNATURE_TOLERANCE: Final = 300
"""Seconds a receiver should accept a signature's time `t` away from its own clock."""


def secret_suffix(name: str) -> str:
    """`ops-hook` -> `OPS_HOOK`: how a target's name appears in its secrets' default names."""
    return name.upper().replace("-", "_")


class NotificationTarget(BaseModel):
    """One target of a destination's notifications, and the events it wants."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(pattern=TARGET_PATTERN, description="lower-case letters, digits, dashes")
    kind: TargetKind
    url_secret: str = Field(
        default="",
        max_length=127,
        description="the app setting / Key Vault secret holding the URL: NOTIFY_URL_<NAME> "
        "(default: NOTIFY_URL_ + the target's name)",
    )
    signing_secret: str = Field(
        default="",
        max_length=127,
        description="webhook: the secret its payloads are signed with: NOTIFY_SIGNING_<NAME> "
        "(default: NOTIFY_SIGNING_ + the target's name); none for Slack and Teams",
    )
    events: list[NotifyEvent] = Field(default_factory=lambda: list(EVENTS), min_length=1)
    reject_share: float = Field(
        default=DEFAULT_REJECT_SHARE,
        ge=0,
        le=1,
        description="rejects_above: notify when more than this share of the rows is rejected",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return data
        suffix = secret_suffix(data["name"])
        data = dict(data)
        if not data.get("url_secret"):
            data["url_secret"] = f"NOTIFY_URL_{suffix}"
        if data.get("kind") == "webhook" and not data.get("signing_secret"):
            data["signing_secret"] = f"NOTIFY_SIGNING_{suffix}"
        return data

    @field_validator("url_secret")
    @classmethod
    def _url_name(cls, value: str, info: ValidationInfo) -> str:
        if "://" in value:
            raise ValueError(
                "must be the *name* of an app setting or Key Vault secret holding the URL, "
                "never the URL itself"
            )
        if not is_notify_url_name(value) and not _stored(info):
            raise ValueError(f"{value!r} is not a name a target's URL may have: {NOTIFY_NAME_RULE}")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _signing_name(cls, value: str, info: ValidationInfo) -> str:
        if value and not is_notify_signing_name(value) and not _stored(info):
            raise ValueError(
                f"{value!r} is not a name a signing secret may have: {NOTIFY_NAME_RULE}"
            )
        return value

    @field_validator("events")
    @classmethod
    def _once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an event is listed more than once")
        return value

    @model_validator(mode="after")
    def _signing_for_webhooks(self) -> NotificationTarget:
        if self.kind != "webhook" and self.signing_secret:
            raise ValueError(
                f"{self.kind} targets are not signed (their URL is the secret): "
                "signing_secret is for webhooks"
            )
        return self


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def check_targets(targets: list[NotificationTarget]) -> list[NotificationTarget]:
    """At most `MAX_TARGETS`, names unique (a destination's `notifications`)."""
    if len(targets) > MAX_TARGETS:
        raise ValueError(f"at most {MAX_TARGETS} notification targets ({len(targets)} given)")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError("two notification targets have the same name")
    return targets


def parse_target_spec(spec: str) -> dict[str, Any]:
    """A target as the CLI writes it, `NAME=KIND[:EVENTS[:URL_SECRET[:SIGNING_SECRET]]]`, EVENTS
    comma-separated, `rejects_above=SHARE` setting the share (`ops=webhook:run_failed,
    rejects_above=0.02,list_ready`): a target document, validated with the destination."""
    name, sep, rest = spec.partition("=")
    parts = rest.split(":")
    if not sep or not name.strip() or not parts[0].strip() or len(parts) > 4:
        raise InputError(
            f"--notify {spec[:80]!r}: expected NAME=KIND[:EVENTS[:URL_SECRET[:SIGNING_SECRET]]] "
            f"(KIND one of {', '.join(KINDS)}; EVENTS comma-separated of {', '.join(EVENTS)})"
        )
    target: dict[str, Any] = {"name": name.strip(), "kind": parts[0].strip()}
    if len(parts) > 1 and parts[1].strip():
        events: list[str] = []
        for item in parts[1].split(","):
            event, eq, share = item.strip().partition("=")
            if eq:
                if event != "rejects_above":
                    raise InputError(f"--notify {name!r}: only rejects_above takes a share")
                try:
                    target["reject_share"] = float(share)
                except ValueError:
                    raise InputError(
                        f"--notify {name!r}: rejects_above={share[:20]!r} is not a share "
                        "(a number from 0 to 1)"
                    ) from None
            if event:
                events.append(event)
        target["events"] = events
    if len(parts) > 2 and parts[2].strip():
        target["url_secret"] = parts[2].strip()
    if len(parts) > 3 and parts[3].strip():
        target["signing_secret"] = parts[3].strip()
    return target


# --- what a secret may hold ------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a target's URL (never quoting it: it is a secret), or None."""
    if len(url) > MAX_URL:
        return f"it is over {MAX_URL:,} characters"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it holds spaces or unprintable characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        return "it is not a URL"
    if not host:
        return "it is not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "it holds a user name or password (put credentials in the path or a secret)"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and _local(host):
        return None
    return "a target's URL must be https (plain http only for localhost)"


def _local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def signing_problem(secret: str) -> str | None:
    """Why `secret` cannot sign webhook payloads (never quoting it), or None."""
    if not MIN_SIGNING <= len(secret) <= MAX_SIGNING:
        return f"a signing secret is {MIN_SIGNING} to {MAX_SIGNING} characters"
    if not secret.isascii() or any(c.isspace() or not c.isprintable() for c in secret):
        return "a signing secret is printable ASCII without spaces"
    return None


# --- the signature ---------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Exporter-Signature` header's value: `t=<unix time>,v1=<hex HMAC-SHA256 of
    "<t>.<body>" keyed with the signing secret>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance: float = SIGNATURE_TOLERANCE
) -> bool:
    """What a receiver does: the header's `t` is within `tolerance` seconds of `now` and its
    `v1` is the HMAC of `"<t>.<body>"` (compared in constant time)."""
    items = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(items.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).rpartition("v1=")[2]
    return hmac.compare_digest(expected, items.get("v1", ""))


# --- how each notification of a run went -----------------------------------------------------


@dataclass(slots=True)
class NotificationRecord:
    """One notification of a run: one target x one event (on `RunRecord.notifications`).

    Plain values only (times as ISO 8601 text), so the record is stored as JSON as it is."""

    target: str
    kind: str
    event: str
    state: str = "queued"
    """`queued` (waiting, or retrying after `attempts` failed), `delivered` or `failed`."""
    attempts: int = 0
    """Delivery attempts so far (each a POST, or a try whose secret could not be read)."""
    status: int = 0
    """The last answer's HTTP status (0: none, e.g. a timeout)."""
    error: str = ""
    """Why the last attempt failed (never the URL)."""
    queued_at: str = ""
    updated_at: str = ""

    @property
    def settled(self) -> bool:
        return self.state in ("delivered", "failed")


_RECORD_FIELDS: Final = frozenset(f.name for f in fields(NotificationRecord))


def record_from(data: dict[str, Any]) -> NotificationRecord:
    """A stored record (a dict of its JSON), ignoring fields this version does not know."""
    return NotificationRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


def delivery_id(run_id: str, target: str, event: str) -> str:
    """The notification's id, the same on every attempt (`X-Exporter-Delivery`): a receiver that
    sees it twice has seen one notification."""
    return f"{run_id}.{target}.{event}"
