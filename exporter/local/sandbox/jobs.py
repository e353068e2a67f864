"""The sandbox's job thread: it finishes each pending import job and contact export once its
delay has passed (rolling the dice for injected failures and errored contacts), and makes lagged
list changes visible when due; it sleeps until the next of them is due, or until woken."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from exporter.local.sandbox.faults import Dice, Faults
from exporter.local.sandbox.store import SandboxStore
from exporter.local.sandbox.store_model import NotFound

log = logging.getLogger("exporter.local.sandbox")


class JobRunner:
    """The job thread of one sandbox; `faults` gives the faults in force. Started by `start()`,
    woken by `wake()` (a job or export was queued, the faults changed), stopped by `close()`."""

    def __init__(
        self,
        store: SandboxStore,
        faults: Callable[[], Faults],
        dice: Dice,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        """`changed` is called after the thread finished a job or an export."""
        self._store = store
        self._changed = changed
        self._faults = faults
        self._dice = dice
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        """Finish each pending import job and export once its delay has passed, and make lagged
        list changes visible when due; sleeps until the next of them is due."""
        while not self._stopping.is_set():
            self._wake.clear()
            finished = False
            try:
                finished = self._finish_due_jobs()
            except Exception:  # keep the thread alive; a broken job must not stop the others
                log.exception("import job failed inside the sandbox")
            try:
                finished = self._finish_due_exports() or finished
            except Exception:
                log.exception("contact export failed inside the sandbox")
            if finished:
                self._changed()
            self._store.apply_due_changes()
            next_due = self._store.next_due()
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            self._wake.wait(timeout)

    def _finish_due_jobs(self) -> bool:
        """Whether any job was due."""
        due = self._store.due_jobs(time.monotonic())
        for job_id in due:
            job = self._store.job(job_id)
            if job is None:  # reset in between
                continue
            faults = self._faults()
            fail = self._dice.roll(faults.job_fail_rate)
            errored: set[int] = set()
            if not fail and faults.contact_error_rate > 0:
                errored = {
                    i
                    for i in range(job.requested_count)
                    if self._dice.roll(faults.contact_error_rate)
                }
            try:
                self._store.apply_upsert(
                    job_id, error_indexes=errored, fail=fail, lag=faults.list_lag
                )
            except NotFound:
                continue
        return bool(due)

    def _finish_due_exports(self) -> bool:
        """Whether any export was due."""
        due = self._store.due_exports(time.monotonic())
        for export_id in due:
            fail = self._dice.roll(self._faults().export_fail_rate)
            started = time.perf_counter()
            try:
                done = self._store.finish_export(
                    export_id, fail=fail, message="the export failed (injected fault)"
                )
            except NotFound:  # reset in between
                continue
            log.info(
                "export %s %s: %s contacts, %d files in %.1fs",
                export_id,
                done.status,
                done.contact_count,
                done.file_count,
                time.perf_counter() - started,
            )
        return bool(due)
