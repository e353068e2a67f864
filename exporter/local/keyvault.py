"""A local Azure Key Vault (secrets) over HTTPS, with the identity endpoints that issue its tokens.

It answers what `azure-keyvault-secrets` and `azure-identity` send, so tests can run the real SDK
path (`SecretClient` + `DefaultAzureCredential`) against it with nothing patched:

- the vault, at `https://<vault-host>:<port>` (default `kv.localhost`): `GET /secrets/{name}`,
  `GET /secrets/{name}/{version}` and `PUT /secrets/{name}` (a new version), with Key Vault's
  bodies and errors (`{"error": {"code", "message"}}`: 404 `SecretNotFound`, 403 `Forbidden`
  for a denied identity, 400 `BadParameter`). A request without a valid bearer token gets 401
  and Key Vault's challenge, `WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
  resource="<resource>"`, which the SDK answers by getting a token for `<resource>/.default`.
  The resource is the vault host's parent domain with the port (`https://localhost:<port>` for
  `kv.localhost`), as `https://vault.azure.net` is for `<name>.vault.azure.net`: the SDK
  checks that the vault's host lies under the resource's domain, and this passes that check.
- the identity endpoints on the same port (the authority, `https://localhost:<port>`):
  App Service / Azure Functions managed identity (`GET /msi/token`, the `IDENTITY_ENDPOINT` +
  `X-IDENTITY-HEADER` protocol DefaultAzureCredential uses in Azure; `client_id` picks a
  user-assigned identity), and Microsoft Entra client credentials for service principals
  (`GET /{tenant}/v2.0/.well-known/openid-configuration`, `POST /{tenant}/oauth2/v2.0/token`).
  Tokens are opaque, bound to identity, tenant and audience, and expire.

The certificate is made at start: a throwaway CA and a server certificate it signs for the two
host names and 127.0.0.1. Clients trust the CA file (`REQUESTS_CA_BUNDLE`, or the SDK's
`connection_verify`). `kv.localhost` resolves to loopback where the resolver follows RFC 6761
(systemd-resolved, macOS); elsewhere pass `--vault-host` a name that does.

What it does not: other Key Vault operations (list, delete and recover, backup, keys and
certificates) answer 404; secret attributes (enabled, nbf, exp) are reported, not enforced;
every identity that is not denied may read and write (no separate reader and officer roles);
no CAE claims challenges or proof-of-possession tokens; tokens are opaque, not JWTs.

Control endpoints under `/__keyvault/` (no auth): request counts, setting a secret, faults
(503s), revoking tokens, reset. Logs carry method, path and status; never a body, a token, a
secret value or a query string.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from exporter.local.process import configure_logging, serve_until_signal

if TYPE_CHECKING:  # the WSGI protocol types live in typeshed only
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("exporter.local.keyvault")  # also when run as __main__

DEFAULT_TENANT: Final = "7e57ab1e-0000-4000-8000-000000000001"
SYSTEM_IDENTITY: Final = "system-assigned"
"""The principal of the managed identity asked for without a `client_id`."""
TOKEN_LIFETIME: Final = 3600
_SECRET_NAME: Final = re.compile(r"[0-9A-Za-z-]{1,127}")
_API_VERSION: Final = re.compile(r"\d+\.\d+|\d{4}-\d{2}-\d{2}(-preview)?")
MAX_BODY_BYTES: Final = 64 * 1024
"""Key Vault takes secrets of up to 25 KB; no request body may be larger than this."""


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyVaultConfig:
    """Startup settings. Identities: `clients` (service principals, client id -> secret) sign in
    with client credentials; `managed_identities` (client ids) and the system-assigned identity
    get tokens from `/msi/token` when `identity_header` is set. Every identity may read and
    write secrets except those in `denied`, which get 403 (no role on the vault)."""

    host: str = "127.0.0.1"
    port: int = 8443
    vault_host: str = "kv.localhost"
    identity_host: str = "localhost"
    tenant: str = DEFAULT_TENANT
    clients: Mapping[str, str] = field(default_factory=dict)
    managed_identities: frozenset[str] = frozenset()
    identity_header: str | None = None
    denied: frozenset[str] = frozenset()
    token_lifetime: int = TOKEN_LIFETIME
    cert_dir: Path | None = None
    """Where to write `ca.pem` and the server's certificate and key; None: a temporary folder,
    removed at shutdown."""


# --- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Certificates:
    ca: Path
    """What clients trust."""
    cert: Path
    key: Path


def make_certificates(directory: Path, hosts: Iterable[str]) -> Certificates:
    """A throwaway CA and a server certificate it signs for `hosts` (names or IP addresses),
    valid for a day; written as PEM files into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exporter local Key Vault CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(
        ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server-key.pem"
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Version:
    version: str
    value: str
    created: int
    content_type: str | None
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Token:
    principal: str
    tenant: str
    audience: str
    expires_at: float


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def _vault_error(status: int, code: str, message: str, inner: str | None = None) -> Response:
    """Key Vault's error shape."""
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return _json(status, {"error": error})


def _entra_error(status: int, error: str, description: str, code: int) -> Response:
    """Microsoft Entra's OAuth error shape."""
    return _json(
        status,
        {
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
    )


class _Request(Request):
    max_content_length = MAX_BODY_BYTES


class KeyVaultApp:
    """The WSGI application: vault, identity endpoints and control endpoints, one state."""

    def __init__(self, config: KeyVaultConfig, port: int | None = None) -> None:
        self.config = config
        self.port = config.port if port is None else port
        self._lock = threading.Lock()
        self._secrets: dict[str, list[_Version]] = {}
        self._tokens: dict[str, _Token] = {}
        self._counts: Counter[str] = Counter()
        self._error_rate = 0.0
        self._errors_due = 0.0

    # --- addresses ---------------------------------------------------------------------------

    @property
    def vault_url(self) -> str:
        return f"https://{self.config.vault_host}:{self.port}"

    @property
    def authority(self) -> str:
        """What `AZURE_AUTHORITY_HOST` points at (the Entra endpoints' host)."""
        return f"https://{self.config.identity_host}:{self.port}"

    @property
    def resource(self) -> str:
        """The audience of vault tokens: the vault host's parent domain, as Key Vault's
        `https://vault.azure.net` is for `<name>.vault.azure.net`."""
        host = self.config.vault_host
        parent = host.split(".", 1)[1] if "." in host else host
        return f"https://{parent}:{self.port}"

    def set_port(self, port: int) -> None:
        """The bound port, once known (port 0 picks one)."""
        self.port = port

    # --- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _Request(environ)
        started = time.perf_counter()
        path = request.path
        level = logging.INFO
        try:
            if path.startswith("/__keyvault/"):
                level = logging.DEBUG
                response = self._control(request)
            elif path.startswith("/secrets"):
                response = self._vault(request)
            elif path == "/msi/token":
                response = self._managed_identity(request)
            else:
                response = self._entra(request)
        except Exception:
            log.exception("%s %s failed inside the Key Vault stand-in", request.method, path)
            response = _vault_error(500, "InternalServerError", "internal stand-in error")
        if level == logging.INFO:
            with self._lock:
                self._counts[f"{request.method} {path} {response.status_code}"] += 1
        ms = (time.perf_counter() - started) * 1000
        log.log(level, "%s %s %s %.1fms", request.method, path, response.status_code, ms)
        return response(environ, start_response)

    # --- the vault ---------------------------------------------------------------------------

    def _challenge(self, code: str, message: str) -> Response:
        response = _vault_error(401, "Unauthorized", f"{code}: {message}")
        response.headers["WWW-Authenticate"] = (
            f'Bearer authorization="{self.authority}/{self.config.tenant}", '
            f'resource="{self.resource}"'
        )
        return response

    def _authenticate(self, request: Request) -> str | Response:
        """The caller's principal, or the 401 answer (always with the challenge)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._challenge("AKV10000", "Request is missing a Bearer or PoP token.")
        with self._lock:
            found = self._tokens.get(token.strip())
        if found is None or found.expires_at <= time.time():
            return self._challenge("AKV10032", "Invalid issuer or the token is not valid.")
        if found.tenant != self.config.tenant:
            return self._challenge("AKV10032", f"Invalid issuer: tenant {found.tenant}.")
        if found.audience.rstrip("/") != self.resource:
            return self._challenge("AKV10022", f"Invalid audience: {found.audience}.")
        return found.principal

    def _vault(self, request: Request) -> Response:
        parts = request.path.split("/")[2:]  # "", "secrets", name[, version]
        if parts and parts[-1] == "" and len(parts) == 2:
            parts = parts[:1]  # GET /secrets/{name}/ is the latest version, as the SDK asks
        if not 1 <= len(parts) <= 2 or not parts[0]:
            return _vault_error(404, "NotFound", "unknown path")
        name = parts[0]
        version = parts[1] if len(parts) == 2 else ""
        allowed = "GET, PUT" if not version else "GET"
        if request.method not in allowed.split(", "):
            response = _vault_error(405, "MethodNotAllowed", f"{request.method} is not allowed")
            response.headers["Allow"] = allowed
            return response
        principal = self._authenticate(request)
        if isinstance(principal, Response):
            return principal
        if not _API_VERSION.fullmatch(request.args.get("api-version", "")):
            return _vault_error(400, "BadParameter", "The api-version query parameter is required.")
        if principal in self.config.denied:
            action = "getSecret" if request.method == "GET" else "setSecret"
            return _vault_error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource.\r\n"
                f"Caller: appid={principal}\r\n"
                f"Action: 'Microsoft.KeyVault/vaults/secrets/{action}/action'\r\n"
                "Assignment: (not found)",
                inner="ForbiddenByRbac",
            )
        if self._error_due():
            return _vault_error(503, "ServiceUnavailable", "The service is unavailable (fault).")
        if not _SECRET_NAME.fullmatch(name):
            return _vault_error(
                400,
                "BadParameter",
                "The request URI contains an invalid name: secret names are 1-127 letters, "
                "digits and dashes.",
            )
        base = f"https://{request.host}"
        if request.method == "PUT":
            return self._set_secret(request, name, base)
        with self._lock:
            versions = list(self._secrets.get(name, ()))
        found = next((v for v in versions if v.version == version), None) if version else None
        if not versions or (version and found is None):
            what = f"{name}/{version}" if version else name
            return _vault_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {what} was not found in this key vault. If you "
                "recently deleted this secret you may be able to recover it using the correct "
                "recovery command.",
            )
        return _json(200, _bundle(name, found or versions[-1], base))

    def _set_secret(self, request: Request, name: str, base: str) -> Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            return _vault_error(400, "BadParameter", "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            return _vault_error(400, "BadParameter", "Property 'value' is required.")
        tags = body.get("tags") or {}
        content_type = body.get("contentType")
        if not isinstance(tags, dict) or not isinstance(content_type, str | None):
            return _vault_error(400, "BadParameter", "Invalid 'tags' or 'contentType'.")
        version = self.put(name, body["value"], content_type=content_type, tags=tags)
        return _json(200, _bundle(name, version, base))

    def put(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> _Version:
        """Add a new version of `name` (for the PUT endpoint, the control endpoint and tests)."""
        version = _Version(
            uuid.uuid4().hex, value, int(time.time()), content_type, dict(tags or {})
        )
        with self._lock:
            self._secrets.setdefault(name, []).append(version)
        return version

    def _error_due(self) -> bool:
        """Spread injected 503s evenly (deterministic, unlike dice): rate 0.5 fails every other."""
        with self._lock:
            if self._error_rate <= 0:
                return False
            self._errors_due += self._error_rate
            if self._errors_due >= 1.0:
                self._errors_due -= 1.0
                return True
            return False

    # --- identity --------------------------------------------------------------------------

    def _issue(self, principal: str, audience: str) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires_at = time.time() + self.config.token_lifetime
        with self._lock:
            self._tokens[token] = _Token(principal, self.config.tenant, audience, expires_at)
        return token, expires_at

    def _managed_identity(self, request: Request) -> Response:
        """App Service / Functions managed identity (api-version 2019-08-01)."""
        expected = self.config.identity_header
        if request.method != "GET":
            return _json(405, {"statusCode": 405, "message": "method not allowed"})
        if expected is None:
            return _json(404, {"statusCode": 404, "message": "no managed identity is configured"})
        if not secrets.compare_digest(request.headers.get("X-IDENTITY-HEADER", ""), expected):
            return _json(401, {"statusCode": 401, "message": "the X-IDENTITY-HEADER is not valid"})
        resource = request.args.get("resource", "")
        if not resource or request.args.get("api-version") != "2019-08-01":
            return _json(400, {"statusCode": 400, "message": "resource and api-version required"})
        client_id = request.args.get("client_id")
        if client_id and client_id not in self.config.managed_identities:
            return _json(
                400,
                {"statusCode": 400, "message": f"no managed identity with client_id {client_id}"},
            )
        principal = client_id or SYSTEM_IDENTITY
        token, expires_at = self._issue(principal, resource)
        return _json(
            200,
            {
                "access_token": token,
                "expires_on": str(int(expires_at)),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": principal,
            },
        )

    def _entra(self, request: Request) -> Response:
        """OpenID discovery and the client-credentials token endpoint of one tenant."""
        parts = request.path.strip("/").split("/")
        tenant = self.config.tenant
        if parts[0] != tenant:
            if len(parts) >= 2 and parts[1] in ("v2.0", "oauth2"):
                return _entra_error(
                    400,
                    "invalid_tenant",
                    f"AADSTS90002: Tenant '{parts[0]}' not found.",
                    90002,
                )
            return _json(404, {"error": "not_found"})
        if parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return _json(200, self._openid_configuration())
        if parts[1:] == ["oauth2", "v2.0", "token"] and request.method == "POST":
            return self._client_credentials(request)
        return _json(404, {"error": "not_found"})

    def _openid_configuration(self) -> dict[str, Any]:
        base = f"{self.authority}/{self.config.tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{self.authority}/{self.config.tenant}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
        }

    def _client_credentials(self, request: Request) -> Response:
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return _entra_error(
                400, "unsupported_grant_type", "AADSTS70003: grant type not supported.", 70003
            )
        client_id = form.get("client_id", "")
        if client_id not in self.config.clients:
            return _entra_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory '{self.config.tenant}'.",
                700016,
            )
        if not secrets.compare_digest(
            form.get("client_secret", ""), self.config.clients[client_id]
        ):
            return _entra_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                f"the request is the client secret value, not the client secret ID, for a secret "
                f"added to app '{client_id}'.",
                7000215,
            )
        scopes = form.get("scope", "").split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return _entra_error(
                400,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource "
                "identifier.",
                1002012,
            )
        token, _ = self._issue(client_id, scopes[0].removesuffix("/.default"))
        lifetime = self.config.token_lifetime
        return _json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
        )

    # --- control endpoints -------------------------------------------------------------------

    def _control(self, request: Request) -> Response:
        """`/__keyvault/...`: `GET requests`, `PUT secrets/{name}` {"value"}, `POST faults`
        {"error_rate"}, `POST revoke-tokens`, `POST reset`."""
        method = request.method
        parts = request.path.strip("/").split("/")[1:]
        if parts == ["requests"] and method == "GET":
            return _json(200, self.request_counts())
        if len(parts) == 2 and parts[0] == "secrets" and method == "PUT":
            if not _SECRET_NAME.fullmatch(parts[1]):
                return _json(400, {"error": "secret names are 1-127 letters, digits and dashes"})
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("value"), str):
                return _json(400, {"error": 'the body must be {"value": "..."}'})
            version = self.put(parts[1], body["value"])
            return _json(200, {"name": parts[1], "version": version.version})
        if parts == ["faults"] and method == "POST":
            body = request.get_json(silent=True)
            rate = body.get("error_rate") if isinstance(body, dict) else None
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
                return _json(400, {"error": "error_rate must be a number from 0 to 1"})
            with self._lock:
                self._error_rate, self._errors_due = float(rate), 0.0
            return _json(200, {"error_rate": rate})
        if parts == ["revoke-tokens"] and method == "POST":
            with self._lock:
                revoked = len(self._tokens)
                self._tokens.clear()
            return _json(200, {"revoked": revoked})
        if parts == ["reset"] and method == "POST":
            self.reset()
            return _json(200, {})
        return _json(404, {"error": "not found"})

    def request_counts(self) -> dict[str, int]:
        """{"GET /secrets/key 200": 2, "GET /msi/token 200": 1, ...} (control calls excluded)."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        """No secrets, tokens, counts or faults."""
        with self._lock:
            self._secrets.clear()
            self._tokens.clear()
            self._counts.clear()
            self._error_rate, self._errors_due = 0.0, 0.0


def _bundle(name: str, version: _Version, base: str) -> dict[str, Any]:
    """A SecretBundle as Key Vault returns it."""
    bundle: dict[str, Any] = {
        "value": version.value,
        "id": f"{base}/secrets/{name}/{version.version}",
        "attributes": {
            "enabled": True,
            "created": version.created,
            "updated": version.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": dict(version.tags),
    }
    if version.content_type is not None:
        bundle["contentType"] = version.content_type
    return bundle


# --- server and CLI --------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """The app logs each request itself (no query strings); werkzeug's access line goes."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class KeyVaultServer:
    """The stand-in on a threaded HTTPS server; addresses are known once constructed."""

    def __init__(self, config: KeyVaultConfig) -> None:
        self._temp: Path | None = None
        if config.cert_dir is None:
            self._temp = Path(tempfile.mkdtemp(prefix="keyvault-"))
        try:
            self.certificates = make_certificates(
                config.cert_dir or self._temp or Path(),
                (config.vault_host, config.identity_host, "127.0.0.1", "::1"),
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certificates.cert, self.certificates.key)
            self.app = KeyVaultApp(config)
            self._server: BaseWSGIServer = make_server(
                config.host, config.port, self.app, threaded=True, request_handler=_QuietHandler
            )
        except BaseException:
            self._remove_temp()
            raise
        # The handshake happens in the request's thread, so a stalled client blocks only itself.
        self._server.socket = context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._server.ssl_context = context
        self.app.set_port(self._server.server_port)
        self._thread: threading.Thread | None = None

    @property
    def vault_url(self) -> str:
        return self.app.vault_url

    @property
    def authority(self) -> str:
        return self.app.authority

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self) -> Self:
        """Serve on a background thread (for in-process use)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # a quick shutdown
            name="keyvault-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and remove a temporary certificate folder (idempotent)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self._remove_temp()

    def _remove_temp(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"KEYVAULT_{name}", default)


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.local.keyvault",
        description="A local Azure Key Vault (secrets) over HTTPS, with the managed-identity and "
        "Entra token endpoints that issue its tokens. Every flag can also be set as "
        "KEYVAULT_<FLAG> (for example KEYVAULT_PORT; lists comma-separated).",
    )
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=int(_env("PORT", "8443") or 0), help="0 picks a free port"
    )
    parser.add_argument(
        "--vault-host",
        default=_env("VAULT_HOST", "kv.localhost"),
        help="the vault's host name (default %(default)s); it must resolve to --host",
    )
    parser.add_argument(
        "--identity-host",
        default=_env("IDENTITY_HOST", "localhost"),
        help="the authority's host name (default %(default)s)",
    )
    parser.add_argument("--tenant", default=_env("TENANT", DEFAULT_TENANT))

    def repeatable(flag: str, metavar: str, text: str) -> None:
        """A flag given once per item; its variable holds the items comma-separated."""
        default = _list(_env(flag.upper().replace("-", "_"), None))
        parser.add_argument(
            f"--{flag}",
            action="append",
            default=default,
            metavar=metavar,
            help=f"{text} (repeatable)",
        )

    repeatable("client", "ID=SECRET", "a service principal that signs in with client credentials")
    repeatable("managed-identity", "CLIENT_ID", "a user-assigned managed identity")
    parser.add_argument(
        "--identity-header",
        default=_env("IDENTITY_HEADER", None),
        help="the X-IDENTITY-HEADER value /msi/token requires (default: no managed identity)",
    )
    repeatable("deny", "ID", "an identity with no role on the vault: 403")
    parser.add_argument(
        "--token-lifetime", type=int, default=int(_env("TOKEN_LIFETIME", "3600") or 3600)
    )
    parser.add_argument(
        "--cert-dir", type=Path, default=_env("CERT_DIR", None), help="default: a temporary folder"
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> tuple[KeyVaultConfig, str]:
    """(config, log level) from flags and KEYVAULT_* variables; flags win."""
    parser = _parser()
    args = parser.parse_args(argv)
    clients: dict[str, str] = {}
    for item in args.client:
        client_id, sep, secret = item.partition("=")
        if not sep or not client_id or not secret:
            parser.error("--client takes ID=SECRET (a client id, '=', its secret)")
        clients[client_id] = secret
    if args.token_lifetime < 60:
        parser.error("--token-lifetime must be at least 60 seconds")
    config = KeyVaultConfig(
        host=args.host,
        port=args.port,
        vault_host=args.vault_host,
        identity_host=args.identity_host,
        tenant=args.tenant,
        clients=clients,
        managed_identities=frozenset(args.managed_identity),
        identity_header=args.identity_header or None,
        denied=frozenset(args.deny),
        token_lifetime=args.token_lifetime,
        cert_dir=args.cert_dir,
    )
    return config, str(args.log_level).upper()


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT; prints one `keyvault listening on URL ...` line."""
    config, level = config_from_args(argv)
    configure_logging(level)
    server = KeyVaultServer(config)
    serve_until_signal(
        server.start,
        server.shutdown,
        lambda: (
            f"keyvault listening on {server.vault_url} authority={server.authority} "
            f"tenant={config.tenant} ca={server.certificates.ca}"
        ),
    )
    log.info("keyvault stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
