"""The composition root: the flow's services built from app settings with the adapters.

Only the entry points (the triggers, the CLI, the local tooling) call this; below them nothing
knows which adapters serve the ports (see the import rules in docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Final

from exporter.adapters.azure_storage import Storage
from exporter.adapters.connectivity import FailFastStorage
from exporter.adapters.destination_store import BlobDestinationStore
from exporter.adapters.secrets import secret_provider
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.adapters.table_ledger import TableRunLedger
from exporter.adapters.webhooks import WebhookNotifier
from exporter.flow.services import Services, run_settings

FAIL_FAST_CONNECT: Final = 5.0
"""Seconds the CLI waits for a connection (storage, SendGrid, Key Vault; a TLS handshake and
an upload block too) before it says the service is unreachable."""


FAIL_FAST_READ: Final = 8.0
"""Seconds the CLI waits for an answer once connected (Azure Tables answers a query page
within 5 s, with a continuation when it needs longer)."""


def services_from_env(env: Mapping[str, str] | None = None, *, fail_fast: bool = False) -> Services:
    """From app settings (the environment by default), creating containers and queues. Every
    setting is checked before anything connects: a wrong one fails at start.

    `fail_fast` (the CLI: a person is waiting): short timeouts (`FAIL_FAST_CONNECT`,
    `FAIL_FAST_READ`), a refused connection, an unknown host, a failed TLS handshake or a
    timeout is `exporter.core.errors.Unreachable` at once, other connection failures are
    retried twice. Without it (the function app) the SDKs' retry policies apply."""
    env = os.environ if env is None else env
    sendgrid = SendGridSettings.from_env(env)
    settings = run_settings(env)
    storage_options = None
    if fail_fast:
        sendgrid = sendgrid.model_copy(
            update={
                "connect_timeout_seconds": min(sendgrid.connect_timeout_seconds, FAIL_FAST_CONNECT),
                "timeout_seconds": min(sendgrid.timeout_seconds, FAIL_FAST_READ),
            }
        )
        storage_options = FailFastStorage(
            connect_timeout=FAIL_FAST_CONNECT, read_timeout=FAIL_FAST_READ
        )
    storage = Storage.from_env(env, options=storage_options)
    if storage_options is not None:
        storage_options.name_endpoints(
            blob=storage.blobs.url, queue=storage.queues.url, table=storage.tables.url
        )
    storage.ensure()
    return Services(
        storage=storage,
        ledger=TableRunLedger(storage.tables),
        destinations=BlobDestinationStore(storage.app),
        secrets=secret_provider(
            env, timeouts=(FAIL_FAST_CONNECT, FAIL_FAST_READ) if fail_fast else None
        ),
        clients=lambda key: SendGridClient(key, sendgrid),
        notifier=WebhookNotifier(),
        **{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)},
    )
