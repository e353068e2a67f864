"""The run flow for functional tests: in-memory storage, ledger and destinations, the real
SendGrid sandbox over HTTP, and the test delivering the queue messages itself (`pump`), so
repeats, faults, poison and waiting are exact to stage.

Each test module subclasses `FlowWorld` with the helpers its own tests read best with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from exporter.adapters.secrets import EnvSecretProvider
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.flow import plan, sending, verification
from exporter.flow.services import Services
from exporter.model.destinations import Consent, Destination
from exporter.model.messages import (
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
    decode,
)
from tests.support.fakes import MemoryStorage
from tests.support.memory_destinations import MemoryDestinationStore
from tests.support.memory_ledger import MemoryRunLedger
from tests.support.sandbox import SandboxProcess


@dataclass
class FlowWorld:
    svc: Services
    storage: MemoryStorage
    ledger: MemoryRunLedger
    destinations: MemoryDestinationStore
    client: SendGridClient
    """The test's own client of the sandbox (to make lists and fields)."""
    sandbox: SandboxProcess

    @classmethod
    def connect(
        cls, sandbox: SandboxProcess, key: str, *, secret: str | None = None, **options: Any
    ) -> Self:
        """The flow on `sandbox`: the test's client uses `key`; the flow reads the API key from
        the secret SENDGRID_KEY_FLOW, which holds `secret` (default: `key`). `options` are further
        `Services` fields (looks at a list are taken at once, and again 0.2 s later,
        unless they say otherwise)."""
        settings = SendGridSettings(base_url=sandbox.url, timeout_seconds=5)
        options = {"verify_delay": 0.0, "verify_lag": 0.2, **options}
        sandbox.faults(export_delay=0.05)
        storage = MemoryStorage()
        ledger = MemoryRunLedger()
        destinations = MemoryDestinationStore()
        svc = Services(
            storage=storage,
            ledger=ledger,
            destinations=destinations,
            secrets=EnvSecretProvider({"SENDGRID_KEY_FLOW": key if secret is None else secret}),
            clients=lambda key: SendGridClient(key, settings),
            **options,
        )
        return cls(svc, storage, ledger, destinations, SendGridClient(key, settings), sandbox)

    def plan_queued(self) -> None:
        """Deliver the queued export requests (plan their runs), and nothing else."""
        for m in self.storage.take(EXPORT_REQUESTS):
            plan.plan_run(self.svc, decode(ExportRequest, m.body))

    def take_batches(self) -> list[BatchMessage]:
        """The queued batch messages, taken off the queue for the test to deliver itself."""
        return [decode(BatchMessage, m.body) for m in self.storage.take(CONTACT_BATCHES)]

    def pump(self, *, max_rounds: int = 500) -> None:
        """Deliver every queued request, batch, job check and look at a list (not the delayed
        looks at a CDM folder): deferred batches after their delay (as the queue would, at most
        3 s), job checks and export polls after the sandbox's short delays rather than the
        real ones."""
        for _ in range(max_rounds):
            requests = self.storage.take(EXPORT_REQUESTS)
            batches = self.storage.take(CONTACT_BATCHES)
            jobs = self.storage.take(IMPORT_JOBS)
            looks = self.storage.take(LIST_CHECKS)
            if not (requests or batches or jobs or looks):
                return
            for m in requests:
                plan.plan_run(self.svc, decode(ExportRequest, m.body))
            if any(m.delay for m in batches):
                time.sleep(min(3.0, max(m.delay for m in batches)))  # as the queue would
            for m in batches:
                sending.send_batch(self.svc, decode(BatchMessage, m.body))
            if jobs:
                time.sleep(0.1)
            for m in jobs:
                sending.follow_job(self.svc, decode(JobCheck, m.body))
            if looks:
                time.sleep(min(0.2, max(m.delay for m in looks)))
            for m in looks:
                verification.check_list(self.svc, decode(ListCheck, m.body))
        raise AssertionError("the flow did not settle")


CONSENT = Consent(accepted_by="dpo@company.example", accepted_at=datetime(2026, 11, 1, tzinfo=UTC))


@dataclass
class ListWorld(FlowWorld):
    """A flow world with one SendGrid list, and destination `marketing` of segment `loyal`."""

    list_id: str = ""

    def destination(self, **changes: object) -> Destination:
        """Save destination `marketing` (consent recorded, key in SENDGRID_KEY_FLOW) with
        `changes`."""
        values: dict[str, object] = {
            "name": "marketing",
            "display_name": "Marketing",
            "list_id": self.list_id,
            "api_key_secret": "SENDGRID_KEY_FLOW",
            "segments": ["loyal"],
            "consent": CONSENT,
        }
        values.update(changes)
        destination = Destination.model_validate(values)
        self.destinations.put(destination)
        return destination

    def requests_to(self, prefix: str) -> int:
        """Requests the sandbox answered (or dropped) whose "METHOD /path" starts so."""
        return sum(n for k, n in self.sandbox.requests().items() if k.startswith(prefix))
