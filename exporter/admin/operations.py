"""What an operator does by hand: drop a snapshot, follow its runs (or any runs) to their end.

Destinations, exports on demand and run details (shared by the CLI and the HTTP API) are in
`exporter.admin.destinations`, `exporter.admin.exports` and `exporter.admin.runs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.admin.views import Progress, progress
from exporter.core.errors import InputError
from exporter.flow.run_requests import segment_of
from exporter.flow.services import Services
from exporter.model.runs import RunRecord
from exporter.model.versions import SnapshotVersion, is_snapshot_file
from exporter.ports.storage import AdminStorage


def upload_snapshot(storage: AdminStorage, path: Path, segment: str) -> SnapshotVersion:
    """Put a local file where the data platform would: `segments/<segment>/<file name>`."""
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    if not segment or "/" in segment:
        raise InputError(f"segment {segment!r} must be a folder name (no '/')")
    name = f"{segment}/{path.name}"
    if not is_snapshot_file(name):
        raise InputError(f"{path.name}: a snapshot is a .csv or .jsonl file, optionally .gz")
    with path.open("rb") as data:
        return storage.upload_snapshot(name, data, path.stat().st_size)


def expected_destinations(svc: Services, version: SnapshotVersion) -> list[str]:
    segment = segment_of(version.name)
    return [d.name for d in svc.destinations.all() if segment in d.segments]


def runs_of(svc: Services, version: SnapshotVersion) -> list[RunRecord]:
    return [
        r
        for r in svc.ledger.runs(limit=500)
        if r.snapshot == version.name and r.etag == version.etag
    ]


def follow(
    svc: Services,
    version: SnapshotVersion,
    expected: int,
    *,
    timeout: float,
    on_progress: Callable[[dict[str, Progress]], None],
    poll: float = 0.5,
) -> list[RunRecord]:
    """Wait until the `expected` runs of this snapshot version exist and have all finished."""
    return _watch(
        svc,
        lambda: runs_of(svc, version),
        lambda found: len(found) >= expected,
        lambda found, finished: f"{len(found)} of {expected} runs found, {finished} finished",
        timeout=timeout,
        on_progress=on_progress,
        poll=poll,
    )


def follow_runs(
    svc: Services,
    run_ids: Sequence[str],
    *,
    timeout: float,
    on_progress: Callable[[dict[str, Progress]], None],
    poll: float = 0.5,
) -> list[RunRecord]:
    """Wait until these runs have all finished, reporting their progress on every change."""
    missing = [run_id for run_id in run_ids if svc.ledger.get_run(run_id) is None]
    if missing:
        raise InputError(f"no run {', '.join(repr(m) for m in missing)}")
    return _watch(
        svc,
        lambda: [r for r in map(svc.ledger.get_run, run_ids) if r is not None],
        lambda found: True,
        lambda found, finished: f"{finished} of {len(run_ids)} runs finished",
        timeout=timeout,
        on_progress=on_progress,
        poll=poll,
    )


def _watch(
    svc: Services,
    find: Callable[[], list[RunRecord]],
    enough: Callable[[list[RunRecord]], bool],
    describe: Callable[[list[RunRecord], int], str],
    *,
    timeout: float,
    on_progress: Callable[[dict[str, Progress]], None],
    poll: float,
) -> list[RunRecord]:
    """Report the progress of the runs `find` returns until `enough` of them exist and all have
    finished; after `timeout` seconds, TimeoutError with what `describe` says of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        states = {r.run_id: progress(r, svc.ledger.batches(r.run_id)) for r in found}
        on_progress(states)
        finished = sum(p.final for p in states.values())
        if enough(found) and finished == len(states):
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{describe(found, finished)} after {timeout:.0f} s")
        time.sleep(poll)
