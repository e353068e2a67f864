"""Which names may hold a SendGrid API key (or a notification target's URL or signing secret),
and what a key looks like.

A destination names its key (`api_key_secret`); only names following `KEY_NAME_PATTERN`
(`SENDGRID_KEY` or `SENDGRID_KEY_<NAME>`, any case, `-` and `_` alike, so
`sendgrid-key-marketing` in Key Vault) can be read, so no destination can have another setting
or vault secret sent to SendGrid as a bearer token. A value is used only when it is shaped like
a SendGrid key (`KEY_SHAPE`).
"""

from __future__ import annotations

import re
from typing import Final

KEY_NAME_PATTERN: Final = r"^SENDGRID[_-]KEY(?:[_-][A-Za-z0-9]+)*$"
"""The names an API key may be stored under (case-insensitive, `_` and `-` alike, at most
`MAX_KEY_NAME` characters): `SENDGRID_KEY`, `SENDGRID_KEY_MARKETING`, `sendgrid-key-marketing-2`
(Key Vault secret names allow only letters, digits and dashes: there, use dashes)."""


MAX_KEY_NAME: Final = 127


KEY_NAME_RULE: Final = (
    "store the key as an app setting or Key Vault secret named SENDGRID_KEY_<NAME> "
    "(in Key Vault: SENDGRID-KEY-<NAME>; letters and digits, words joined by _ or -); "
    "the app reads API keys under no other names"
)


KEY_SHAPE: Final = r"^SG\.[A-Za-z0-9_.-]{1,252}$"
"""What a SendGrid API key looks like: `SG.` then base64url characters and dots (a real key is
`SG.` + 22 + `.` + 43 characters). Anything else is never sent as a bearer token."""


_KEY_NAME: Final = re.compile(KEY_NAME_PATTERN, re.IGNORECASE)


_KEY_SHAPE: Final = re.compile(KEY_SHAPE)


def is_key_name(name: str) -> bool:
    """Whether an API key may be stored under `name` (`KEY_NAME_PATTERN`)."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_KEY_NAME
        and _KEY_NAME.fullmatch(name) is not None
    )


# --- notification targets' secrets (see `exporter.model.notifications`) ----------------------

NOTIFY_URL_PATTERN: Final = r"^NOTIFY[_-]URL(?:[_-][A-Za-z0-9]+)+$"
"""The names a notification target's URL may be stored under: `NOTIFY_URL_<NAME>` (in Key Vault
`NOTIFY-URL-<NAME>`; any case, `_` and `-` alike). A target's URL is a secret: a Slack or Teams
incoming-webhook URL is all it takes to post to the channel."""


NOTIFY_SIGNING_PATTERN: Final = r"^NOTIFY[_-]SIGNING(?:[_-][A-Za-z0-9]+)+$"
"""The names a webhook target's signing secret may be stored under: `NOTIFY_SIGNING_<NAME>`."""


NOTIFY_NAME_RULE: Final = (
    "store a notification target's URL as an app setting or Key Vault secret named "
    "NOTIFY_URL_<NAME> and a webhook's signing secret as NOTIFY_SIGNING_<NAME> (in Key Vault: "
    "NOTIFY-URL-<NAME>, NOTIFY-SIGNING-<NAME>); the app reads them under no other names"
)


_NOTIFY_URL: Final = re.compile(NOTIFY_URL_PATTERN, re.IGNORECASE)


_NOTIFY_SIGNING: Final = re.compile(NOTIFY_SIGNING_PATTERN, re.IGNORECASE)


def is_notify_url_name(name: str) -> bool:
    """Whether a notification target's URL may be stored under `name`."""
    return _bounded(name) and _NOTIFY_URL.fullmatch(name) is not None


def is_notify_signing_name(name: str) -> bool:
    """Whether a webhook target's signing secret may be stored under `name`."""
    return _bounded(name) and _NOTIFY_SIGNING.fullmatch(name) is not None


def _bounded(name: str) -> bool:
    return isinstance(name, str) and len(name) <= MAX_KEY_NAME
