"""Where things live in the app's storage account (one account, `AzureWebJobsStorage`).

- container `segments`: snapshots dropped by the data platform, `segments/<segment>/<file>`,
  and CDM folders (`<folder>/model.json` and its partitions);
- container `exporter`: the app's own blobs: `destinations/<name>.json`, `cdm/<segment>.json`
  (the newest CDM entity of that name: what the timer re-exports), `runs/<run_id>/...` (a run's
  batches, removals, pending state and look files while it runs; its reject report after), and
  `state/<destination>/<segment>/<list_id>/...` (the synced state);
- queues (`exporter.model.messages`) and the table `runs` (`exporter.adapters.table_ledger`).
"""

from __future__ import annotations

from typing import Final

SEGMENTS: Final = "segments"


APP_CONTAINER: Final = "exporter"


def report_blob(run_id: str) -> str:
    return f"runs/{run_id}/rejects.csv"


def removal_blob(run_id: str, index: int) -> str:
    return f"runs/{run_id}/removals/{index:05d}.txt"


def state_blob(destination: str, segment: str, list_id: str, part: str) -> str:
    return f"state/{destination}/{segment}/{list_id}/{part}"


def batch_blob(run_id: str, index: int) -> str:
    return f"runs/{run_id}/batches/{index:05d}.json"


def cdm_pointer_blob(segment: str) -> str:
    return f"cdm/{segment}.json"
