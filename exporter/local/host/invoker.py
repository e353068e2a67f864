"""Invocations, run as the Python worker runs them.

Sync functions run on a pool of `PYTHON_THREADPOOL_THREAD_COUNT` threads (default
min(32, CPUs + 4), as the Python worker), async ones on one event loop; a `context` parameter gets
an `azure.functions.Context`; queue output bindings are sent after the function succeeds;
`functionTimeout` (default 30 min, Flex Consumption's; `-1` for none) fails an invocation that
runs longer. At functionTimeout Azure restarts the host; here the invocation counts as failed (its
message is retried), an async function is cancelled, but a sync function's thread cannot be
stopped and runs on. One log line per invocation: the function, outcome, duration and invocation
id, never a message body or blob content.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import azure.functions as func

from exporter.local.host.app import FunctionSpec
from exporter.local.host.config import THREAD_PREFIX, HostError

logger = logging.getLogger("exporter.local.host")


class FunctionTimeoutError(Exception):
    """An invocation ran longer than host.json's functionTimeout."""


class Skip(Exception):
    """The trigger no longer applies (the blob was deleted or overwritten): nothing to retry."""


class _OutValue(func.Out[Any]):
    """The value a function sets on an output binding parameter."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


class _TraceContext(func._abc.TraceContext):
    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func._abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:  # the abstract type has no public concrete class
        return None


class _Context(func.Context):
    """The `context` argument: invocation id and function name, for the app's logs."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:  # declared as a type, the worker passes an instance
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func._abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> func._abc.RetryContext:
        return _RetryContext()


def exception_of(future: concurrent.futures.Future[Any]) -> BaseException | None:
    try:
        return future.exception()
    except concurrent.futures.CancelledError as exc:
        return exc


class Invoker:
    """Runs invocations the way the Python worker does: sync functions on a thread pool, async
    ones on one event loop; applies functionTimeout and sends output bindings on success."""

    def __init__(self, max_workers: int, timeout: float | None, function_directory: str) -> None:
        self._timeout = timeout
        self._directory = function_directory
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=f"{THREAD_PREFIX}-worker"
        )
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(self._pool)
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name=f"{THREAD_PREFIX}-asyncio", daemon=True
        )
        self._idle = threading.Condition()
        self._running = 0

    def start(self) -> None:
        self._loop_thread.start()

    def invoke(
        self, spec: FunctionSpec, make_value: Callable[[], Any]
    ) -> concurrent.futures.Future[Any]:
        """Start one invocation; the future settles with its result, its error, or a timeout.

        `make_value` builds the trigger argument on the worker thread (it may read storage).
        """
        invocation_id = str(uuid.uuid4())
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        outer.set_running_or_notify_cancel()
        started = time.monotonic()
        outer.add_done_callback(lambda done: _log_outcome(spec, invocation_id, started, done))
        with self._idle:
            self._running += 1
        inner: concurrent.futures.Future[Any]
        try:
            if spec.is_async:
                coroutine = self._run_async(spec, make_value, invocation_id)
                try:
                    inner = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
                except RuntimeError:
                    coroutine.close()
                    raise
            else:
                inner = self._pool.submit(self._run_sync, spec, make_value, invocation_id)
                if self._timeout is not None:
                    message = _timeout_message(spec, self._timeout)
                    self._loop.call_soon_threadsafe(
                        self._arm_timeout, outer, self._timeout, message
                    )
        except RuntimeError as exc:  # the host is shutting down
            with self._idle:
                self._running -= 1
                self._idle.notify_all()
            outer.set_exception(exc)
            return outer
        inner.add_done_callback(lambda done: self._settle(outer, done))
        return outer

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout=max(0.0, timeout))

    def shutdown(self, timeout: float) -> None:
        """Wait for running invocations (up to `timeout`), then stop the pool and the loop."""
        idle = self.wait_idle(timeout)
        if not idle:
            logger.warning("stopping with invocations still running: they are abandoned")
        self._pool.shutdown(wait=idle, cancel_futures=True)
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel_tasks_and_stop)
            self._loop_thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def _cancel_tasks_and_stop(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.stop()

    def _arguments(
        self, spec: FunctionSpec, value: Any, invocation_id: str
    ) -> tuple[dict[str, Any], dict[str, _OutValue]]:
        arguments: dict[str, Any] = {spec.trigger_parameter: value}
        if spec.context_parameter is not None:
            arguments[spec.context_parameter] = _Context(invocation_id, spec.name, self._directory)
        outs = {name: _OutValue() for name in spec.outputs}
        arguments.update(outs)
        return arguments, outs

    @staticmethod
    def _flush(spec: FunctionSpec, outs: Mapping[str, _OutValue], result: Any) -> None:
        for name, out in outs.items():
            if out.value is not None:
                spec.outputs[name].send(out.value)
        if spec.return_output is not None and result is not None:
            spec.return_output.send(result)

    def _run_sync(
        self, spec: FunctionSpec, make_value: Callable[[], Any], invocation_id: str
    ) -> Any:
        arguments, outs = self._arguments(spec, make_value(), invocation_id)
        result = spec.user_function(**arguments)
        self._flush(spec, outs, result)
        return result

    async def _run_async(
        self, spec: FunctionSpec, make_value: Callable[[], Any], invocation_id: str
    ) -> Any:
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(None, make_value)
        arguments, outs = self._arguments(spec, value, invocation_id)
        try:
            async with asyncio.timeout(self._timeout) as scope:
                result = await spec.user_function(**arguments)
        except TimeoutError as exc:
            if scope.expired():
                raise FunctionTimeoutError(_timeout_message(spec, self._timeout)) from exc
            raise
        await loop.run_in_executor(None, self._flush, spec, outs, result)
        return result

    def _arm_timeout(
        self, outer: concurrent.futures.Future[Any], timeout: float, message: str
    ) -> None:
        if outer.done():
            return
        handle = self._loop.call_later(timeout, self._expire, outer, message)
        outer.add_done_callback(lambda _: self._call_in_loop(handle.cancel))

    def _call_in_loop(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
            self._loop.call_soon_threadsafe(callback)

    @staticmethod
    def _expire(outer: concurrent.futures.Future[Any], message: str) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            outer.set_exception(
                FunctionTimeoutError(f"{message}; its thread cannot be stopped and runs on")
            )

    def _settle(
        self, outer: concurrent.futures.Future[Any], inner: concurrent.futures.Future[Any]
    ) -> None:
        error = exception_of(inner)
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # it timed out first
            if error is None:
                outer.set_result(inner.result())
            else:
                outer.set_exception(error)
        with self._idle:
            self._running -= 1
            self._idle.notify_all()


def _timeout_message(spec: FunctionSpec, timeout: float | None) -> str:
    return f"{spec.name} ran longer than functionTimeout ({timeout or 0:g} s)"


def _log_outcome(
    spec: FunctionSpec, invocation_id: str, started: float, done: concurrent.futures.Future[Any]
) -> None:
    """One line per invocation: function, outcome, duration, id; never the payload."""
    duration = (time.monotonic() - started) * 1000
    error = exception_of(done)
    tail = f"Id={invocation_id}, Duration={duration:.0f}ms"
    if error is None:
        logger.info("Executed 'Functions.%s' (Succeeded, %s)", spec.name, tail)
    elif isinstance(error, Skip):
        logger.info("Skipped 'Functions.%s' (%s, %s)", spec.name, error, tail)
    elif isinstance(error, FunctionTimeoutError):
        logger.error("Executed 'Functions.%s' (Timeout, %s): %s", spec.name, tail, error)
    else:
        logger.error(
            "Executed 'Functions.%s' (Failed, %s): %s",
            spec.name,
            tail,
            type(error).__name__,
            exc_info=error,
        )


def thread_count(value: str | None) -> int:
    if value:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise HostError(f"PYTHON_THREADPOOL_THREAD_COUNT={value!r} is not a positive number")
        return count
    return min(32, (os.cpu_count() or 1) + 4)
