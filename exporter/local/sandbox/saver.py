"""The thread that keeps the sandbox's state file current (`persist` writes it): a save a
little after each change, and a last one at a clean stop."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Final

from exporter.local.sandbox.persist import save
from exporter.local.sandbox.store import SandboxStore

log = logging.getLogger("exporter.local.sandbox")

SAVE_INTERVAL: Final = 2.0
"""Seconds from a change to its save (at least; see `Saver`)."""


class Saver:
    """Saves the store to its file after changes (`changed()`), at most every `interval`
    seconds and never more often than five times the last save took; `close()` saves what is
    left and stops."""

    def __init__(self, store: SandboxStore, path: Path, interval: float = SAVE_INTERVAL) -> None:
        self._store = store
        self._path = path
        self._interval = interval
        self._generation = 0
        self._saved = 0
        self._lock = threading.Lock()  # one save at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_took = 0.0
        self._thread = threading.Thread(target=self._run, name="sandbox-saver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def changed(self) -> None:
        """Something in the store changed (or may have): save it soon."""
        self._generation += 1
        self._wake.set()

    def save(self, reason: str = "after changes") -> None:
        with self._lock:
            generation = self._generation
            if generation == self._saved:
                return
            started = time.perf_counter()
            try:
                counts = save(self._store, self._path)
            except OSError as exc:
                log.warning("could not save the sandbox state to %s: %s", self._path, exc)
                return
            self._last_took = time.perf_counter() - started
            self._saved = generation
        log.info(
            "sandbox state saved %s: %d contacts, %d lists in %.2f s",
            reason,
            counts["contacts"],
            counts["lists"],
            self._last_took,
        )

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=60)
        self.save("at stop")

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.wait(max(self._interval, 5 * self._last_took)):
                return
            self._wake.clear()
            self.save()
