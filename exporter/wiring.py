"""The composition root: the flow's services built from app settings with the adapters.

Only the entry points (the triggers, the CLI, the local tooling) call this; below them nothing
knows which adapters serve the ports (see the import rules in docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from exporter.adapters.azure_storage import Storage
from exporter.adapters.destination_store import BlobDestinationStore
from exporter.adapters.secrets import secret_provider
from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.adapters.table_ledger import TableRunLedger
from exporter.flow.services import Services, run_settings


def services_from_env(env: Mapping[str, str] | None = None) -> Services:
    """From app settings (the environment by default), creating containers and queues. Every
    setting is checked before anything connects: a wrong one fails at start."""
    env = os.environ if env is None else env
    sendgrid = SendGridSettings.from_env(env)
    settings = run_settings(env)
    storage = Storage.from_env(env)
    storage.ensure()
    return Services(
        storage=storage,
        ledger=TableRunLedger(storage.tables),
        destinations=BlobDestinationStore(storage.app),
        secrets=secret_provider(env),
        clients=lambda key: SendGridClient(key, sendgrid),
        **{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)},
    )
