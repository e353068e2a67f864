"""The console's own HTTP request and response: plain data, no Azure types (the trigger
converts), so every page is tested without a host."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

MAX_FORM_FIELDS: Final = 2_000
"""Fields one form may carry (a mapping of at most 600 entries, three fields each, fits)."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    """Relative to `/api/console`, starting with `/` (`/` for the console's root)."""
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case names."""
    cookies: dict[str, str] = field(default_factory=dict)
    form: dict[str, list[str]] = field(default_factory=dict)
    """An `application/x-www-form-urlencoded` body, parsed (else empty)."""
    body: bytes = b""
    url: str = ""
    """The whole URL as the host received it (its scheme tells https apart)."""

    def value(self, name: str, default: str = "") -> str:
        """A form field's first value, stripped (`default` when absent)."""
        values = self.form.get(name)
        return values[0].strip() if values else default

    def values(self, name: str) -> list[str]:
        """A form field's values, stripped, empty ones left out."""
        return [v.strip() for v in self.form.get(name, []) if v.strip()]

    def checked(self, name: str) -> bool:
        """Whether a checkbox was ticked."""
        return bool(self.form.get(name))

    @property
    def host(self) -> str:
        """The host (and port) the browser addressed."""
        return self.headers.get("host", "") or urlsplit(self.url).netloc

    @property
    def https(self) -> bool:
        forwarded = self.headers.get("x-forwarded-proto", "")
        return urlsplit(self.url).scheme == "https" or forwarded.split(",")[0].strip() == "https"

    def wants_json(self) -> bool:
        """A live-update or other JSON endpoint (its path ends in `.json`)."""
        return self.path.endswith(".json")


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        body = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8"})

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(status, b"", {"Location": location})

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def parse_cookies(header: str) -> dict[str, str]:
    """`name=value; name2=value2`, leniently: a malformed pair is skipped, not fatal (another
    site's cookie on the same host must not lock anyone out); the first of a name wins."""
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


def parse_form(body: bytes, content_type: str) -> dict[str, list[str]]:
    """An urlencoded form body (any other content type: no form)."""
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    text = body.decode("utf-8", errors="replace")
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # over MAX_FORM_FIELDS
        return {}
