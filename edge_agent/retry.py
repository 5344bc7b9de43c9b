"""Retry helpers: capped exponential backoff with jitter, and log throttling."""

from __future__ import annotations

import random
import time


def backoff_delay(
    attempt: int,
    *,
    base_s: float = 0.5,
    cap_s: float = 30.0,
    rng: random.Random | None = None,
) -> float:
    """Return the wait in seconds before retry number ``attempt`` (1 for the first).

    The ceiling doubles per attempt up to ``cap_s``; the wait is drawn between half the
    ceiling and the ceiling, so agents that lost the same server do not retry in step.
    """
    ceiling = min(cap_s, base_s * 2.0 ** max(0, min(attempt, 32) - 1))
    draw = rng.random() if rng is not None else random.random()
    return ceiling / 2 + draw * ceiling / 2


class LogThrottle:
    """Lets one message through per interval and counts the ones held back.

    Args:
        interval_s: minimum seconds between two messages that pass.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        self._interval_s = interval_s
        self._last = -float("inf")
        self.suppressed = 0

    def allow(self) -> bool:
        """Return True when a message may be logged now, else count it as held back."""
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self.suppressed += 1
            return False
        self._last = now
        return True

    def take_suppressed(self) -> int:
        """Return how many messages were held back since the last one that passed."""
        count, self.suppressed = self.suppressed, 0
        return count


def describe_error(exc: BaseException) -> str:
    """Return an exception's message, or its class name when the message is empty."""
    return str(exc) or type(exc).__name__
