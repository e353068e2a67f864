"""Destination API keys from Key Vault, over HTTPS, through the real SDK path.

`KeyVaultSecretProvider` runs as in Azure: `SecretClient` + `DefaultAzureCredential`, configured
only by environment variables. The credential finds the App Service / Functions managed identity
(`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`, and `AZURE_CLIENT_ID` for the user-assigned identity),
exactly what the Functions host provides; the vault is the local stand-in
(`exporter.local.keyvault`), which answers the SDK's unauthenticated first request with Key
Vault's bearer challenge and checks every token. The one thing adjusted is name resolution:
`kv.localhost` resolves to loopback (see `resolve_localhost_subdomains`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from exporter.adapters.secrets import KeyVaultSecretProvider
from exporter.ports.secrets import SecretAccessDenied, SecretNameError, SecretNotFound
from tests.support.keyvault import KeyVaultProcess, resolve_localhost_subdomains, start_keyvault

pytestmark = pytest.mark.functional

APP_IDENTITY = "3f1c9a52-6a0e-4f43-9d55-0a1b2c3d4e5f"
"""The function app's user-assigned managed identity (its client id)."""
UNPRIVILEGED_IDENTITY = "9b8a7c6d-0000-4e1f-8a2b-3c4d5e6f7a8b"
"""A managed identity without a role on the vault."""
IDENTITY_HEADER = "local-identity-header-7d1f"
SERVICE_PRINCIPAL = "5e6f7a8b-1111-4c2d-9e3f-4a5b6c7d8e9f"
SERVICE_PRINCIPAL_SECRET = "sp-secret-value-0b3e"
KEY = "SG.first-key-value.abcdefghijklmnop"
ROTATED = "SG.rotated-key-value.qrstuvwxyz012345"

_CREDENTIAL_SETTINGS = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture
def keyvault(tmp_path: Path) -> Iterator[KeyVaultProcess]:
    """A stand-in per test (a fresh port is also a fresh entry in the SDK's process-wide
    challenge cache), stopped by PID afterwards, also when the test fails."""
    process = start_keyvault(
        "--managed-identity",
        APP_IDENTITY,
        "--managed-identity",
        UNPRIVILEGED_IDENTITY,
        "--deny",
        UNPRIVILEGED_IDENTITY,
        "--identity-header",
        IDENTITY_HEADER,
        "--client",
        f"{SERVICE_PRINCIPAL}={SERVICE_PRINCIPAL_SECRET}",
        cert_dir=tmp_path / "certs",
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def azure_env(keyvault: KeyVaultProcess, monkeypatch: pytest.MonkeyPatch) -> KeyVaultProcess:
    """The environment the Functions host gives an app with a user-assigned identity, pointed
    at the stand-in; nothing of the developer's own Azure settings leaks in."""
    for name in _CREDENTIAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{keyvault.authority}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    monkeypatch.setenv("AZURE_CLIENT_ID", APP_IDENTITY)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(keyvault.ca))
    resolve_localhost_subdomains(monkeypatch)
    return keyvault


@pytest.fixture
def providers() -> Iterator[Callable[..., KeyVaultSecretProvider]]:
    """`make(vault_url, **options)`: providers that are closed after the test."""
    made: list[KeyVaultSecretProvider] = []

    def make(vault_url: str, **options: Any) -> KeyVaultSecretProvider:
        provider = KeyVaultSecretProvider(vault_url, **options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reads_a_secret_through_the_challenge_and_the_managed_identity(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    azure_env.put_secret("sendgrid-key", KEY)

    assert providers(azure_env.vault_url).get("sendgrid-key") == KEY

    # The SDK's first request carries no token and is challenged; the credential asks the
    # managed identity endpoint for a token for the challenge's resource; then the real read.
    assert azure_env.requests() == {
        "GET /secrets/sendgrid-key/ 401": 1,
        "GET /msi/token 200": 1,
        "GET /secrets/sendgrid-key/ 200": 1,
    }


def test_a_second_get_within_the_ttl_makes_no_http_call(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    azure_env.put_secret("sendgrid-key", KEY)
    provider = providers(azure_env.vault_url, ttl=60)
    assert provider.get("sendgrid-key") == KEY
    before = azure_env.requests()

    assert [provider.get("sendgrid-key") for _ in range(5)] == [KEY] * 5

    assert azure_env.requests() == before


def test_a_rotation_is_picked_up_after_the_ttl(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    azure_env.put_secret("sendgrid-key", KEY)
    provider = providers(azure_env.vault_url, ttl=0.5)
    assert provider.get("sendgrid-key") == KEY
    read_at = time.monotonic()

    # Rotate as an operator would: a new version through the SDK, with a token of its own.
    with SecretClient(azure_env.vault_url, DefaultAzureCredential()) as admin:
        assert admin.set_secret("sendgrid-key", ROTATED).value == ROTATED
    assert azure_env.requests()["PUT /secrets/sendgrid-key 200"] == 1

    if time.monotonic() - read_at < 0.4:  # still well within the TTL: the cached key
        assert provider.get("sendgrid-key") == KEY
    time.sleep(max(0.0, read_at + 0.55 - time.monotonic()))
    assert provider.get("sendgrid-key") == ROTATED
    assert azure_env.requests()["GET /secrets/sendgrid-key/ 200"] == 2


def test_the_rotation_is_served_old_within_and_new_after_the_ttl_on_an_injected_clock(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    clock = Clock()
    azure_env.put_secret("sendgrid-key", KEY)
    provider = providers(azure_env.vault_url, ttl=300, clock=clock)
    assert provider.get("sendgrid-key") == KEY
    azure_env.put_secret("sendgrid-key", ROTATED)

    clock.now += 299.9
    assert provider.get("sendgrid-key") == KEY
    assert azure_env.requests()["GET /secrets/sendgrid-key/ 200"] == 1
    clock.now += 0.1
    assert provider.get("sendgrid-key") == ROTATED
    assert azure_env.requests()["GET /secrets/sendgrid-key/ 200"] == 2


def test_a_vault_outage_serves_the_cached_key_for_a_bounded_time(
    azure_env: KeyVaultProcess,
    providers: Callable[..., KeyVaultSecretProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    azure_env.put_secret("sendgrid-key", KEY)
    provider = providers(azure_env.vault_url, ttl=10, clock=clock, max_stale=60)
    assert provider.get("sendgrid-key") == KEY
    azure_env.put_secret("sendgrid-key", ROTATED)
    azure_env.faults(error_rate=1.0)

    clock.now += 10
    with caplog.at_level(logging.WARNING, logger="exporter.adapters.secrets"):
        assert provider.get("sendgrid-key") == KEY  # the SDK retried twice, then we served stale
    assert "serving the cached secret 'sendgrid-key'" in caplog.text
    assert azure_env.requests()["GET /secrets/sendgrid-key/ 503"] == 3
    clock.now += 5  # within the retry pause: no call at all
    assert provider.get("sendgrid-key") == KEY
    assert azure_env.requests()["GET /secrets/sendgrid-key/ 503"] == 3

    azure_env.faults(error_rate=0.0)
    clock.now += 5
    assert provider.get("sendgrid-key") == ROTATED


def test_an_unknown_secret_is_answered_as_a_name_that_is_not_a_keys(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    vault = providers(azure_env.vault_url)
    with pytest.raises(SecretNotFound) as unknown:
        vault.get("sendgrid-key-no-such")
    assert azure_env.requests()["GET /secrets/sendgrid-key-no-such/ 404"] == 1
    with pytest.raises(SecretNotFound) as refused:
        vault.get("storage-connection")  # not a key's name: the vault is not even asked
    assert not any("storage-connection" in r for r in azure_env.requests())
    # The same answer either way, naming the rule and neither the vault nor what it holds.
    assert str(unknown.value).replace("sendgrid-key-no-such", "X") == str(refused.value).replace(
        "storage-connection", "X"
    )
    assert azure_env.vault_url not in str(unknown.value)


def test_an_underscore_name_is_refused_before_any_call(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    with pytest.raises(SecretNameError, match="letters, digits and dashes") as raised:
        providers(azure_env.vault_url).get("SENDGRID_KEY")

    assert "'SENDGRID-KEY'" in str(raised.value)
    assert azure_env.requests() == {}


def test_an_identity_without_a_role_is_told_to_get_one(
    azure_env: KeyVaultProcess,
    providers: Callable[..., KeyVaultSecretProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", UNPRIVILEGED_IDENTITY)
    azure_env.put_secret("sendgrid-key", KEY)

    with pytest.raises(SecretAccessDenied) as raised:
        providers(azure_env.vault_url).get("sendgrid-key")

    message = str(raised.value)
    assert f"cannot read secrets in {azure_env.vault_url}" in message
    assert "Key Vault Secrets User" in message
    assert KEY not in message


def test_a_revoked_token_is_a_clear_auth_error(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    clock = Clock()
    azure_env.put_secret("sendgrid-key", KEY)
    provider = providers(azure_env.vault_url, ttl=10, clock=clock)
    assert provider.get("sendgrid-key") == KEY
    azure_env.revoke_tokens()

    clock.now += 10
    with pytest.raises(SecretAccessDenied, match="did not accept the app's token"):
        provider.get("sendgrid-key")
    assert azure_env.requests()["GET /secrets/sendgrid-key/ 401"] >= 2


def test_a_wrong_managed_identity_header_is_a_clear_auth_error(
    azure_env: KeyVaultProcess,
    providers: Callable[..., KeyVaultSecretProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    azure_env.put_secret("sendgrid-key", KEY)

    with pytest.raises(SecretAccessDenied, match="could not get a token") as raised:
        providers(azure_env.vault_url).get("sendgrid-key")

    assert azure_env.vault_url in str(raised.value)
    assert "X-IDENTITY-HEADER is not valid" in str(raised.value)
    assert azure_env.requests()["GET /msi/token 401"] >= 1


def test_a_service_principal_signs_in_at_the_stand_in_authority(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    """Client credentials (OpenID discovery + token endpoint). Given as a credential object:
    from environment variables alone (EnvironmentCredential), MSAL first validates any authority
    it does not know with login.microsoftonline.com ("instance discovery"), which only the
    `disable_instance_discovery` argument turns off."""
    azure_env.put_secret("sendgrid-key", KEY)
    credential = ClientSecretCredential(
        azure_env.tenant,
        SERVICE_PRINCIPAL,
        SERVICE_PRINCIPAL_SECRET,
        authority=azure_env.authority,
        disable_instance_discovery=True,
    )

    assert providers(azure_env.vault_url, credential=credential).get("sendgrid-key") == KEY
    assert azure_env.requests()[f"POST /{azure_env.tenant}/oauth2/v2.0/token 200"] == 1


def test_a_bad_client_secret_is_a_clear_auth_error(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    azure_env.put_secret("sendgrid-key", KEY)
    credential = ClientSecretCredential(
        azure_env.tenant,
        SERVICE_PRINCIPAL,
        "not-the-secret",
        authority=azure_env.authority,
        disable_instance_discovery=True,
    )

    with pytest.raises(SecretAccessDenied) as raised:
        providers(azure_env.vault_url, credential=credential).get("sendgrid-key")

    message = str(raised.value)
    assert f"could not get a token for Key Vault {azure_env.vault_url}" in message
    assert "AADSTS7000215" in message
    assert "not-the-secret" not in message
    assert azure_env.requests()[f"POST /{azure_env.tenant}/oauth2/v2.0/token 401"] == 1


def test_concurrent_readers_share_one_read(
    azure_env: KeyVaultProcess, providers: Callable[..., KeyVaultSecretProvider]
) -> None:
    azure_env.put_secret("sendgrid-key", KEY)
    provider = providers(azure_env.vault_url, ttl=60)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(provider.get("sendgrid-key")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results == [KEY] * 8
    assert azure_env.requests()["GET /secrets/sendgrid-key/ 200"] == 1


def test_no_secret_value_appears_in_any_log(
    azure_env: KeyVaultProcess,
    providers: Callable[..., KeyVaultSecretProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every logger at DEBUG (the SDK's HTTP logging policy logs headers, redacted; bodies only
    with `logging_enable`, which we never set)."""
    clock = Clock()
    azure_env.put_secret("sendgrid-key", KEY)
    with caplog.at_level(logging.DEBUG):
        provider = providers(azure_env.vault_url, ttl=10, clock=clock)
        assert provider.get("sendgrid-key") == KEY
        azure_env.put_secret("sendgrid-key", ROTATED)
        clock.now += 10
        assert provider.get("sendgrid-key") == ROTATED
        with pytest.raises(SecretNotFound):
            provider.get("missing")

    assert caplog.records, "expected the SDK's own log lines"
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for value in (KEY, ROTATED):
        assert value not in logged
        assert value not in repr(provider)
        assert value not in azure_env.output()
