"""SendGrid's rate limit: fixed windows per API key, with `X-RateLimit-*` headers on every /v3
answer (429 once a window is used up)."""

from __future__ import annotations

import math
import threading


class RateLimiter:
    """Fixed windows per API key, each starting at the key's first request after the last one
    ended (so a test knows exactly which request is the first over the limit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, now: float, limit: int, window: float) -> tuple[bool, int, int]:
        """Count one request: (allowed, remaining, reset epoch seconds)."""
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now >= start + window:
                start, count = now, 0
            count += 1
            self._windows[key] = (start, count)
        return count <= limit, max(0, limit - count), math.ceil(start + window)

    def peek(self, key: str, now: float, limit: int, window: float) -> tuple[int, int]:
        """(remaining, reset) without counting: for answers given before the limit is checked."""
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
        if now >= start + window:
            start, count = now, 0
        return max(0, limit - count), math.ceil(start + window)

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()


def rate_headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }
