"""Fixtures shared by all suites: the SendGrid sandbox, one process per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.local.azurite import AzuriteProcess
from tests.support.azurite import start_test_azurite
from tests.support.sandbox import SandboxProcess, start_sandbox


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[SandboxProcess]:
    """The sandbox subprocess, started on first use and stopped at the end of the session,
    also when tests fail."""
    process = start_sandbox()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> SandboxProcess:
    """The session's sandbox, reset: no lists, contacts, jobs or counters; startup faults."""
    if not sandbox_process.alive():
        pytest.fail(f"the sandbox process has exited:\n{sandbox_process.output()}")
    sandbox_process.reset()
    return sandbox_process


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteProcess]:
    """Azurite on free ports with its data in a temporary folder, stopped by PID at the end of
    the session, also when tests fail. Shared: use unique queue and container names."""
    process = start_test_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield process
    finally:
        process.stop()
