"""`local.settings.json` as the local tools read it: its `Values`, whether the file changed since
it was last read, and the SendGrid API keys it names.

The Functions host (`host/`) and the SendGrid sandbox (`sandbox/`) both follow the file while
they run: the host applies what it can to the next invocations (its settings: the file under
the environment, as Core Tools reads them), the sandbox accepts exactly the API keys written in
the file (its account's keys: a key the host gets from the environment instead is a wrong key).
A change is seen by the file's modification time, size and inode (an editor that saves by
renaming counts too); a file caught half-written is an error the reader reports and retries
once the file changes again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from exporter.model.keys import is_key_name

MAX_SETTINGS_BYTES: Final = 1_000_000
"""A settings file larger than this is refused: it is a few hundred bytes in practice."""

Stamp = tuple[int, int, int] | None
"""(mtime in ns, size, inode) of a file, None when it does not exist."""


class SettingsFileError(Exception):
    """The file cannot be read as a local.settings.json; the message names the file."""


def read_values(path: Path) -> dict[str, str]:
    """The file's `Values` (every value a string), as Core Tools reads them."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SETTINGS_BYTES + 1)
    except OSError as exc:
        raise SettingsFileError(f"cannot read settings file {path}: {exc}") from exc
    if len(raw) > MAX_SETTINGS_BYTES:
        raise SettingsFileError(f"settings file {path} is over {MAX_SETTINGS_BYTES:,} bytes")
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SettingsFileError(f"settings file {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise SettingsFileError(f"settings file {path} must hold a JSON object")
    if document.get("IsEncrypted") is True:
        raise SettingsFileError(f"settings file {path} is encrypted: decrypt it first")
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise SettingsFileError(f"settings file {path}: Values must be an object")
    for name, value in values.items():
        if not isinstance(value, str):
            raise SettingsFileError(f"settings file {path}: Values.{name} must be a string")
    return dict(values)


def stamp(path: Path) -> Stamp:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class FileWatch:
    """Says whether a file changed (appeared, was written, replaced or removed) since the last
    call of `changed()`; the first call compares with the file as it was at construction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = stamp(path)

    def changed(self) -> bool:
        now = stamp(self.path)
        if now == self._stamp:
            return False
        self._stamp = now
        return True


def api_keys(settings: Mapping[str, str]) -> dict[str, str]:
    """The settings that hold a SendGrid API key (`exporter.model.keys`: `SENDGRID_KEY_<NAME>`)
    and are not blank: name → key."""
    return {
        name: value.strip()
        for name, value in settings.items()
        if is_key_name(name) and value.strip()
    }


def api_keys_from(path: Path) -> dict[str, str]:
    """The API keys written in the file's Values: name → key. A missing file holds none; an
    unreadable one is a `SettingsFileError`."""
    return api_keys(read_values(path) if path.is_file() else {})
