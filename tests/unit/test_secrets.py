"""The secret providers' own logic, on a fake vault client and an injected clock: the TTL cache,
serving stale values through a transient outage (and only then), errors a person can act on,
names Key Vault accepts, the factory, and `Services.sendgrid` replacing a client on rotation;
and that only SendGrid keys can be read: other names refused unread (with the answer a name with
nothing stored under it gets), values not shaped like a key never returned."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from exporter.adapters.secrets import (
    EnvSecretProvider,
    KeyVaultSecretProvider,
    check_key_vault_name,
    secret_provider,
)
from exporter.adapters.settings import SendGridSettings
from exporter.core.errors import InputError
from exporter.flow.services import Services
from exporter.model.destinations import Destination
from exporter.model.keys import is_key_name
from exporter.ports.secrets import (
    SecretAccessDenied,
    SecretNameError,
    SecretNotAKey,
    SecretNotFound,
    SecretUnavailable,
    check_key,
    key_unavailable,
)

VAULT = "https://contoso-exports.vault.azure.net"
KEY = "SG.unit-test-key-one"
ROTATED = "SG.unit-test-key-two"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeResponse:
    """Enough of an azure-core response for `HttpResponseError` to parse Key Vault's body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers: dict[str, str] = {}
        self.request = None
        self.content_type = "application/json"
        self._body = json.dumps({"error": {"code": code, "message": message}})

    def text(self, encoding: str | None = None) -> str:
        return self._body


def http_error(kind: type[HttpResponseError], status: int, code: str, message: str) -> Any:
    return kind(response=FakeResponse(status, code, message))  # type: ignore[arg-type]


@dataclass
class FakeVault:
    """A `SecretClient` stand-in: values by name, a call log, an optional failure."""

    values: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail: BaseException | None = None
    delay: float = 0.0

    def get_secret(self, name: str) -> Any:
        self.calls.append(name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if name not in self.values:
            raise http_error(ResourceNotFoundError, 404, "SecretNotFound", "not found")
        return SimpleNamespace(value=self.values[name])


def provider(vault: FakeVault, clock: Clock, **options: Any) -> KeyVaultSecretProvider:
    return KeyVaultSecretProvider(VAULT, ttl=300, clock=clock, client=vault, **options)


# --- the TTL cache ---------------------------------------------------------------------------


def test_a_value_is_read_once_per_ttl() -> None:
    vault, clock = FakeVault({"sendgrid-key-test": KEY}), Clock()
    secrets = provider(vault, clock)

    assert secrets.get("sendgrid-key-test") == KEY
    clock.now += 299.999
    assert secrets.get("sendgrid-key-test") == KEY
    assert vault.calls == ["sendgrid-key-test"]

    clock.now += 0.001  # exactly the TTL: read again
    assert secrets.get("sendgrid-key-test") == KEY
    assert vault.calls == ["sendgrid-key-test", "sendgrid-key-test"]


def test_a_rotation_is_served_after_the_ttl_and_logged_without_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault, clock = FakeVault({"sendgrid-key-test": KEY}), Clock()
    secrets = provider(vault, clock)
    assert secrets.get("sendgrid-key-test") == KEY
    vault.values["sendgrid-key-test"] = ROTATED

    clock.now += 100
    assert secrets.get("sendgrid-key-test") == KEY
    clock.now += 200
    with caplog.at_level(logging.DEBUG):
        assert secrets.get("sendgrid-key-test") == ROTATED
    assert "secret 'sendgrid-key-test' changed" in caplog.text
    assert KEY not in caplog.text and ROTATED not in caplog.text


def test_names_are_cached_separately() -> None:
    vault, clock = FakeVault({"sendgrid-key-a": "SG.a", "sendgrid-key-b": "SG.b"}), Clock()
    secrets = provider(vault, clock)

    a, b = "sendgrid-key-a", "sendgrid-key-b"
    assert (secrets.get(a), secrets.get(b), secrets.get(a)) == ("SG.a", "SG.b", "SG.a")
    assert vault.calls == [a, b]


def test_a_zero_ttl_reads_every_time() -> None:
    vault, clock = FakeVault({"sendgrid-key-test": KEY}), Clock()
    secrets = KeyVaultSecretProvider(VAULT, ttl=0, clock=clock, client=vault)

    secrets.get("sendgrid-key-test")
    secrets.get("sendgrid-key-test")
    assert len(vault.calls) == 2


def test_values_are_stripped_and_an_empty_one_is_not_found() -> None:
    vault, clock = (
        FakeVault({"sendgrid-key-test": f"  {KEY}\n", "sendgrid-key-blank": " \n"}),
        Clock(),
    )
    secrets = provider(vault, clock)

    assert secrets.get("sendgrid-key-test") == KEY
    with pytest.raises(SecretNotFound, match="no SendGrid key is available under the name "):
        secrets.get("sendgrid-key-blank")


def test_concurrent_callers_at_expiry_share_one_read() -> None:
    vault, clock = FakeVault({"sendgrid-key-test": KEY}, delay=0.05), Clock()
    secrets = provider(vault, clock)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(secrets.get("sendgrid-key-test")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert results == [KEY] * 8
    assert vault.calls == ["sendgrid-key-test"]


# --- stale values through transient failures -------------------------------------------------


def test_a_transient_failure_serves_the_cached_value_and_pauses_before_asking_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault, clock = FakeVault({"sendgrid-key-test": KEY}), Clock()
    secrets = provider(vault, clock, max_stale=3600)
    secrets.get("sendgrid-key-test")
    vault.fail = http_error(HttpResponseError, 503, "ServiceUnavailable", "try later")

    clock.now += 300
    with caplog.at_level(logging.WARNING):
        assert secrets.get("sendgrid-key-test") == KEY
    assert "serving the cached secret 'sendgrid-key-test' (read 300 s ago)" in caplog.text
    assert KEY not in caplog.text
    assert len(vault.calls) == 2

    clock.now += 29  # within the 30 s pause: no call
    assert secrets.get("sendgrid-key-test") == KEY
    assert len(vault.calls) == 2

    vault.fail = None
    vault.values["sendgrid-key-test"] = ROTATED
    clock.now += 1
    assert secrets.get("sendgrid-key-test") == ROTATED
    assert len(vault.calls) == 3


def test_a_stale_value_is_served_no_longer_than_max_stale() -> None:
    vault, clock = FakeVault({"sendgrid-key-test": KEY}), Clock()
    secrets = provider(vault, clock, max_stale=60)
    secrets.get("sendgrid-key-test")
    vault.fail = ServiceRequestError("connection refused")

    clock.now += 300 + 45
    assert secrets.get("sendgrid-key-test") == KEY
    clock.now += 14.9  # the pause ends at the stale bound (TTL + 60 s), not 30 s later
    assert secrets.get("sendgrid-key-test") == KEY
    assert len(vault.calls) == 2
    clock.now += 0.2
    with pytest.raises(SecretUnavailable, match="could not reach Key Vault"):
        secrets.get("sendgrid-key-test")


def test_a_transient_failure_without_a_cached_value_raises_a_retryable_error() -> None:
    vault, clock = (
        FakeVault(fail=http_error(HttpResponseError, 429, "Throttled", "slow down")),
        Clock(),
    )

    with pytest.raises(SecretUnavailable, match="HTTP 429: Throttled: slow down") as raised:
        provider(vault, clock).get("sendgrid-key-test")
    assert not isinstance(raised.value, InputError)  # the host retries the message


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (http_error(ResourceNotFoundError, 404, "SecretNotFound", "gone"), SecretNotFound),
        (http_error(HttpResponseError, 403, "Forbidden", "no role"), SecretAccessDenied),
    ],
)
def test_a_deleted_secret_or_revoked_access_is_never_papered_over(
    failure: BaseException, error: type[Exception]
) -> None:
    vault, clock = FakeVault({"sendgrid-key-test": KEY}), Clock()
    secrets = provider(vault, clock)
    secrets.get("sendgrid-key-test")
    vault.fail = failure

    clock.now += 300
    with pytest.raises(error):
        secrets.get("sendgrid-key-test")
    vault.fail = http_error(HttpResponseError, 503, "ServiceUnavailable", "down")
    with pytest.raises(SecretUnavailable):  # the old value was dropped
        secrets.get("sendgrid-key-test")


# --- errors a person can act on --------------------------------------------------------------


def test_not_found_names_the_secret_and_the_rule() -> None:
    with pytest.raises(SecretNotFound) as raised:
        provider(FakeVault(), Clock()).get("sendgrid-key-test")
    assert str(raised.value) == (
        "no SendGrid key is available under the name 'sendgrid-key-test': store the key as an "
        "app setting or Key Vault secret named SENDGRID_KEY_<NAME> (in Key Vault: "
        "SENDGRID-KEY-<NAME>; letters and digits, words joined by _ or -); the app reads API "
        "keys under no other names"
    )


def test_forbidden_says_which_role_to_grant() -> None:
    vault = FakeVault(
        fail=http_error(HttpResponseError, 403, "Forbidden", "Caller is not authorized")
    )
    with pytest.raises(SecretAccessDenied) as raised:
        provider(vault, Clock()).get("sendgrid-key-test")
    message = str(raised.value)
    assert f"the app's identity cannot read secrets in {VAULT}" in message
    assert "grant it the Key Vault Secrets User role" in message
    assert isinstance(raised.value, InputError)


def test_a_token_the_vault_rejects_is_told_apart_from_no_token_at_all() -> None:
    rejected = http_error(ClientAuthenticationError, 401, "Unauthorized", "AKV10032: bad issuer")
    with pytest.raises(SecretAccessDenied, match=r"did not accept the app's token .*AKV10032"):
        provider(FakeVault(fail=rejected), Clock()).get("sendgrid-key-test")

    no_token = ClientAuthenticationError(
        message="DefaultAzureCredential failed to retrieve a token from the included credentials."
        "\nAttempted credentials:\n\tManagedIdentityCredential: no identity with that client id"
        "\nTo mitigate this issue, please refer to the troubleshooting guidelines."
    )
    with pytest.raises(SecretAccessDenied) as raised:
        provider(FakeVault(fail=no_token), Clock()).get("sendgrid-key-test")
    message = str(raised.value)
    assert f"could not get a token for Key Vault {VAULT}" in message
    assert message.endswith("ManagedIdentityCredential: no identity with that client id")


def test_another_4xx_is_an_input_error_with_the_vaults_message() -> None:
    vault = FakeVault(fail=http_error(HttpResponseError, 400, "BadParameter", "bad name"))
    with pytest.raises(InputError, match="HTTP 400: BadParameter: bad name"):
        provider(vault, Clock()).get("sendgrid-key-test")


def test_a_challenge_for_another_domain_is_a_configuration_error() -> None:
    vault = FakeVault(fail=ValueError("The challenge resource 'x' does not match the domain."))
    with pytest.raises(InputError, match="does not match"):
        provider(vault, Clock()).get("sendgrid-key-test")


# --- names and settings ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "sendgrid-key", "SG-Key-2", "x" * 127])
def test_key_vault_accepts_letters_digits_and_dashes(name: str) -> None:
    check_key_vault_name(name)


@pytest.mark.parametrize(
    ("name", "hint"),
    [("SENDGRID_KEY", "'SENDGRID-KEY'"), ("key.prod", "'key-prod'"), ("x" * 128, "'xxxx")],
)
def test_other_names_are_refused_with_a_fix(name: str, hint: str) -> None:
    with pytest.raises(SecretNameError, match="1 to 127 letters, digits and dashes") as raised:
        check_key_vault_name(name)
    assert hint in str(raised.value)


def test_an_invalid_name_is_refused_before_the_vault_is_asked() -> None:
    vault = FakeVault({"sendgrid-key-test": KEY})
    with pytest.raises(SecretNameError, match="'sendgrid-key-test'"):
        provider(vault, Clock()).get("sendgrid_key_test")
    assert vault.calls == []


@pytest.mark.parametrize(
    "url", ["contoso.vault.azure.net", "http://contoso.vault.azure.net", f"{VAULT}/secrets", ""]
)
def test_the_vault_url_must_be_an_https_origin(url: str) -> None:
    with pytest.raises(InputError, match="KEY_VAULT_URI must be the vault's URL"):
        KeyVaultSecretProvider(url, client=FakeVault())


def test_the_repr_shows_the_vault_and_never_a_value() -> None:
    secrets = provider(FakeVault({"sendgrid-key-test": KEY}), Clock())
    secrets.get("sendgrid-key-test")
    assert repr(secrets) == f"KeyVaultSecretProvider(vault_url='{VAULT}', ttl=300.0)"


def test_the_factory_uses_app_settings_without_a_vault() -> None:
    secrets = secret_provider({"KEY_VAULT_URI": " ", "SENDGRID_KEY_TEST": KEY})
    assert isinstance(secrets, EnvSecretProvider)
    assert secrets.get("SENDGRID_KEY_TEST") == KEY


def test_the_factory_uses_key_vault_with_the_configured_ttl() -> None:
    secrets = secret_provider({"KEY_VAULT_URI": f"{VAULT}/", "SECRET_CACHE_SECONDS": "45"})
    assert isinstance(secrets, KeyVaultSecretProvider)
    assert (secrets.vault_url, secrets.ttl) == (VAULT, 45.0)
    secrets.close()

    default = secret_provider({"KEY_VAULT_URI": VAULT})
    assert isinstance(default, KeyVaultSecretProvider)
    assert default.ttl == 300.0
    default.close()


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "86401"])
def test_the_factory_refuses_a_bad_ttl(value: str) -> None:
    with pytest.raises(InputError, match="SECRET_CACHE_SECONDS must be a number"):
        secret_provider({"KEY_VAULT_URI": VAULT, "SECRET_CACHE_SECONDS": value})


# --- Services.sendgrid and rotation ----------------------------------------------------------


class StubSecrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str) -> str:
        return self.values[name]


class RecordingClient:
    """Takes SendGridClient's place: remembers the key it was made with."""

    def __init__(self, api_key: str, settings: SendGridSettings | None = None) -> None:
        self.api_key = api_key
        self.closed = False

    def close(self) -> None:
        self.closed = True


def services(secrets: StubSecrets) -> Services:
    none: Any = None  # storage, ledger and destinations play no part in making clients
    return Services(
        storage=none, ledger=none, destinations=none, secrets=secrets, clients=RecordingClient
    )


def test_services_replaces_a_destinations_client_when_its_key_rotates() -> None:
    secrets = StubSecrets({"sendgrid-key-test": KEY, "sendgrid-key-other": "SG.other"})
    svc = services(secrets)
    destination = Destination.model_construct(api_key_secret="sendgrid-key-test")
    other = Destination.model_construct(api_key_secret="sendgrid-key-other")

    first: Any = svc.sendgrid(destination)
    assert first.api_key == KEY
    assert svc.sendgrid(destination) is first
    assert svc.sendgrid(other).api_key == "SG.other"

    secrets.values["sendgrid-key-test"] = ROTATED
    rotated: Any = svc.sendgrid(destination)
    assert rotated is not first
    assert rotated.api_key == ROTATED
    assert svc.sendgrid(destination) is rotated
    assert len(svc._clients) == 2  # the old client was dropped, not kept beside the new one
    assert first.closed and not rotated.closed  # and let go of its connections


# --- only SendGrid keys: the name rule and the key's shape -----------------------------------


class Watched(dict[str, str]):
    """App settings that remember which names were read."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: list[str] = []

    def get(self, name: str, default: Any = None) -> Any:
        self.read.append(name)
        return super().get(name, default)


APP_SETTINGS = {
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;Account"
    "Key=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    "LOCAL_FUNCTION_KEY": "the-function-key",
    "PATH": "/usr/bin",
    "SENDGRID_KEY_MARKETING": KEY,
}


@pytest.mark.parametrize(
    "name",
    [
        "SENDGRID_KEY",
        "SENDGRID_KEY_MARKETING",
        "sendgrid-key-marketing-2",
        "SendGrid_Key-EU_West",
        "SENDGRID_KEY_" + "X" * 114,
    ],
)
def test_names_of_sendgrid_keys_are_allowed(name: str) -> None:
    assert is_key_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "AzureWebJobsStorage",
        "AzureWebJobsStorage__accountName",
        "LOCAL_FUNCTION_KEY",
        "PATH",
        "KEY_VAULT_URI",
        "SENDGRID_API_BASE_URL",
        "SENDGRID_KEYS",  # the prefix is a whole word
        "SENDGRID_KEY_",  # nothing after the separator
        "SENDGRID_KEY__X",
        "MY_SENDGRID_KEY",
        "SENDGRID_KEY_MARKETING\n",
        "SENDGRID_KEY_A.B",
        "SENDGRID_KEY_" + "X" * 115,  # 128 characters: over Key Vault's 127
        "",
    ],
)
def test_every_other_name_is_refused(name: str) -> None:
    assert not is_key_name(name)


@pytest.mark.parametrize("name", ["AzureWebJobsStorage", "LOCAL_FUNCTION_KEY", "PATH"])
def test_app_settings_refuse_other_names_without_reading_them(name: str) -> None:
    env = Watched(APP_SETTINGS)
    secrets = EnvSecretProvider(env)

    with pytest.raises(SecretNotFound) as refused:
        secrets.get(name)
    assert env.read == []  # not even looked up
    with pytest.raises(SecretNotFound) as unset:
        secrets.get("SENDGRID_KEY_UNSET")

    # The same answer for a setting that exists (refused) and a name with nothing under it.
    assert str(refused.value) == str(unset.value).replace("'SENDGRID_KEY_UNSET'", repr(name))
    assert str(refused.value) == str(key_unavailable(name))
    assert "SENDGRID_KEY_<NAME>" in str(refused.value)
    assert APP_SETTINGS[name] not in str(refused.value)
    assert secrets.get("SENDGRID_KEY_MARKETING") == KEY


def test_key_vault_refuses_other_names_without_asking_the_vault() -> None:
    vault = FakeVault({"AzureWebJobsStorage": "x", "storage-key": "x"})
    secrets = provider(vault, Clock())
    for name in ("storage-key", "AzureWebJobsStorage", "sendgrid-key-unset"):
        with pytest.raises(SecretNotFound) as raised:
            secrets.get(name)
        assert str(raised.value) == str(key_unavailable(name))
    assert vault.calls == ["sendgrid-key-unset"]  # the only name a key may have


def test_a_refused_name_that_looks_like_a_key_is_not_echoed() -> None:
    with pytest.raises(SecretNotFound) as raised:
        EnvSecretProvider({}).get(KEY)
    assert KEY not in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        APP_SETTINGS["AzureWebJobsStorage"],
        "the-function-key",
        "Bearer SG.abc",
        "SG.",
        "SG.abc def",
        "SG.abc\r\nX-Injected: 1",
        "SG." + "a" * 253,
        "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/sendgrid-key-x/)",
    ],
)
def test_a_value_that_is_not_a_sendgrid_key_is_never_returned(value: str) -> None:
    with pytest.raises(SecretNotAKey) as raised:
        EnvSecretProvider({"SENDGRID_KEY_X": value}).get("SENDGRID_KEY_X")
    message = str(raised.value)
    assert "'SENDGRID_KEY_X' does not hold a SendGrid API key" in message
    assert "nothing was sent with it" in message
    assert value == "SG." or value not in message  # never quoted
    if value.startswith("@Microsoft.KeyVault("):
        assert "Key Vault reference the platform did not resolve" in message

    vault = FakeVault({"sendgrid-key-x": value})
    with pytest.raises(SecretNotAKey):
        provider(vault, Clock()).get("sendgrid-key-x")


@pytest.mark.parametrize(
    "value", [KEY, "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"]
)
def test_values_shaped_like_sendgrid_keys_pass(value: str) -> None:
    assert check_key("SENDGRID_KEY_X", value) == value
    assert EnvSecretProvider({"SENDGRID_KEY_X": f" {value}\n"}).get("SENDGRID_KEY_X") == value
