"""Resolving a destination's API-key reference to the key: the interface and its errors.

Every provider refuses a name that does not follow the key-name rule (`exporter.model.keys`)
before it looks anything up, and answers a refused name and a name with nothing stored under it
with the same error (`key_unavailable`), which therefore says nothing about which other
settings exist. A value not shaped like a SendGrid key is refused (`check_key`) and never
returned. No secret value is ever logged, put in an exception message or shown by a repr.
"""

from __future__ import annotations

from typing import Literal, Protocol

from exporter.core.errors import ExporterError, InputError
from exporter.model.keys import _KEY_SHAPE, KEY_NAME_RULE


class SecretNotFound(InputError):
    """No SendGrid key is available under the name: nothing is stored under it, or it is not a
    name an API key may have (the same error for both, see `key_unavailable`)."""


class SecretNotAKey(InputError):
    """The secret holds something that is not a SendGrid API key; it was not used."""


class SecretNameError(InputError):
    """The name cannot be a secret's name where we look for it (Key Vault's naming rules)."""


class SecretAccessDenied(InputError):
    """The app's identity cannot get a token for the vault, or may not read its secrets.
    Retrying will not help; a role assignment or the identity's configuration will."""


class SecretUnavailable(ExporterError):
    """Key Vault could not be reached or answered with a server error: try again later.
    Not an `InputError`, so the Functions host retries the message."""


class SecretProvider(Protocol):
    def get(self, name: str) -> str: ...

    def notification_secret(self, name: str, kind: Literal["url", "signing"]) -> str:
        """A notification target's URL or signing secret, by the rules of
        `exporter.ports.notifier` (`NotificationSecretMissing` when none is usable)."""
        ...


def key_unavailable(name: str) -> SecretNotFound:
    """The one error for a name with no SendGrid key behind it, whether nothing is stored under
    it or it is not a key's name: it tells a caller nothing about which settings exist."""
    return SecretNotFound(
        f"no SendGrid key is available under the name {_shown(name)}: {KEY_NAME_RULE}"
    )


def check_key(name: str, value: str) -> str:
    """`value` if it is shaped like a SendGrid API key, else `SecretNotAKey` (never quoting it)."""
    if _KEY_SHAPE.fullmatch(value):
        return value
    hint = ""
    if value.startswith("@Microsoft.KeyVault("):
        hint = (
            " (it holds a Key Vault reference the platform did not resolve: check the "
            "reference and the app's access to the vault)"
        )
    raise SecretNotAKey(
        f"the secret {_shown(name)} does not hold a SendGrid API key (SG. followed by the "
        f"key's letters, digits, '.', '-' and '_'){hint}: nothing was sent with it"
    )


def _shown(name: str) -> str:
    """A name as it may appear in a message: never something that looks like a key, at most
    about 130 characters."""
    if name.startswith("SG."):
        return "(a value that looks like an API key, not a name)"
    return repr(name) if len(name) <= 130 else repr(name[:127]) + "..."
