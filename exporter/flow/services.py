"""What the flow needs from the outside world: the ports, and the settings that shape a run.

Every step of a run (`exporter.flow.plan`, `sending`, `finish`, `verification` …) takes a
`Services`. It reaches storage only through the typed views (`svc.queues`, `svc.batch_blobs`
…), each a Protocol of `exporter.ports.storage` for one thing a step needs, so mypy proves what
each step touches. `exporter.wiring` builds a `Services` from app settings with the Azure and
SendGrid adapters, once per worker process; tests build one from in-memory parts (see
`tests/support/flow.py`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from exporter.core.batching import MAX_CONTACTS
from exporter.core.errors import InputError
from exporter.model.destinations import Destination
from exporter.ports.destinations import DestinationStore
from exporter.ports.ledger import RunLedger
from exporter.ports.notifier import Notifier
from exporter.ports.secrets import SecretProvider
from exporter.ports.sendgrid import SendGrid
from exporter.ports.storage import (
    AppStorage,
    BatchBlobs,
    CdmManifests,
    PendingStates,
    Queues,
    RemovalBlobs,
    ReportBlobs,
    RunFiles,
    SnapshotReads,
    SyncedStates,
)

DEFAULT_VERIFY_DELAY = 60.0
DEFAULT_VERIFY_LAG = 300.0
DEFAULT_REPORT_RETENTION_DAYS = 30
DEFAULT_NOTIFY_RETRY_BASE = 5.0


@dataclass
class Services:
    """What the flow needs from the outside world, and the settings that shape a run."""

    storage: AppStorage
    """All of storage (the administration's part too); the flow's steps reach it through the
    narrow views below, one per thing a step needs (`exporter.ports.storage`)."""
    ledger: RunLedger
    destinations: DestinationStore
    secrets: SecretProvider
    clients: Callable[[str], SendGrid]
    """A SendGrid client for an API key (the wiring gives the adapter's, on the configured base
    URL; a test may give any implementation of the port)."""
    max_batch_contacts: int = MAX_CONTACTS
    """Contacts per upsert request (setting MAX_BATCH_CONTACTS): SendGrid's 30,000 by default;
    smaller batches narrow what one rejected request holds up."""
    cdm_recheck: float = 30.0
    """Seconds between looks at a CDM folder whose model.json arrived before all of its
    partitions (setting CDM_RECHECK_SECONDS)."""
    cdm_wait: float = 1800.0
    """How long after its model.json was written a CDM folder may wait for its partitions
    (setting CDM_WAIT_SECONDS); then its entities' runs fail, naming what never arrived."""
    verify_delay: float = DEFAULT_VERIFY_DELAY
    """Seconds after a run's import jobs settle before its list is read back (setting
    VERIFY_DELAY_SECONDS): SendGrid shows finished imports in lists with a lag."""
    verify_lag: float = DEFAULT_VERIFY_LAG
    """Seconds before a list that differed from the segment is read back again, before anything
    is called drift or sent to heal it (setting VERIFY_LAG_SECONDS)."""
    report_retention_days: int = DEFAULT_REPORT_RETENTION_DAYS
    """Days a run's reject report is kept (setting REJECT_REPORT_RETENTION_DAYS; 0: for
    ever). Contact data is not kept past its run at all."""
    notifier: Notifier | None = None
    """Posts notifications to their targets (`exporter.flow.notify`); None: none is delivered
    (each is recorded failed, saying so)."""
    notify_retry_base: float = DEFAULT_NOTIFY_RETRY_BASE
    """Seconds before a failed notification is posted again, doubling per attempt up to 300 s
    (setting NOTIFY_RETRY_BASE_SECONDS)."""
    _clients: dict[str, tuple[str, SendGrid]] = field(default_factory=dict, repr=False)
    """Per API-key secret name: (the key's SHA-256, the client made with it)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def queues(self) -> Queues:
        return self.storage

    @property
    def snapshots(self) -> SnapshotReads:
        return self.storage

    @property
    def manifests(self) -> CdmManifests:
        return self.storage

    @property
    def batch_blobs(self) -> BatchBlobs:
        return self.storage

    @property
    def removal_blobs(self) -> RemovalBlobs:
        return self.storage

    @property
    def synced_states(self) -> SyncedStates:
        return self.storage

    @property
    def pending_states(self) -> PendingStates:
        return self.storage

    @property
    def run_files(self) -> RunFiles:
        return self.storage

    @property
    def report_blobs(self) -> ReportBlobs:
        return self.storage

    def sendgrid(self, destination: Destination) -> SendGrid:
        """The client for a destination's key, resolved now: when the key behind the secret
        changes (rotation), a new client replaces the old one, so no client outlives its key."""
        return self.sendgrid_for(destination.api_key_secret)

    def sendgrid_for(self, name: str) -> SendGrid:
        """The client for the key stored under `name` (a key's name: `SENDGRID_KEY_<NAME>`),
        as `sendgrid` gives it for a destination with that `api_key_secret`."""
        key = self.secrets.get(name)
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            cached = self._clients.get(name)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            # The old key's client releases its idle connections; a batch another thread is
            # still sending with it finishes (a closed client still works, on new connections).
            if cached is not None:
                cached[1].close()
            client = self.clients(key)
            self._clients[name] = (fingerprint, client)
            return client


@dataclass(frozen=True, slots=True)
class RunSettings:
    """The flow's app settings, checked (`run_settings`): what `Services` takes besides ports."""

    max_batch_contacts: int
    cdm_recheck: float
    cdm_wait: float
    verify_delay: float
    verify_lag: float
    report_retention_days: int
    notify_retry_base: float


def run_settings(env: Mapping[str, str]) -> RunSettings:
    """The flow's settings from app settings; a wrong one is an `InputError` naming it."""
    return RunSettings(
        max_batch_contacts=_batch_size(env.get("MAX_BATCH_CONTACTS")),
        cdm_recheck=seconds_setting(env, "CDM_RECHECK_SECONDS", 30.0),
        cdm_wait=seconds_setting(env, "CDM_WAIT_SECONDS", 1800.0),
        verify_delay=seconds_setting(env, "VERIFY_DELAY_SECONDS", DEFAULT_VERIFY_DELAY, zero=True),
        verify_lag=seconds_setting(env, "VERIFY_LAG_SECONDS", DEFAULT_VERIFY_LAG, zero=True),
        report_retention_days=_days(env.get("REJECT_REPORT_RETENTION_DAYS")),
        notify_retry_base=seconds_setting(
            env, "NOTIFY_RETRY_BASE_SECONDS", DEFAULT_NOTIFY_RETRY_BASE
        ),
    )


def _batch_size(value: str | None) -> int:
    if not value:
        return MAX_CONTACTS
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_CONTACTS:
        raise InputError(f"MAX_BATCH_CONTACTS must be a whole number from 1 to {MAX_CONTACTS:,}")
    return size


def _days(value: str | None) -> int:
    if not value or not value.strip():
        return DEFAULT_REPORT_RETENTION_DAYS
    try:
        days = int(value)
    except ValueError:
        days = -1
    if not 0 <= days <= 3650:
        raise InputError(
            "REJECT_REPORT_RETENTION_DAYS must be a whole number of days from 0 (keep for "
            "ever) to 3,650"
        )
    return days


def seconds_setting(
    env: Mapping[str, str], name: str, default: float, *, zero: bool = False
) -> float:
    """A setting in seconds: more than 0 (or at least 0 with `zero`), at most 7 days."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    low_ok = seconds >= 0 if zero else seconds > 0
    if not (low_ok and seconds <= 7 * 24 * 3600):
        floor = "at least 0" if zero else "more than 0"
        raise InputError(f"{name} must be a number of seconds, {floor} and at most 7 days")
    return seconds
