"""The host's settings while it runs: `local.settings.json` followed, functions switched off.

Settings are, from weakest to strongest: the host's defaults (what `exporter up` supplies when
the file does not say), the file's `Values`, the process environment. Those not set in the
environment are exported to `os.environ` before the app is imported, and taken back at stop.

The file is looked at every second while the host runs. One log line names the settings that
changed (never a value). What the host and the app read at each use is applied to the next
invocations at once: the SendGrid API keys (`SENDGRID_KEY_*`, which the app resolves per run),
notification targets' URLs and signing secrets (`NOTIFY_URL_*`, `NOTIFY_SIGNING_*`, resolved
per delivery) and `AzureWebJobs.<function>.Disabled`. Everything else is read once at start (binding
expressions such as `%REFRESH_SCHEDULE%`, connections, the function key, the queue lease) or
cached by the app's per-worker services (run settings, SendGrid's URL), so it is not applied:
a warning says to restart. A setting the environment sets is never taken from the file (as in
Core Tools). A file caught half-written, or invalid, is reported and the settings in force stay.

`AzureWebJobs.<function>.Disabled` set to `true` (or `1`), as Azure reads it, switches a
function off: its timer does not fire, its queue and blob listeners do not poll (invocations
in flight finish), its HTTP route answers 404. Setting it back switches it on again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from exporter.local.host.config import THREAD_PREFIX, HostError
from exporter.local.settings_file import FileWatch, SettingsFileError, read_values
from exporter.model.keys import is_key_name, is_notify_signing_name, is_notify_url_name

logger = logging.getLogger("exporter.local.host")

SETTINGS_POLL_INTERVAL: Final = 1.0
_DISABLED: Final = re.compile(r"AzureWebJobs\.(.+)\.Disabled", re.IGNORECASE)


def is_live(name: str) -> bool:
    """Whether a change of this setting can be applied while the host runs."""
    return (
        is_key_name(name)
        or is_notify_url_name(name)
        or is_notify_signing_name(name)
        or _DISABLED.fullmatch(name) is not None
    )


def disabled_functions(settings: Mapping[str, str]) -> frozenset[str]:
    """The functions (lower-cased names) that `AzureWebJobs.<name>.Disabled` switches off."""
    names = set()
    for name, value in settings.items():
        found = _DISABLED.fullmatch(name)
        if found is not None and value.strip().lower() in ("true", "1"):
            names.add(found.group(1).lower())
    return frozenset(names)


class LiveSettings:
    """The host's settings: defaults < the file's Values < the environment, followed while the
    host runs (`start_following`). Thread-safe for readers: `settings` and `disabled` read an
    immutable snapshot that a change replaces."""

    def __init__(
        self,
        path: Path | None,
        defaults: Mapping[str, str] | None = None,
        *,
        restart_hint: str = "restart the host",
        poll_interval: float = SETTINGS_POLL_INTERVAL,
    ) -> None:
        """`path`: the settings file to read and follow (it may appear later; None: no file)."""
        self.path = path
        self._defaults = dict(defaults or {})
        self._restart_hint = restart_hint
        self._poll_interval = poll_interval
        self._watch = FileWatch(path) if path is not None else None
        self._environment: frozenset[str] = frozenset()
        self._exported: dict[str, str] = {}
        self._in_force: dict[str, str] = {}
        """Defaults and file values as applied (the environment's names left out)."""
        self._last_read: dict[str, str] = {}
        self._settings: dict[str, str] = {}
        self._disabled: frozenset[str] = frozenset()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def settings(self) -> dict[str, str]:
        """Every setting in force (a copy)."""
        return dict(self._settings)

    def disabled(self, function_name: str) -> bool:
        return function_name.lower() in self._disabled

    def load(self) -> dict[str, str]:
        """Read the file, export what the environment does not set; HostError when the file
        cannot be read. Returns the settings in force."""
        values = self._read()
        self._environment = frozenset(os.environ)
        layered = {**self._defaults, **values}
        self._last_read = dict(layered)
        self._in_force = {k: v for k, v in layered.items() if k not in self._environment}
        for name, value in self._in_force.items():
            os.environ[name] = value
            self._exported[name] = value
        self._settings = {**layered, **os.environ}
        self._disabled = disabled_functions(self._settings)
        for name in sorted(self._disabled):
            logger.info("function %s is disabled (AzureWebJobs.%s.Disabled)", name, name)
        return self.settings

    def start_following(self) -> None:
        if self._watch is None or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._follow, name=f"{THREAD_PREFIX}-settings", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop following, take back what was exported (unless changed since by others)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for name, value in self._exported.items():
            if os.environ.get(name) == value:
                del os.environ[name]
        self._exported.clear()

    def check(self) -> None:
        """Look at the file once; apply and log what changed."""
        if self._watch is None or not self._watch.changed():
            return
        try:
            values = self._read()
        except HostError as exc:
            logger.warning("%s: the settings in force stay", exc)
            return
        layered = {**self._defaults, **values}
        changed = _diff(self._last_read, layered)
        self._last_read = layered
        if not changed:
            return
        ignored = [n for n in changed if n in self._environment]
        live = [n for n in changed if n not in self._environment and is_live(n)]
        settings = dict(self._settings)
        for name in live:
            if name in layered:
                os.environ[name] = settings[name] = self._in_force[name] = layered[name]
                self._exported[name] = layered[name]
            else:
                if self._exported.pop(name, None) is not None:
                    os.environ.pop(name, None)
                settings.pop(name, None)
                self._in_force.pop(name, None)
        self._settings = settings
        file = self.path.name if self.path is not None else "the settings file"
        logger.info(
            "settings changed in %s: %s%s",
            file,
            ", ".join(changed),
            f" (applied to the next invocations: {', '.join(live)})" if live else "",
        )
        self._switch(disabled_functions(settings))
        if ignored:
            logger.warning(
                "not applied, the environment sets them (it wins over %s): %s",
                file,
                ", ".join(ignored),
            )
        pending = [
            n
            for n in _diff(
                {k: v for k, v in layered.items() if k not in self._environment}, self._in_force
            )
            if not is_live(n)
        ]
        if pending:
            logger.warning("%s to apply %s", self._restart_hint, ", ".join(pending))

    def _switch(self, disabled: frozenset[str]) -> None:
        for name in sorted(disabled - self._disabled):
            logger.info("function %s is disabled now (AzureWebJobs.%s.Disabled)", name, name)
        for name in sorted(self._disabled - disabled):
            logger.info("function %s is enabled again", name)
        self._disabled = disabled

    def _read(self) -> dict[str, str]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            return read_values(self.path)
        except SettingsFileError as exc:
            raise HostError(str(exc)) from exc

    def _follow(self) -> None:
        while not self._stopping.wait(self._poll_interval):
            try:
                self.check()
            except Exception:  # never stop following on a surprise
                logger.exception("following %s failed", self.path)


def _diff(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    return sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
