"""The console's templates (Jinja2, autoescaped, undefined values an error) and the helpers
they share: URLs under the console's prefix, times, numbers, state badges."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

PREFIX: Final = "/api/console"
TEMPLATES: Final = Path(__file__).parent / "templates"
STATIC: Final = Path(__file__).parent / "static"


def url(path: str = "/") -> str:
    """A console path (`/runs/x`) as the browser addresses it (`/api/console/runs/x`)."""
    return PREFIX + (path if path.startswith("/") else "/" + path)


def static(name: str) -> str:
    return url(f"/static/{name}")


def when(value: datetime | str | None) -> str:
    """A time as the console shows it: UTC, to the second."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            return when(datetime.fromisoformat(value))
        except ValueError:
            return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


BADGES: Final = {
    "queued": "pending",
    "planning": "active",
    "sending": "active",
    "confirming": "active",
    "verifying": "active",
    "succeeded": "ok",
    "succeeded_with_errors": "warn",
    "failed": "bad",
    "skipped": "muted",
}


def badge(state: str) -> str:
    """The CSS class of a run state's badge (the badge's text is the state)."""
    return "badge badge-" + BADGES.get(state, "muted")


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(url=url, static=static, badge=badge)
    env.filters.update(when=when, number=number)
    return env


def render(template: str, values: dict[str, Any]) -> str:
    return environment().get_template(template).render(**values)
