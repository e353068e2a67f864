"""Timer trigger: re-export the latest snapshot of every selected segment on a schedule."""

from __future__ import annotations

import azure.functions as func

from exporter import runs
from exporter.functions import services

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%REFRESH_SCHEDULE%", run_on_startup=False)
def refresh(timer: func.TimerRequest) -> None:
    runs.refresh(services())
