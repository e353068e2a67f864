"""Timer trigger: re-export the latest snapshot of every selected segment on a schedule, and
delete reject reports past their retention."""

from __future__ import annotations

import azure.functions as func

from exporter.flow import retention, run_requests
from exporter.triggers import services

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%REFRESH_SCHEDULE%", run_on_startup=False)
def refresh(timer: func.TimerRequest) -> None:
    svc = services()
    run_requests.refresh(svc)
    retention.sweep(svc)
