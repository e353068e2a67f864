"""The flow's unit tests run on one in-memory fake per port (`tests/support/memory_flow.py`)."""

from __future__ import annotations

import pytest

from tests.support.memory_flow import MemoryWorld


@pytest.fixture
def world() -> MemoryWorld:
    """The flow on a fresh fake SendGrid account with one list; 40 contacts per batch."""
    return MemoryWorld.create(max_batch_contacts=40)
