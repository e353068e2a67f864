"""The CLI's connection to the app: storage and services from an app settings file, failing
fast (`exporter.wiring.services_from_env(fail_fast=True)`), and what the CLI says when a
service cannot be reached."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, ClientAuthenticationError

from exporter.adapters.azure_storage import Storage
from exporter.adapters.settings import load_app_settings
from exporter.core.errors import Unreachable
from exporter.flow.services import Services
from exporter.wiring import services_from_env


def connect(settings_file: Path) -> tuple[Storage, Services]:
    settings = load_app_settings(settings_file)
    settings.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    return connect_to(settings)


def connect_to(settings: Mapping[str, str]) -> tuple[Storage, Services]:
    svc = services_from_env(settings, fail_fast=True)
    return cast(Storage, svc.storage), svc


def unreachable_line(exc: Unreachable, settings_file: Path | None) -> str:
    """One line: what is unreachable, where, why, and what to do.

    `storage is unreachable at http://127.0.0.1:10000/devstoreaccount1 (connection refused):
    start it with `exporter up`, or check AzureWebJobsStorage in local.settings.json`"""
    where = f"in {settings_file}" if settings_file is not None else ""
    advice = exc.advice(where)
    if exc.kind == "refused" and _local(exc.endpoint):
        start = {
            "storage": "start it with `exporter up`",
            "SendGrid": "start the local sandbox with `exporter up` (or `exporter sandbox`)",
        }
        if exc.service in start:
            advice = f"{start[exc.service]}, or check {exc.setting} {where}"
    return _one_line(f"{exc.summary}: {advice}".rstrip())


def azure_error_line(exc: AzureError) -> str:
    """Any other Azure SDK error, on one line (connection failures are `Unreachable` already,
    see `exporter.adapters.connectivity`): a sign-in that failed, or the error's first line."""
    if isinstance(exc, ClientAuthenticationError):
        return _one_line(
            f"could not sign in to Azure ({_first_line(exc.message or str(exc))}): sign in "
            "with `az login`, or check the managed identity (AZURE_CLIENT_ID)"
        )
    kind = type(exc).__name__
    return _one_line(f"Azure failed ({kind}): {_first_line(exc.message or str(exc))}")


def _local(endpoint: str) -> bool:
    return urlsplit(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
