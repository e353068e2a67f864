"""App settings, read from the environment (Azure app settings, or local.settings.json locally).

Secrets are never settings values: a setting may only *name* a secret (see the destinations'
API-key references).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter.core.errors import InputError

DEFAULT_SENDGRID_API_BASE_URL = "https://api.sendgrid.com"


class SendGridSettings(BaseModel):
    """Where and how patiently we talk to SendGrid (or to any SendGrid-compatible server)."""

    model_config = ConfigDict(frozen=True)

    base_url: str = DEFAULT_SENDGRID_API_BASE_URL
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local sandbox)")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SendGridSettings:
        env = os.environ if env is None else env
        raw = {
            "base_url": env.get("SENDGRID_API_BASE_URL") or DEFAULT_SENDGRID_API_BASE_URL,
            "timeout_seconds": env.get("SENDGRID_TIMEOUT_SECONDS") or 30.0,
            "connect_timeout_seconds": env.get("SENDGRID_CONNECT_TIMEOUT_SECONDS") or 5.0,
        }
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{_SETTING_NAMES[str(e['loc'][0])]}: {e['msg']}" for e in exc.errors()
            )
            raise InputError(f"invalid SendGrid settings: {problems}") from None


_SETTING_NAMES = {
    "base_url": "SENDGRID_API_BASE_URL",
    "timeout_seconds": "SENDGRID_TIMEOUT_SECONDS",
    "connect_timeout_seconds": "SENDGRID_CONNECT_TIMEOUT_SECONDS",
}


def load_app_settings(
    path: str | os.PathLike[str] = "local.settings.json", env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """App settings as a local tool sees them: `local.settings.json` Values under the
    environment (the environment wins), as Core Tools does."""
    values: dict[str, str] = {}
    file = Path(path)
    if file.is_file():
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{file} is not valid JSON: {exc}") from None
        values.update({str(k): str(v) for k, v in (document.get("Values") or {}).items()})
    values.update(os.environ if env is None else env)
    return values
