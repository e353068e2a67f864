"""The secret providers: Key Vault, or app settings.

With `KEY_VAULT_URI` set, a destination's key is a secret in that Azure Key Vault, read with the
app's identity (`DefaultAzureCredential`: the managed identity in Azure, `AZURE_CLIENT_ID`
choosing a user-assigned one) and cached for `SECRET_CACHE_SECONDS` (300 by default), so a
rotated key is in use within that time and without a restart; while Key Vault cannot be
reached, a bounded stale value is served. Otherwise the name is an app setting / environment
variable (which, in Azure, may itself be a Key Vault reference the platform resolves). Both
follow the rules of `exporter.ports.secrets`; notification targets' URLs and signing secrets
(`notification_secret`) are read the same way, under their own names only (`NOTIFY_URL_<NAME>`,
`NOTIFY_SIGNING_<NAME>`, see `exporter.ports.notifier`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from exporter.adapters.connectivity import KeyVaultUnreachable, key_vault_options
from exporter.core.errors import InputError, Unreachable
from exporter.model.keys import is_key_name, is_notify_signing_name, is_notify_url_name
from exporter.ports.notifier import (
    NotificationSecretMissing,
    SecretKind,
    check_notification_secret,
    notification_secret_missing,
)
from exporter.ports.secrets import (
    SecretAccessDenied,
    SecretNameError,
    SecretProvider,
    SecretUnavailable,
    check_key,
    key_unavailable,
)

log = logging.getLogger(__name__)


DEFAULT_TTL: Final = 300.0
"""Seconds a value read from Key Vault is used before it is read again (powertools' default)."""


MAX_TTL: Final = 86_400.0


DEFAULT_MAX_STALE: Final = 3600.0
"""Seconds past its TTL a cached value may still be served while Key Vault is unreachable."""


STALE_RETRY: Final = 30.0
"""While serving a stale value, ask Key Vault again at most this often (or every TTL if shorter)."""


_KEY_VAULT_NAME: Final = re.compile(r"[0-9A-Za-z-]{1,127}")


_TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})


class EnvSecretProvider:
    """Secrets from app settings (environment variables): only those named like SendGrid keys."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = env

    def get(self, name: str) -> str:
        if not is_key_name(name):
            raise key_unavailable(name)  # not looked up: no other setting is ever read
        env = os.environ if self._env is None else self._env
        value = env.get(name, "").strip()
        if not value:
            raise key_unavailable(name)
        return check_key(name, value)

    def notification_secret(self, name: str, kind: SecretKind) -> str:
        if not _notification_name(name, kind):
            raise notification_secret_missing(name, kind)  # not looked up either
        env = os.environ if self._env is None else self._env
        value = env.get(name, "").strip()
        if not value:
            raise notification_secret_missing(name, kind)
        return check_notification_secret(name, kind, value)

    def __repr__(self) -> str:
        return "EnvSecretProvider()"


def _notification_name(name: str, kind: SecretKind) -> bool:
    return is_notify_url_name(name) if kind == "url" else is_notify_signing_name(name)


class _Secret(Protocol):
    @property
    def value(self) -> str | None: ...


class SecretReader(Protocol):
    """What we use of `azure.keyvault.secrets.SecretClient` (a fake in unit tests)."""

    def get_secret(self, name: str) -> _Secret: ...


@dataclass(slots=True)
class _Entry:
    value: str
    read_at: float
    """Clock time when the read that produced `value` began."""
    next_read: float
    """Serve `value` without asking Key Vault until then."""


class KeyVaultSecretProvider:
    """Secrets from one Azure Key Vault, each cached for `ttl` seconds. Thread-safe.

    After `ttl` the next `get` reads the secret again (the latest version), so a rotation is in
    use within `ttl`. One read per name at a time: concurrent callers wait for it rather than
    asking Key Vault too. When that read fails *transiently* (connection error, timeout, 429 or
    5xx after the SDK's own retries) and the cached value is at most `max_stale` seconds past its
    TTL, the cached value is served with a warning and Key Vault is asked again after
    `min(ttl, 30 s)`: a vault blip must not fail exports with a key read minutes ago, while a
    longer outage still surfaces. A secret that is gone, or access that was revoked, is never
    papered over: those raise at once.
    """

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential | None = None,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_stale: float = DEFAULT_MAX_STALE,
        client: SecretReader | None = None,
        timeouts: tuple[float, float] | None = None,
    ) -> None:
        self.vault_url = _vault_url(vault_url)
        if not 0 <= ttl <= MAX_TTL:
            raise InputError(f"the secret cache TTL must be from 0 to {MAX_TTL:.0f} seconds")
        if max_stale < 0:
            raise InputError("max_stale must not be negative")
        self.ttl = float(ttl)
        self.max_stale = float(max_stale)
        self._clock = clock
        self._owned_credential: DefaultAzureCredential | None = None
        if client is None:
            if credential is None:
                credential = self._owned_credential = DefaultAzureCredential()
            # Bounded retries and timeouts: a trigger waiting minutes on the SDK's defaults
            # (10 retries, backoff up to 2 minutes) is worse than a fast failure the host retries.
            # `timeouts` (connect, read): the CLI's, failing fast.
            options = key_vault_options(self.vault_url, timeouts)
            client = SecretClient(self.vault_url, credential, retry_total=2, **options)
        self._client = client
        self._cache: dict[str, _Entry] = {}
        self._reading: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyVaultSecretProvider(vault_url={self.vault_url!r}, ttl={self.ttl})"

    def get(self, name: str) -> str:
        if not is_key_name(name):
            raise key_unavailable(name)  # not asked for: no other secret is ever read
        check_key_vault_name(name)
        return self._cached(name, lambda value: check_key(name, value), key_unavailable)

    def notification_secret(self, name: str, kind: SecretKind) -> str:
        if not _notification_name(name, kind):
            raise notification_secret_missing(name, kind)  # not asked for either
        check_key_vault_name(name)

        def missing(name: str) -> NotificationSecretMissing:
            return notification_secret_missing(name, kind)

        return self._cached(
            name, lambda value: check_notification_secret(name, kind, value), missing
        )

    def _cached(
        self, name: str, check: Callable[[str], str], missing: Callable[[str], InputError]
    ) -> str:
        with self._guard:
            entry = self._cache.get(name)
            if entry is not None and self._clock() < entry.next_read:
                return entry.value
            reading = self._reading.setdefault(name, threading.Lock())
        with reading:
            with self._guard:
                entry = self._cache.get(name)
            started = self._clock()
            if entry is not None and started < entry.next_read:
                return entry.value  # another thread read it while we waited
            try:
                value = self._read(name, check, missing)
            except SecretUnavailable as exc:
                if entry is None or started - entry.read_at > self.ttl + self.max_stale:
                    raise
                with self._guard:
                    entry.next_read = min(
                        started + min(self.ttl, STALE_RETRY),
                        entry.read_at + self.ttl + self.max_stale,
                    )
                log.warning(
                    "serving the cached secret %r (read %.0f s ago) because Key Vault %s "
                    "is unavailable: %s",
                    name,
                    started - entry.read_at,
                    self.vault_url,
                    exc,
                )
                return entry.value
            except InputError:
                with self._guard:
                    self._cache.pop(name, None)
                raise
            if entry is not None and value != entry.value:
                log.info(
                    "secret %r changed in Key Vault %s: using the new value", name, self.vault_url
                )
            with self._guard:
                self._cache[name] = _Entry(value, started, started + self.ttl)
            return value

    def close(self) -> None:
        """Close the HTTP session (and the credential, when this provider made it)."""
        close: Any = getattr(self._client, "close", None)
        if callable(close):
            close()
        if self._owned_credential is not None:
            self._owned_credential.close()

    def _read(
        self, name: str, check: Callable[[str], str], missing: Callable[[str], InputError]
    ) -> str:
        """One read through the SDK, its errors turned into ours (never with the value)."""
        where = f"secret {name!r} in Key Vault {self.vault_url}"
        try:
            secret = self._client.get_secret(name)
        except ResourceNotFoundError:
            raise missing(name) from None
        except Unreachable as exc:  # the CLI's fail-fast transport
            raise KeyVaultUnreachable(self.vault_url, name, exc) from None
        except ClientAuthenticationError as exc:
            raise SecretAccessDenied(_auth_problem(exc, self.vault_url)) from None
        except HttpResponseError as exc:
            status = exc.status_code
            if status == 403:
                raise SecretAccessDenied(
                    f"the app's identity cannot read secrets in {self.vault_url}: grant it the "
                    f"Key Vault Secrets User role on the vault (reading {name!r} was forbidden: "
                    f"{_service_message(exc)})"
                ) from None
            if status is None or status in _TRANSIENT_STATUS:
                raise SecretUnavailable(
                    f"could not read {where}: HTTP {status}: {_service_message(exc)}"
                ) from None
            raise InputError(
                f"Key Vault refused to read {where}: HTTP {status}: {_service_message(exc)}"
            ) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise KeyVaultUnreachable(self.vault_url, name, exc) from None
        except ValueError as exc:
            # The SDK's challenge checks: the vault asked for a token for another domain, which
            # means KEY_VAULT_URI does not point at a Key Vault.
            raise InputError(f"could not read {where}: {_first_line(str(exc))}") from None
        value = (secret.value or "").strip()
        if not value:
            raise missing(name)
        return check(value)


def check_key_vault_name(name: str) -> None:
    """Key Vault secret names are 1-127 letters, digits and dashes; say so before asking it."""
    if _KEY_VAULT_NAME.fullmatch(name):
        return
    hint = ""
    fixed = re.sub(r"[^0-9A-Za-z-]", "-", name)[:127]
    if fixed.strip("-"):
        hint = f" (for example {fixed!r})"
    raise SecretNameError(
        f"{name!r} cannot be the name of a Key Vault secret: Key Vault secret names are 1 to "
        f"127 letters, digits and dashes; name the destination's secret accordingly{hint}"
    )


def secret_provider(
    env: Mapping[str, str] | None = None, *, timeouts: tuple[float, float] | None = None
) -> SecretProvider:
    """Key Vault when `KEY_VAULT_URI` is set (TTL from `SECRET_CACHE_SECONDS`), else app settings.
    `timeouts` (connect, read; the CLI): Key Vault fails fast (`FailFastTransport`).

    The Key Vault credential reads its own settings (`AZURE_CLIENT_ID`, the managed identity
    endpoint, ...) from the process environment, as the Azure SDK always does.
    """
    env = os.environ if env is None else env
    vault = (env.get("KEY_VAULT_URI") or "").strip()
    if not vault:
        return EnvSecretProvider(env)
    return KeyVaultSecretProvider(
        vault, ttl=_ttl(env.get("SECRET_CACHE_SECONDS")), timeouts=timeouts
    )


def _ttl(value: str | None) -> float:
    if value is None or not value.strip():
        return DEFAULT_TTL
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_TTL:  # also rejects nan
        raise InputError(
            f"SECRET_CACHE_SECONDS must be a number of seconds from 0 to {MAX_TTL:.0f}"
        )
    return seconds


def _vault_url(value: str) -> str:
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path or parts.query:
        raise InputError(
            f"KEY_VAULT_URI must be the vault's URL, like https://<vault-name>.vault.azure.net "
            f"(got {value!r})"
        )
    return url


def _auth_problem(exc: ClientAuthenticationError, vault_url: str) -> str:
    """401 from the vault (a token it does not accept) vs no token at all (the credential)."""
    if exc.response is not None and exc.status_code == 401:
        return (
            f"Key Vault {vault_url} did not accept the app's token ({_service_message(exc)}): "
            "check that the vault belongs to the identity's tenant"
        )
    return (
        f"the app's identity could not get a token for Key Vault {vault_url}: check its managed "
        "identity (AZURE_CLIENT_ID names a user-assigned one) or, locally, your Azure sign-in. "
        f"{_credential_attempts(exc.message or str(exc))}"
    )


def _credential_attempts(message: str, each: int = 240, limit: int = 1500) -> str:
    """What each credential said, on one line, without DefaultAzureCredential's boilerplate."""
    boilerplate = (
        "DefaultAzureCredential failed",
        "Attempted credentials:",
        "To mitigate",
        "Visit ",
    )
    attempts = [
        line if len(line) <= each else line[: each - 3] + "..."
        for line in (raw.strip() for raw in message.splitlines())
        if line and not line.startswith(boilerplate)
    ]
    text = "; ".join(attempts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _service_message(exc: HttpResponseError) -> str:
    """Key Vault's own error code and message (`{"error": {"code", "message"}}`)."""
    error = exc.error
    if error is not None and (error.code or error.message):
        return _first_line(f"{error.code}: {error.message}")
    return _first_line(exc.reason or "no detail")


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
