"""The polling thread each queue, blob and timer function gets; it can be asked to stop
(finishing its work in flight) or to abandon that work, and it starts no new work while
`disabled()` says its function is switched off (`AzureWebJobs.<function>.Disabled`)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger("exporter.local.host")


def _never() -> bool:
    return False


class Listener:
    """A polling thread that can be asked to stop (finish in-flight work) or to abandon it."""

    def __init__(self, name: str) -> None:
        self._thread = threading.Thread(target=self._guarded_run, name=name, daemon=True)
        self._stopping = threading.Event()
        self._abandoned = threading.Event()
        self._events: queue.Queue[Any] = queue.Queue()
        self.disabled: Callable[[], bool] = _never
        """Whether the function is switched off now (asked before each poll or firing)."""

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stopping.set()
        self._events.put(None)

    def abandon(self) -> None:
        self._abandoned.set()
        self._events.put(None)

    def join(self, timeout: float) -> bool:
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=max(0.0, timeout))
        return not self._thread.is_alive()

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception:
            logger.exception("%s stopped on an unexpected error", self._thread.name)

    def _run(self) -> None:
        raise NotImplementedError

    def _next_event(self, timeout: float) -> Iterator[Any]:
        """Events (completions) that arrive within `timeout`, then any already queued."""
        try:
            first = self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return
        yield first
        while True:
            try:
                yield self._events.get_nowait()
            except queue.Empty:
                return
