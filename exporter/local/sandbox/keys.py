"""Which bearer keys the sandbox accepts: any non-empty one (the default), the one `--api-key`,
and/or exactly the API keys written in a `local.settings.json` (`--keys-from FILE`: the values
of its `SENDGRID_KEY_*` settings, the names `exporter.model.keys` allows). `exporter up` passes
the file the host reads: the file stands for the SendGrid account's keys. A key the app gets
from elsewhere (an environment variable over the file, Key Vault) or any other client's key
that is not written there gets SendGrid's 401, as a wrong key does.

The file is followed: before each request the sandbox looks at whether it changed (a stat)
and, if so, reads it again, logging the names of the keys added, removed or changed (never a
key). A file that cannot be read then keeps the keys in force, with a warning; at start it
stops the sandbox.
"""

from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path

from exporter.local.settings_file import FileWatch, SettingsFileError, api_keys_from

log = logging.getLogger("exporter.local.sandbox")


class AcceptedKeys:
    """The keys in force; `accepts(token)` is safe to call from every request thread."""

    def __init__(
        self,
        api_key: str | None = None,
        keys_from: Path | None = None,
    ) -> None:
        """Raises `SettingsFileError` when `keys_from` exists but cannot be read."""
        self._fixed = api_key or None
        self._path = keys_from
        self._watch = FileWatch(keys_from) if keys_from is not None else None
        self._lock = threading.Lock()
        self._named: dict[str, str] = {}
        if keys_from is not None:
            self._named = api_keys_from(keys_from)
            names = ", ".join(sorted(self._named)) or "none: every /v3 request is refused"
            log.info("accepting the API keys of %s: %s", keys_from, names)

    @property
    def required(self) -> bool:
        """False when any non-empty key is accepted."""
        return self._fixed is not None or self._path is not None

    def names(self) -> list[str]:
        """The settings whose keys are accepted (from the file), by name."""
        return sorted(self._named)

    def accepts(self, token: str) -> bool:
        if not token:
            return False
        if not self.required:
            return True
        self._follow()
        keys = [*self._named.values(), *([self._fixed] if self._fixed else [])]
        given = token.encode()
        return any(hmac.compare_digest(given, key.encode()) for key in keys)

    def _follow(self) -> None:
        if self._watch is None or self._path is None:
            return
        with self._lock:
            if not self._watch.changed():
                return
            try:
                named = api_keys_from(self._path)
            except SettingsFileError as exc:
                log.warning("%s: the API keys in force stay", exc)
                return
            old = self._named
            self._named = named
        added = sorted(named.keys() - old.keys())
        removed = sorted(old.keys() - named.keys())
        changed = sorted(n for n in named.keys() & old.keys() if named[n] != old[n])
        if added or removed or changed:
            parts = [
                f"{what}: {', '.join(names)}"
                for what, names in (("added", added), ("removed", removed), ("changed", changed))
                if names
            ]
            log.info("the accepted API keys changed (%s)", "; ".join(parts))
