"""Resolve a destination's API-key *reference* to the key itself, at the moment it is needed.

A destination stores only the name of its secret. Locally (and in Azure when the app setting is
itself a Key Vault reference) the name is an app setting / environment variable. Key Vault with
a TTL cache comes with destination management; it will plug in behind the same interface.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from exporter.errors import InputError


class SecretNotFound(InputError):
    """The named secret does not exist where we look for it."""


class SecretProvider(Protocol):
    def get(self, name: str) -> str: ...


class EnvSecretProvider:
    """Secrets from app settings (environment variables)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = env

    def get(self, name: str) -> str:
        env = os.environ if self._env is None else self._env
        value = env.get(name, "").strip()
        if not value:
            raise SecretNotFound(
                f"the API key secret {name!r} is not set: add an app setting named {name} "
                "holding the SendGrid API key (or a Key Vault reference to it)"
            )
        return value

    def __repr__(self) -> str:
        return "EnvSecretProvider()"
