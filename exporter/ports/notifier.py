"""Telling people about runs: posting a notification to a target's URL, and the secrets behind it.

`Notifier.post` makes one POST and answers with what the target said (`Answer`), or raises
`TargetUnreachable` (no answer: connection refused or dropped, a timeout) or `TargetRefused` (the
URL cannot be posted to: not https, say). Nothing here retries: the notifications queue does
(`exporter.flow.notify`). A target's URL is a secret, so no error, log line or repr quotes it.

The secrets: a target's URL and a webhook's signing secret are read through the secret provider
(`SecretProvider.notification_secret`), only under the names of `exporter.model.keys`
(`NOTIFY_URL_<NAME>`, `NOTIFY_SIGNING_<NAME>`), and used only when they are shaped as such
(`check_notification_secret`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from exporter.core.errors import InputError
from exporter.model.keys import NOTIFY_NAME_RULE
from exporter.model.notifications import signing_problem, url_problem

SecretKind = Literal["url", "signing"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a target answered: its status, when to try again (429's `Retry-After`), and the
    start of its body (masked, printable: for the run's record when it is an error)."""

    status: int
    retry_after: float | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """Worth trying again later: 408, 425, 429 and 5xx."""
        return self.status in (408, 425, 429) or self.status >= 500


class TargetUnreachable(Exception):
    """No answer from the target (connection refused or dropped, DNS, TLS, a timeout): worth
    trying again. The message never holds the URL."""


class TargetRefused(InputError):
    """The URL cannot be posted to (see `exporter.model.notifications.url_problem`): trying
    again will not help."""


class NotificationSecretMissing(InputError):
    """No usable URL or signing secret under the name: nothing is stored there, it is not a name
    such a secret may have, or what is stored is not shaped as one. Never quotes the value."""


class Notifier(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """One POST of `body` (JSON) with `headers`; redirects are not followed."""
        ...


def notification_secret_missing(name: str, kind: SecretKind) -> NotificationSecretMissing:
    """The one error for a name with no usable secret behind it, whatever the reason: it tells
    nothing about which other settings exist."""
    what = "URL" if kind == "url" else "signing secret"
    shown = repr(name) if len(name) <= 130 else repr(name[:127]) + "..."
    return NotificationSecretMissing(
        f"no notification {what} is available under the name {shown}: {NOTIFY_NAME_RULE}"
    )


def check_notification_secret(name: str, kind: SecretKind, value: str) -> str:
    """`value` if it is shaped as a target's URL (https; http only for localhost) or a signing
    secret; else `NotificationSecretMissing` saying why (never quoting it)."""
    problem = url_problem(value) if kind == "url" else signing_problem(value)
    if problem is None:
        return value
    what = "URL" if kind == "url" else "signing secret"
    hint = ""
    if value.startswith("@Microsoft.KeyVault("):
        hint = " (a Key Vault reference the platform did not resolve)"
    raise NotificationSecretMissing(
        f"the secret {name!r} does not hold a usable notification {what}: {problem}{hint}"
    )
