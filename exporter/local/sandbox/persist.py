"""The sandbox's store kept in a file between runs (`--state-file PATH`; `exporter up` uses one
beside Azurite's data), so lists, contacts and their ids, custom fields, import jobs and
exports outlive a restart as they outlive nothing in SendGrid.

Loaded once at start (a file that does not exist is an empty store; one that cannot be read
stops the start, naming the line: delete it, or `exporter up --fresh`). Saved by a thread
`save_interval` seconds after a change (never more often than five times the last save took,
so a million contacts cost at most a fifth of a core), and at a clean stop; a crash loses at
most the changes since the last save. Each save writes a temporary file beside the state,
fsyncs it and renames it over the state: the file is always a whole save, old or new.

The store is copied under its lock (references to the immutable emails and field texts, the
timestamp arrays, each list's members: tens of milliseconds for a million contacts) and
written outside it, so the API is not held up while the file is written.

Format: UTF-8 lines, tab-separated, one record each: the magic line, `H` (header: ids, custom
fields, counts), `C` per contact slot in slot order (created ms, updated ms, the email as a JSON
string, its fields as compact JSON or empty; a deleted contact's email is ""), `A` per
alternate email, `L` per list then `M` lines of its member slots, `J` per import job, `X` per
export, `E` at the end. Lagged list changes are saved as applied; an export's files are not
saved (they have expired after a restart: a client asks for a new export); pending jobs and
exports keep the time they had left. About 60 bytes per contact plus its fields.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Any, Final

from exporter.local.sandbox.store import SandboxStore, _Job
from exporter.local.sandbox.store_exports import _Export
from exporter.local.sandbox.store_model import CustomField
from exporter.local.sandbox.store_state import ListState

MAGIC: Final = b"#sendgrid-sandbox-state 1\n"
_MEMBERS_PER_LINE: Final = 10_000
_BUFFER: Final = 1 << 20
_ID_PREFIX: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-")
_FIELD_TYPES: Final = ("Text", "Number", "Date")
_JOB_STATUSES: Final = ("pending", "completed", "errored", "failed")
_EXPORT_STATUSES: Final = ("pending", "ready", "failure")


class StateFileError(Exception):
    """The state file cannot be read; the message names the file (and the line)."""


@dataclass(slots=True)
class _Snapshot:
    """The store as it was at one moment: what `write` needs, taken under the store's lock."""

    header: dict[str, Any]
    emails: list[str]
    fields: list[bytes | None]
    created: array[int]
    updated: array[int]
    alternates: list[tuple[str, int]]
    lists: list[tuple[str, str, set[int]]]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)


def snapshot(store: SandboxStore) -> _Snapshot:
    """A consistent copy of the store, cheap enough to take under its lock."""
    with store._lock:
        now = store._monotonic()
        members = {x.id: set(x.members) for x in store._lists.values()}
        for change in store._changes:  # saved as applied
            target = members.get(change.list_id)
            if target is None:
                continue
            if change.join:
                target.update(s for s in change.slots if store._emails[s])
            else:
                target.difference_update(change.slots)
        return _Snapshot(
            header={
                "saved_at": store._clock(),
                "id_prefix": store._id_prefix,
                "id_mask": store._id_mask,
                "custom_fields": [
                    [f.id, f.name, f.field_type] for f in store._custom_fields.values()
                ],
                "contacts": len(store._emails),
            },
            emails=list(store._emails),
            fields=list(store._fields),
            created=array("q", store._created_ms),
            updated=array("q", store._updated_ms),
            alternates=list(store._by_alternate.items()),
            lists=[(x.id, x.name, members[x.id]) for x in store._lists.values()],
            jobs=[_job_record(j, now) for j in store._jobs.values()],
            exports=[_export_record(e, now) for e in store._exports.values()],
        )


def _job_record(job: _Job, now: float) -> dict[str, Any]:
    return {
        "id": job.id,
        "due_in": max(0.0, job.due - now),
        "started_at": job.started_at,
        "contacts": job.contacts,  # the pending job's list: never changed, only dropped
        "list_ids": list(job.list_ids),
        "status": job.status,
        "created": job.created,
        "updated": job.updated,
        "errors": list(job.errors),
        "requested": job.requested,
        "finished_at": job.finished_at,
    }


def _export_record(export: _Export, now: float) -> dict[str, Any]:
    return {
        "id": export.id,
        "list_ids": list(export.list_ids),
        "file_type": export.file_type,
        "max_file_bytes": export.max_file_bytes,
        "due_in": max(0.0, export.due - now),
        "created_at": export.created_at,
        "updated_at": export.updated_at,
        "token": export.token,
        "status": export.status,
        "completed_at": export.completed_at,
        "contact_count": export.contact_count,
        "message": export.message,
        "file_count": export.file_count,
    }


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def write(state: _Snapshot, out: IO[bytes]) -> None:
    """The snapshot as the file's lines."""
    out.write(MAGIC)
    out.write(b"H\t" + _json(state.header) + b"\n")
    chunk: list[bytes] = []
    fields, created, updated = state.fields, state.created, state.updated
    for slot, email in enumerate(state.emails):
        chunk.append(
            b"C\t%d\t%d\t%s\t%s\n"
            % (created[slot], updated[slot], encode_basestring(email).encode(), fields[slot] or b"")
        )
        if len(chunk) >= 10_000:
            out.writelines(chunk)
            chunk.clear()
    out.writelines(chunk)
    for alternate, slot in state.alternates:
        out.write(b"A\t%d\t%s\n" % (slot, encode_basestring(alternate).encode()))
    for list_id, name, members in state.lists:
        out.write(b"L\t" + _json([list_id, name, len(members)]) + b"\n")
        ordered = sorted(members)
        for start in range(0, len(ordered), _MEMBERS_PER_LINE):
            part = ordered[start : start + _MEMBERS_PER_LINE]
            out.write(b"M\t" + ",".join(map(str, part)).encode() + b"\n")
    for job in state.jobs:
        out.write(b"J\t" + _json(job) + b"\n")
    for export in state.exports:
        out.write(b"X\t" + _json(export) + b"\n")
    counts = {"contacts": len(state.emails), "lists": len(state.lists), "jobs": len(state.jobs)}
    out.write(b"E\t" + _json(counts) + b"\n")


def save(store: SandboxStore, path: Path) -> dict[str, int]:
    """Write the store to `path` atomically (a temporary file, fsync, rename); the counts."""
    state = snapshot(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb", buffering=_BUFFER) as out:
            write(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return {"contacts": len(state.emails), "lists": len(state.lists)}


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # not every file system syncs folders
    finally:
        os.close(handle)


class _Reader:
    """The file's lines with their numbers; `fail` names the file and line."""

    def __init__(self, path: Path, lines: Iterator[bytes]) -> None:
        self.path = path
        self._lines = lines
        self.number = 0

    def next(self) -> tuple[bytes, bytes]:
        """(record kind, the rest of the line)."""
        line = next(self._lines, None)
        self.number += 1
        if line is None:
            raise self.fail("the file ends early (no end record): it was not written whole")
        if not line.endswith(b"\n"):
            raise self.fail("the last line is cut short: the file was not written whole")
        kind, _, rest = line[:-1].partition(b"\t")
        return kind, rest

    def fail(self, why: str) -> StateFileError:
        return StateFileError(
            f"cannot read the sandbox state {self.path}, line {self.number}: {why} "
            f"(delete the file, or start `exporter up --fresh`, to start empty)"
        )


def load(store: SandboxStore, path: Path) -> dict[str, int] | None:
    """Fill an empty store from `path`; None when the file does not exist."""
    try:
        handle = path.open("rb", buffering=_BUFFER)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read the sandbox state {path}: {exc}") from exc
    with handle:
        reader = _Reader(path, iter(handle))
        if handle.readline() != MAGIC:
            reader.number = 1
            raise reader.fail("not a sandbox state file (or another version of it)")
        reader.number = 1
        try:
            return _read(store, reader)
        except StateFileError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
            raise reader.fail(f"{type(exc).__name__}: {exc}") from None


def _read(store: SandboxStore, reader: _Reader) -> dict[str, int]:
    kind, rest = reader.next()
    if kind != b"H":
        raise reader.fail("expected the header")
    header = json.loads(rest)
    prefix, mask = str(header["id_prefix"]), int(header["id_mask"])
    if not _ID_PREFIX.fullmatch(prefix) or not 0 <= mask < 1 << 48:
        raise reader.fail("the contact id prefix or mask is not valid")
    custom: dict[str, CustomField] = {}
    for field_id, name, field_type in header["custom_fields"]:
        if field_type not in _FIELD_TYPES:
            raise reader.fail(f"custom field type {field_type!r}")
        custom[str(field_id)] = CustomField(str(field_id), str(name), field_type)
    total = int(header["contacts"])

    emails: list[str] = []
    fields: list[bytes | None] = []
    created, updated = array("q"), array("q")
    by_email: dict[str, int] = {}
    by_alternate: dict[str, int] = {}
    lists: dict[str, ListState] = {}
    jobs: dict[str, _Job] = {}
    exports: dict[str, _Export] = {}
    current: ListState | None = None
    now = store._monotonic()
    while True:
        kind, rest = reader.next()
        if kind == b"C":
            made, changed, email_json, raw = rest.split(b"\t", 3)
            email = email_json[1:-1].decode() if b"\\" not in email_json else json.loads(email_json)
            if email:
                by_email[email] = len(emails)
            emails.append(email)
            fields.append(raw or None)
            created.append(int(made))
            updated.append(int(changed))
        elif kind == b"A":
            slot_text, alternate = rest.split(b"\t", 1)
            by_alternate[json.loads(alternate)] = _slot(reader, slot_text, len(emails))
        elif kind == b"L":
            list_id, name, _ = json.loads(rest)
            current = lists[str(list_id)] = ListState(str(list_id), str(name))
        elif kind == b"M":
            if current is None:
                raise reader.fail("members before any list")
            current.members.update(_slot(reader, s, len(emails)) for s in rest.split(b","))
        elif kind == b"J":
            job = _job(json.loads(rest), now)
            if job.status not in _JOB_STATUSES:
                raise reader.fail(f"import job status {job.status!r}")
            jobs[job.id] = job
        elif kind == b"X":
            export = _export(json.loads(rest), now)
            if export.status not in _EXPORT_STATUSES or export.file_type not in ("csv", "json"):
                raise reader.fail(f"export status {export.status!r} or type {export.file_type!r}")
            exports[export.id] = export
        elif kind == b"E":
            break
        else:
            raise reader.fail(f"unknown record {kind!r}")
    if len(emails) != total:
        raise reader.fail(f"{len(emails):,} contacts where the header says {total:,}")
    with store._lock:
        store._init_state()
        store._id_prefix, store._id_mask = prefix, mask
        store._emails, store._fields = emails, fields
        store._created_ms, store._updated_ms = created, updated
        store._by_email, store._by_alternate = by_email, by_alternate
        store._lists = lists
        store._list_names = {x.name for x in lists.values()}
        store._custom_fields = custom
        store._jobs = jobs
        store._exports = exports
        store._kept = deque()
    return {"contacts": len(by_email), "lists": len(lists), "jobs": len(jobs)}


def _slot(reader: _Reader, text: bytes, count: int) -> int:
    slot = int(text)
    if not 0 <= slot < count:
        raise reader.fail(f"contact slot {slot} does not exist")
    return slot


def _job(record: dict[str, Any], now: float) -> _Job:
    contacts = record["contacts"]
    return _Job(
        id=str(record["id"]),
        due=now + float(record["due_in"]),
        started_at=float(record["started_at"]),
        contacts=None if contacts is None else list(contacts),
        list_ids=tuple(map(str, record["list_ids"])),
        status=record["status"],
        created=int(record["created"]),
        updated=int(record["updated"]),
        errors=[(str(e), str(r)) for e, r in record["errors"]],
        requested=int(record["requested"]),
        finished_at=record["finished_at"],
    )


def _export(record: dict[str, Any], now: float) -> _Export:
    return _Export(
        id=str(record["id"]),
        list_ids=tuple(map(str, record["list_ids"])),
        file_type=record["file_type"],
        max_file_bytes=int(record["max_file_bytes"]),
        due=now + float(record["due_in"]),
        created_at=float(record["created_at"]),
        updated_at=float(record["updated_at"]),
        token=str(record["token"]),
        status=record["status"],
        completed_at=record["completed_at"],
        contact_count=record["contact_count"],
        message=str(record["message"]),
        files=None,  # not saved: a ready export's files have expired
        file_count=int(record["file_count"]),
    )
