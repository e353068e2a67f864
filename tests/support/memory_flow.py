"""The run flow wholly in memory, for fast unit tests: one in-memory fake per port (storage
`MemoryStorage`, ledger `MemoryRunLedger`, destinations `MemoryDestinationStore`, secrets the
app-settings provider over a dict, SendGrid `MemorySendGrid`), and a queue that delivers the
flow's messages in the order they fall due on a fake clock (`pump`): a message hidden for 30
seconds is delivered once the clock has moved 30 seconds on, without anyone sleeping.

The clock is the fake SendGrid's (`sendgrid.now`): import jobs, exports and list lag fall due on
it too, so SendGrid's delays and the flow's waits (job checks, looks at the list, deferrals,
retries) play out in the order they would, in microseconds. The functional tests run the same
flow on the sandbox over HTTP (`tests/support/flow.py`); only what needs a real server or
Azurite stays there.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Self, cast

from exporter.adapters.secrets import EnvSecretProvider
from exporter.flow import arrivals, cdm_folders, plan, poison, sending, verification
from exporter.flow.services import Services
from exporter.model.destinations import Consent, Destination
from exporter.model.messages import (
    CDM_MANIFESTS,
    CONTACT_BATCHES,
    EXPORT_REQUESTS,
    IMPORT_JOBS,
    LIST_CHECKS,
    BatchMessage,
    ExportRequest,
    JobCheck,
    ListCheck,
    ManifestCheck,
    decode,
)
from exporter.model.runs import BatchRecord, RunRecord
from exporter.model.versions import SnapshotVersion
from exporter.ports.storage import AppStorage
from tests.support.fakes import MemoryStorage, Sent
from tests.support.memory_destinations import MemoryDestinationStore
from tests.support.memory_ledger import MemoryRunLedger
from tests.support.memory_sendgrid import MemorySendGrid

KEY: Final = "SG.memory-flow-key"
SECRET: Final = "SENDGRID_KEY_FLOW"
CONSENT: Final = Consent(
    accepted_by="dpo@company.example", accepted_at=datetime(2026, 11, 1, tzinfo=UTC)
)
UNVERIFIED: Final = {"verify_up_to": 0, "verify_every": 0}
"""A destination that never reads its list back (unless a run asks)."""

FLOW_QUEUES: Final = (EXPORT_REQUESTS, CONTACT_BATCHES, IMPORT_JOBS, LIST_CHECKS)
"""What `pump` delivers by default (the delayed looks at CDM folders only when asked)."""
VISIBILITY_TIMEOUT: Final = 5.0
"""host.json: seconds before a message whose delivery failed is delivered again."""
MAX_DEQUEUE_COUNT: Final = 5
"""host.json: deliveries before the host moves a message to its poison queue."""


@dataclass(frozen=True)
class Delivery:
    """One delivery `pump` made: the queue, the decoded message, the fake clock's time, and
    the error it raised ("" when none)."""

    queue: str
    message: Any
    at: float
    error: str = ""


@dataclass(order=True)
class _Due:
    due: float
    seq: int
    sent: Sent = field(compare=False)
    dequeued: int = field(default=0, compare=False)


@dataclass
class MemoryWorld:
    svc: Services
    storage: MemoryStorage
    ledger: MemoryRunLedger
    destinations: MemoryDestinationStore
    sendgrid: MemorySendGrid
    list_id: str
    """The SendGrid list destination `marketing` exports to (made by `create`)."""
    deliveries: list[Delivery] = field(default_factory=list)
    _pending: list[_Due] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def create(
        cls,
        *,
        api_key: str | None = KEY,
        secret: str | None = None,
        job_delay: float = 0.5,
        export_delay: float = 0.5,
        list_lag: float = 0.0,
        **options: Any,
    ) -> Self:
        """The flow on a fresh fake SendGrid account holding one list. The flow reads its key
        from the secret SENDGRID_KEY_FLOW, holding `secret` (default: `api_key`, the one key the
        account takes; None takes any). `options` are further `Services` fields; looks at the
        list keep their real delays (`verify_delay` 60 s, `verify_lag` 300 s): the clock is
        fake."""
        sendgrid = MemorySendGrid(
            api_key=api_key, job_delay=job_delay, export_delay=export_delay, list_lag=list_lag
        )
        storage, ledger, destinations = MemoryStorage(), MemoryRunLedger(), MemoryDestinationStore()
        key = secret if secret is not None else (api_key or KEY)
        svc = Services(
            storage=cast(AppStorage, storage),  # the flow's part of it (no uploads, no admin)
            ledger=ledger,
            destinations=destinations,
            secrets=EnvSecretProvider({SECRET: key}),
            clients=sendgrid.client,
            **options,
        )
        list_id = sendgrid.store.create_list("flow test").id
        return cls(svc, storage, ledger, destinations, sendgrid, list_id)

    # --- the world's parts ------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.sendgrid.now

    def destination(self, **changes: object) -> Destination:
        """Save destination `marketing` (segment `loyal`, consent recorded, key in
        SENDGRID_KEY_FLOW, this world's list) with `changes`."""
        values: dict[str, object] = {
            "name": "marketing",
            "display_name": "Marketing",
            "list_id": self.list_id,
            "api_key_secret": SECRET,
            "segments": ["loyal"],
            "consent": CONSENT,
        }
        values.update(changes)
        destination = Destination.model_validate(values)
        self.destinations.put(destination)
        return destination

    def drop(self, name: str, data: str | bytes) -> SnapshotVersion:
        """Put a snapshot blob at `segments/<name>`."""
        return self.storage.put_snapshot(name, data.encode() if isinstance(data, str) else data)

    def arrive(self, name: str, data: str | bytes) -> list[str]:
        """Drop a snapshot and fire the blob trigger: the run ids it requested."""
        return arrivals.on_snapshot(self.svc, self.drop(name, data))

    def run(self, run_id: str) -> RunRecord:
        found = self.ledger.get_run(run_id)
        assert found is not None, f"no run {run_id}"
        return found

    def only_run(self) -> RunRecord:
        (run,) = self.ledger.runs()
        return run

    def latest(self) -> RunRecord:
        return self.ledger.runs()[0]

    def batches(self, run_id: str) -> list[BatchRecord]:
        return self.ledger.batches(run_id)

    def members(self, list_id: str | None = None) -> dict[str, dict[str, Any]]:
        """The list as SendGrid shows it now: email -> fields."""
        return self.sendgrid.members(list_id or self.list_id)

    def emails(self, list_id: str | None = None) -> set[str]:
        return set(self.members(list_id))

    def run_files(self, run_id: str) -> list[str]:
        return sorted(n for n in self.storage.blobs if n.startswith(f"runs/{run_id}/"))

    # --- the queues ---------------------------------------------------------------------------

    def queued(self, queue: str) -> list[Any]:
        """The messages waiting in `queue` (decoded), left there."""
        return [decode_sent(s) for s in self.storage.queues[queue]]

    def take(self, queue: str) -> list[Any]:
        """The messages waiting in `queue` (decoded), taken off it for the test to deliver."""
        return [decode_sent(s) for s in self.storage.take(queue)]

    def take_batches(self) -> list[BatchMessage]:
        return self.take(CONTACT_BATCHES)

    def deliver(self, message: Any) -> None:
        """Deliver one message to its step now (the clock does not move)."""
        HANDLERS[_queue_of(message)](self, message)

    def deliver_all(self, queue: str) -> None:
        """Deliver the messages waiting in `queue` now, in order (the clock does not move);
        messages they queue stay queued."""
        for message in self.take(queue):
            self.deliver(message)

    def plan_queued(self) -> None:
        """Deliver the queued export requests (plan their runs), and nothing else."""
        self.deliver_all(EXPORT_REQUESTS)

    def advance(self, seconds: float) -> None:
        self.sendgrid.advance(seconds)

    def pump(
        self,
        *,
        cdm: bool = False,
        host: bool = False,
        max_steps: int = 20_000,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Deliver the flow's queued messages one at a time, the earliest due first (ties in the
        order they were sent), moving the fake clock to each one's time (as the queue would
        hide it), until none is left (or `until()` holds). `cdm`: the delayed looks at CDM
        folders too.

        A step that raises: with `host`, as the Functions host does (the message again after
        the visibility timeout, then after `MAX_DEQUEUE_COUNT` deliveries its poison handler);
        without, the error propagates and the message is back in its queue, with every other
        undelivered one (as after a crashed worker)."""
        queues = (*FLOW_QUEUES, CDM_MANIFESTS) if cdm else FLOW_QUEUES
        try:
            for _ in range(max_steps):
                self._collect(queues)
                if not self._pending or (until is not None and until()):
                    return
                item = heapq.heappop(self._pending)
                self.sendgrid.now = max(self.sendgrid.now, item.due)
                self.sendgrid.settle()
                self._deliver_due(item, host=host)
            raise AssertionError(f"the flow did not settle in {max_steps} deliveries")
        finally:
            self._put_back()

    def _collect(self, queues: Iterable[str]) -> None:
        for queue in queues:
            for sent in self.storage.take(queue):
                due = self.sendgrid.now + sent.delay
                heapq.heappush(self._pending, _Due(due, next(self._seq), sent))

    def _deliver_due(self, item: _Due, *, host: bool) -> None:
        message = decode_sent(item.sent)
        try:
            self.deliver(message)
        except Exception as exc:
            self.deliveries.append(Delivery(item.sent.queue, message, self.now, repr(exc)))
            item.dequeued += 1
            if not host:
                heapq.heappush(self._pending, _Due(self.now, -1, item.sent, item.dequeued))
                raise
            if item.dequeued >= MAX_DEQUEUE_COUNT:
                POISON_HANDLERS[item.sent.queue](self.svc, message)
            else:
                due = self.now + VISIBILITY_TIMEOUT
                heapq.heappush(self._pending, _Due(due, next(self._seq), item.sent, item.dequeued))
            return
        self.deliveries.append(Delivery(item.sent.queue, message, self.now))

    def _put_back(self) -> None:
        """Undelivered messages back into their queues, hidden for what is left of their delay."""
        while self._pending:
            item = heapq.heappop(self._pending)
            sent = item.sent
            left = max(0.0, item.due - self.sendgrid.now)
            self.storage.queues[sent.queue].append(Sent(sent.queue, sent.body, left))

    def delivered(self, queue: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.queue == queue]


_MODELS: Final[dict[str, type[Any]]] = {
    EXPORT_REQUESTS: ExportRequest,
    CONTACT_BATCHES: BatchMessage,
    IMPORT_JOBS: JobCheck,
    LIST_CHECKS: ListCheck,
    CDM_MANIFESTS: ManifestCheck,
}


def decode_sent(sent: Sent) -> Any:
    return decode(_MODELS[sent.queue], sent.body)


def _queue_of(message: Any) -> str:
    return next(q for q, model in _MODELS.items() if isinstance(message, model))


HANDLERS: Final[dict[str, Callable[[MemoryWorld, Any], object]]] = {
    EXPORT_REQUESTS: lambda w, m: plan.plan_run(w.svc, m),
    CONTACT_BATCHES: lambda w, m: sending.send_batch(w.svc, m),
    IMPORT_JOBS: lambda w, m: sending.follow_job(w.svc, m),
    LIST_CHECKS: lambda w, m: verification.check_list(w.svc, m),
    CDM_MANIFESTS: lambda w, m: cdm_folders.check_manifest(w.svc, m, at=w.sendgrid.at()),
}
"""Each queue's step, as the triggers call it (`exporter.triggers`)."""

POISON_HANDLERS: Final[dict[str, Callable[[Services, Any], None]]] = {
    EXPORT_REQUESTS: poison.request_poisoned,
    CONTACT_BATCHES: poison.batch_poisoned,
    IMPORT_JOBS: poison.job_poisoned,
    LIST_CHECKS: poison.list_check_poisoned,
    CDM_MANIFESTS: poison.manifest_poisoned,
}


def segment_csv(n: int, *, extra: str = "", start: int = 0) -> str:
    """`Email,FirstName,City` rows for user<i>@example.com, i in [start, start + n)."""
    rows = ["Email,FirstName,City"]
    rows += [f"user{i}@example.com,Name{i},City{i % 7}" for i in range(start, start + n)]
    return "\n".join(rows) + "\n" + extra


def people(*numbers: int, name: str = "Name") -> str:
    """`Email,FirstName,City` rows for these user numbers."""
    rows = ["Email,FirstName,City"] + [f"user{i}@example.com,{name}{i},X" for i in numbers]
    return "\n".join(rows) + "\n"


def emails(numbers: Iterable[int]) -> set[str]:
    return {f"user{i}@example.com" for i in numbers}
