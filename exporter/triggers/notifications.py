"""Queue triggers: deliver a run's notifications (queue notifications), and record those whose
message failed on every delivery (its poison queue).

A target's own failures (no answer, 429, 5xx) are retried by the step itself (the message
again, with a growing delay); only the app's errors (storage, a bug) propagate, so the host
retries the message and, after `maxDequeueCount`, moves it to `notifications-poison`.
"""

from __future__ import annotations

import azure.functions as func

from exporter.flow import notify
from exporter.model.messages import NOTIFICATIONS, POISON_SUFFIX, Notification
from exporter.triggers import poisoned, receive, services

bp = func.Blueprint()
CONNECTION = "AzureWebJobsStorage"


@bp.queue_trigger(arg_name="msg", queue_name=NOTIFICATIONS, connection=CONNECTION)
def deliver_notification(msg: func.QueueMessage) -> None:
    message = receive(NOTIFICATIONS, Notification, msg)
    if message is not None:
        notify.deliver(services(), message)


@bp.queue_trigger(arg_name="msg", queue_name=NOTIFICATIONS + POISON_SUFFIX, connection=CONNECTION)
def deliver_notification_poisoned(msg: func.QueueMessage) -> None:
    poisoned(NOTIFICATIONS + POISON_SUFFIX, Notification, msg, notify.poisoned)
