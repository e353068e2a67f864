"""The CLI's connection to the app: storage and services from an app settings file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

from exporter.adapters.azure_storage import Storage
from exporter.adapters.settings import load_app_settings
from exporter.flow.services import Services
from exporter.wiring import services_from_env


def connect(settings_file: Path) -> tuple[Storage, Services]:
    settings = load_app_settings(settings_file)
    settings.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    return connect_to(settings)


def connect_to(settings: Mapping[str, str]) -> tuple[Storage, Services]:
    svc = services_from_env(settings)
    return cast(Storage, svc.storage), svc
