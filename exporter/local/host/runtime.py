"""`LocalHost`: the function app's triggers running on background threads until `stop()`.

Starting exports the settings, loads the app, checks every binding (nothing starts when one would
not work: HostError), then starts the invoker, one listener per queue, blob and timer function,
the HTTP server, and follows `local.settings.json` (`settings`: API keys and
`AzureWebJobs.<function>.Disabled` apply to the next invocations; other changes say to
restart). Stopping (SIGTERM or SIGINT for the CLI) stops polling and listening, waits for
invocations in flight and settles their messages; one still running at the timeout keeps its
lease until the lease ends, as in Azure. The settings exported and the app module are taken back,
so a test can start another host in the same process.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from exporter.local.host.app import AppModule, FunctionInfo, FunctionSpec, function_spec
from exporter.local.host.blobs import BLOB_POLL_INTERVAL, BlobSlots, blob_listener
from exporter.local.host.config import HostConfig, HostError
from exporter.local.host.http import (
    DEFAULT_HTTP_PORT,
    FUNCTION_KEY_SETTING,
    HttpFunction,
    HttpServer,
    http_function,
)
from exporter.local.host.invoker import Invoker, thread_count
from exporter.local.host.listener import Listener
from exporter.local.host.queues import queue_listener
from exporter.local.host.settings import SETTINGS_POLL_INTERVAL, LiveSettings
from exporter.local.host.timers import timer_listener

logger = logging.getLogger("exporter.local.host")


class LocalHost:
    """Loads the function app and runs its triggers on background threads until `stop()`."""

    def __init__(
        self,
        app_dir: Path | str = ".",
        settings_file: Path | str | None = None,
        host_json: Path | str | None = None,
        http_port: int = DEFAULT_HTTP_PORT,
        *,
        module: str = "function_app",
        http_host: str = "127.0.0.1",
        blob_poll_interval: float = BLOB_POLL_INTERVAL,
        queue_lease: float | None = None,
        defaults: Mapping[str, str] | None = None,
        restart_hint: str = "restart the host",
        settings_poll_interval: float = SETTINGS_POLL_INTERVAL,
    ) -> None:
        """`settings_file` and `host_json` default to those files in `app_dir` when present
        (a `local.settings.json` that appears later is followed too); `http_port` 0 picks a free
        port; `defaults` are settings that the file and the environment override;
        `restart_hint` starts the warning about a change that needs a restart ("restart
        `exporter up`"); `blob_poll_interval` and `queue_lease` (seconds) are there for tests
        (`queue_lease` defaults to the setting LOCAL_HOST_QUEUE_LEASE_SECONDS, else Azure's 10
        minutes)."""
        self.app_dir = Path(app_dir).resolve()
        default_settings = self.app_dir / "local.settings.json"
        self._live = LiveSettings(
            _optional_file(settings_file, default_settings) or default_settings,
            defaults,
            restart_hint=restart_hint,
            poll_interval=settings_poll_interval,
        )
        self._host_json = _optional_file(host_json, self.app_dir / "host.json")
        self._http_port = http_port
        self._http_host = http_host
        self._app_module = AppModule(self.app_dir, module)
        self._blob_poll_interval = blob_poll_interval
        self._queue_lease = queue_lease
        self._settings: dict[str, str] = {}
        self._functions: tuple[FunctionInfo, ...] = ()
        self._listeners: list[Listener] = []
        self._invoker: Invoker | None = None
        self._http: HttpServer | None = None
        self._function_key = ""
        self._started = False
        self._stopped = False
        self._running = False
        self._slots: BlobSlots | None = None

    @property
    def functions(self) -> tuple[FunctionInfo, ...]:
        return self._functions

    @property
    def http_port(self) -> int | None:
        """The port HTTP triggers listen on (None when the app has no HTTP functions)."""
        return None if self._http is None else self._http.port

    @property
    def http_url(self) -> str | None:
        port = self.http_port
        return None if port is None else f"http://{self._http_host}:{port}"

    def disabled(self, function_name: str) -> bool:
        """Whether `AzureWebJobs.<function_name>.Disabled` switches the function off now."""
        return self._live.disabled(function_name)

    @property
    def function_key(self) -> str:
        """The key FUNCTION and ADMIN level HTTP functions accept."""
        return self._function_key

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Load settings, host.json and the app, validate every binding, start the triggers.

        Raises HostError (and starts nothing) when a function cannot run here.
        """
        if self._started:
            raise RuntimeError("this LocalHost was already started")
        self._started = True
        try:
            self._start()
        except BaseException:
            self._teardown(timeout=5)
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and listening, wait up to `timeout` s for invocations in flight."""
        if not self._started or self._stopped:
            return
        self._teardown(timeout)

    def _start(self) -> None:
        self._settings = self._live.load()
        config = HostConfig.load(self._host_json)
        app = self._app_module.load()
        functions = app.get_functions()  # once: it builds (and validates) the functions
        key = self._settings.get(FUNCTION_KEY_SETTING) or ""
        self._function_key = key or secrets.token_urlsafe(24)

        specs = [function_spec(function, config, self._settings) for function in functions]
        self._functions = tuple(FunctionInfo(s.name, s.trigger_type) for s in specs)
        threads = thread_count(self._settings.get("PYTHON_THREADPOOL_THREAD_COUNT"))
        invoker = Invoker(threads, config.function_timeout, str(self.app_dir))
        self._invoker = invoker
        http_functions: list[HttpFunction] = []
        for spec in specs:
            if spec.trigger_type == "httpTrigger":
                http_functions.append(http_function(spec))
            else:
                self._listeners.append(self._listener(spec, invoker, config))
        if http_functions:
            self._http = HttpServer(
                http_functions,
                invoker,
                route_prefix=config.route_prefix,
                function_key=self._function_key,
                disabled=self._live.disabled,
                host=self._http_host,
                port=self._http_port,
            )
            if not key and any(f.auth_level != "ANONYMOUS" for f in http_functions):
                logger.warning(
                    "%s is not set: FUNCTION and ADMIN level HTTP functions accept the key %s "
                    "for this run",
                    FUNCTION_KEY_SETTING,
                    self._function_key,
                )

        invoker.start()
        for listener in self._listeners:
            listener.start()
        if self._http is not None:
            self._http.start()
        self._live.start_following()
        self._running = True
        logger.info(
            "host started: %d functions%s",
            len(specs),
            f", HTTP on {self.http_url}" if self._http else "",
        )

    def _listener(self, spec: FunctionSpec, invoker: Invoker, config: HostConfig) -> Listener:
        listener = self._new_listener(spec, invoker, config)
        listener.disabled = functools.partial(self._live.disabled, spec.name)
        return listener

    def _new_listener(self, spec: FunctionSpec, invoker: Invoker, config: HostConfig) -> Listener:
        if spec.trigger_type == "timerTrigger":
            return timer_listener(spec, invoker)
        if spec.trigger_type == "queueTrigger":
            return queue_listener(spec, invoker, config, self._settings, lease=self._queue_lease)
        if self._slots is None:  # one cap for all blob triggers together
            self._slots = BlobSlots(config.blob_parallelism)
        return blob_listener(
            spec,
            invoker,
            config,
            self._settings,
            poll_interval=self._blob_poll_interval,
            slots=self._slots,
        )

    def _teardown(self, timeout: float) -> None:
        self._stopped = True
        deadline = time.monotonic() + timeout
        for listener in self._listeners:
            listener.request_stop()
        if self._http is not None:
            self._http.stop_accepting()
        for listener in self._listeners:
            if not listener.join(deadline - time.monotonic()):
                listener.abandon()
                listener.join(1.0)
        if self._invoker is not None:
            self._invoker.shutdown(deadline - time.monotonic())
        if self._http is not None:
            self._http.close()
        self._live.stop()
        self._app_module.unload()
        if self._running:
            logger.info("host stopped")
        self._running = False


def _optional_file(given: Path | str | None, default: Path) -> Path | None:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise HostError(f"{path} not found")
        return path
    return default if default.is_file() else None
