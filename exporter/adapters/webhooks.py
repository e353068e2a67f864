"""Posting notifications: one POST to a target's URL (a webhook, Slack, Microsoft Teams).

urllib3, as the SendGrid transport: a shared pool of keep-alive connections, short timeouts,
no retries (the notifications queue retries, with backoff) and no redirects (a target that
moved answers 3xx, recorded as such). The URL is a secret (a Slack or Teams webhook URL is all it
takes to post to the channel): no exception, log line or repr holds it, and urllib3's DEBUG lines
(which show a request's path) are kept off.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Mapping
from typing import Final

import urllib3

from exporter.core.redact import mask_emails
from exporter.model.notifications import url_problem
from exporter.ports.notifier import Answer, TargetRefused, TargetUnreachable

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
MAX_DETAIL: Final = 200
"""Characters of an error answer's body kept (for the run's record)."""
MAX_READ: Final = 4096
"""Bytes of an answer read at most: a target's body is never needed whole."""

USER_AGENT: Final = "segment-sendgrid-exporter"

_QUIET: Final = logging.getLogger("urllib3.connectionpool")
if _QUIET.getEffectiveLevel() < logging.INFO:
    _QUIET.setLevel(logging.INFO)  # its DEBUG lines show the request's path: a secret here


class WebhookNotifier:
    """The `Notifier` port over urllib3. Thread-safe (urllib3's pool is)."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=timeout)
        self.pool = pool or urllib3.PoolManager(num_pools=8, maxsize=4, retries=False)

    def __repr__(self) -> str:
        return f"WebhookNotifier(timeout={self.timeout.read_timeout})"

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        problem = url_problem(url)
        if problem is not None:
            raise TargetRefused(f"the target's URL cannot be posted to: {problem}")
        sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        try:
            response = self.pool.request(
                "POST",
                url,
                body=body,
                headers=sent,
                timeout=self.timeout,
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.TimeoutError:
            raise TargetUnreachable(
                f"no answer within {self.timeout.read_timeout:g} s (timed out)"
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise TargetUnreachable(f"could not reach the target ({_cause(exc)})") from None
        try:
            head = response.read(MAX_READ) if response.status >= 300 else b""
        except urllib3.exceptions.HTTPError:
            head = b""  # the status is the answer; its body is only for the record
        finally:
            # Never read a body to its end: the connection goes (a target's answers are few).
            response.close()
            response.release_conn()
        return Answer(
            status=response.status,
            retry_after=_retry_after(response.headers.get("Retry-After")),
            detail=_detail(head),
        )

    def close(self) -> None:
        self.pool.clear()


def _cause(exc: BaseException) -> str:
    """The exception's kind, never its text (urllib3's messages name the host and path)."""
    reason = getattr(exc, "reason", None)
    names = [type(exc).__name__]
    if isinstance(reason, BaseException):
        names.append(type(reason).__name__)
    return ": ".join(names)


def _detail(data: bytes) -> str:
    text = data[: MAX_DETAIL * 2].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return mask_emails(" ".join(text.split()))[:MAX_DETAIL]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
