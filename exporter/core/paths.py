"""Names taken from outside data, checked before they become blob names, keys or log text.

A CDM model.json names its partitions by URL, its entities by name; a queue message names runs
and blobs. Any of them may be hostile: `segments/../exporter/state/...` would make the storage
SDK read a blob of the app's own container (the request's path is normalised by the HTTP stack,
and with Entra ID nothing stops it there). So every such name is decoded the way a server would
(percent-decoding, repeated until it stops changing, a bounded number of times) and then
*refused*, never repaired, when it could leave its container or its prefix: `..` and `.`
segments, empty segments (`a//b`, a leading or trailing `/`), backslashes, control and
invisible characters, names over Azure's 1,024 characters or 254 segments.

Pure: no Azure imports, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final
from urllib.parse import unquote

from exporter.core.errors import InputError

MAX_BLOB_NAME: Final = 1024
"""Azure's limit on a blob name, in characters."""
MAX_SEGMENTS: Final = 254
"""Azure's limit on the path segments of a blob name."""
MAX_DECODE_ROUNDS: Final = 3
"""Percent-decoding rounds before a name that keeps changing is refused: a name encoded three
times over is not something an export writes."""
MAX_SEGMENT_NAME: Final = 63
SEGMENT_PATTERN: Final = r"^[A-Za-z0-9_-]{1,63}$"
"""A segment's name: ASCII letters (either case: Customer Insights' entity names, like
`HighValue`, are segment names), digits, `-` and `_`, 1 to 63 characters. No dots, slashes,
backslashes, `#`, `?`, spaces or control characters: a segment name becomes a folder name
(`segments/<segment>/`), part of blob names (`state/<destination>/<segment>/...`,
`cdm/<segment>.json`) and of Table keys (`slot|<destination>|<segment>`), and every one of those
must take it as it is. The one rule for segment names wherever they come from: a destination's
`segments`, a snapshot's blob name (`<segment>/<file>`), a CDM entity's name."""

_SEGMENT: Final = re.compile(SEGMENT_PATTERN)
_ENCODED: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_INVISIBLE: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories refused in names: controls, format characters (bidi overrides,
zero-width), surrogates, private use, unassigned, line and paragraph separators."""


class PathError(InputError):
    """A name from outside data that cannot be used: the message says why (and never more than
    a bounded piece of the name)."""


def shown(text: str, limit: int = 120) -> str:
    """A name as it may appear in a message: repr-quoted (control characters escaped), cut to
    about `limit` characters."""
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text):,} characters)"
    return repr(text)


def decode(text: str, *, rounds: int = MAX_DECODE_ROUNDS) -> str:
    """Percent-decode `text` until it stops changing (UTF-8; `%2e%2e` is `..`, `%252e` is too).
    Refused: invalid UTF-8 in an escape, or a name still changing after `rounds` rounds."""
    current = text
    for _ in range(rounds):
        if not _ENCODED.search(current):
            return current
        try:
            current = unquote(current, errors="strict")
        except UnicodeDecodeError:
            raise PathError(f"{shown(text)} holds a percent-escape that is not UTF-8") from None
    if _ENCODED.search(current):
        raise PathError(f"{shown(text)} is percent-encoded more than {rounds} times over")
    return current


def escape_problem(name: str) -> str | None:
    """Why `name`, put into a URL path under its container (or a prefix), could end up outside
    it, or None: a '.' or '..' segment (split on '/' and on '\\', which some HTTP stacks read as
    '/'), a leading '/' or '\\', or a control character (C0, DEL, C1). The least any name from
    outside data must pass; real blob names always do."""
    if name.startswith(("/", "\\")):
        return "it is an absolute path"
    for char in name:
        if ord(char) < 32 or 127 <= ord(char) < 160:
            return f"it holds a control character (U+{ord(char):04X})"
    for segment in re.split(r"[/\\]", name):
        if segment == "..":
            return "it holds a '..' segment"
        if segment == ".":
            return "it holds a '.' segment"
    return None


def name_problem(name: str) -> str | None:
    """Why `name` (already decoded) cannot be a blob name that stays where it is put, or None:
    `escape_problem`, and also an empty name or segment, a backslash, an invisible character,
    a segment ending with '.', over Azure's 1,024 characters or 254 segments."""
    if not name:
        return "it is empty"
    if len(name) > MAX_BLOB_NAME:
        return f"it is {len(name):,} characters long; a blob name has at most {MAX_BLOB_NAME:,}"
    problem = escape_problem(name)
    if problem:
        return problem
    if "\\" in name:
        return "it holds a backslash"
    for char in name:
        if unicodedata.category(char) in _INVISIBLE:
            return f"it holds a control or invisible character (U+{ord(char):04X})"
    segments = name.split("/")
    if len(segments) > MAX_SEGMENTS:
        return f"it has {len(segments):,} path segments; a blob name has at most {MAX_SEGMENTS}"
    for segment in segments:
        if not segment:
            return "it holds an empty segment ('//', or a '/' at the end)"
        if segment.endswith("."):
            return "a segment of it ends with '.' (Azure drops such dots: another name)"
    return None


def blob_name(raw: str, *, within: str = "", decoded: bool = False) -> str:
    """`raw` decoded (unless `decoded`: it is already) and checked as a blob name; with `within`
    (a folder, without its trailing '/'), it must also be inside that folder. Returns the name to
    use; raises PathError saying why not."""
    name = raw if decoded else decode(raw)
    problem = name_problem(name)
    if problem:
        raise PathError(f"{shown(raw)} cannot be a blob name: {problem}")
    if within and not name.startswith(within.rstrip("/") + "/"):
        raise PathError(f"{shown(raw)} is not inside {shown(within.rstrip('/') + '/')}")
    return name


def valid_segment(name: object) -> bool:
    """Whether `name` is a segment name (see SEGMENT_PATTERN)."""
    return isinstance(name, str) and _SEGMENT.fullmatch(name) is not None


def segment_problem(name: str) -> str | None:
    """Why `name` cannot be a segment name, or None."""
    if valid_segment(name):
        return None
    if not name:
        return "it is empty"
    if len(name) > MAX_SEGMENT_NAME:
        return f"it is {len(name):,} characters long (at most {MAX_SEGMENT_NAME})"
    bad = next(c for c in name if not (c.isascii() and (c.isalnum() or c in "-_")))
    if bad == " ":
        what = "a space"
    elif not bad.isprintable() or bad.isspace():
        what = f"a control or invisible character (U+{ord(bad):04X})"
    else:
        what = repr(bad)
    return f"it holds {what}: only letters, digits, '-' and '_' are allowed"
