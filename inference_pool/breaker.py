"""A circuit breaker per backend: consecutive failures open it; after a cool-down one trial request (half-open)
may pass; a success (or an active health probe) closes it. Pure in-process state; the router mirrors
transitions to the Backend row so other processes and the admin console see them."""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("_clock", "changed_wall", "cooldown", "failures", "opened_at", "state", "threshold", "trial_taken")

    def __init__(self, *, threshold: int = 3, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.changed_wall = 0.0  # wall-clock time of the last transition (compared with probe times in the DB)
        self.trial_taken = False

    def available(self) -> bool:
        """May a request be sent now? (No side effects: the router calls ``claim`` on the one it picks.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return self._clock() - self.opened_at >= self.cooldown
        return not self.trial_taken

    def claim(self) -> None:
        """The router picked this backend: an open breaker past its cool-down lets this one request through."""
        if self.state == OPEN and self._clock() - self.opened_at >= self.cooldown:
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            self.trial_taken = True

    def record_success(self) -> bool:
        """Returns True when this closed the breaker."""
        self.failures = 0
        if self.state != CLOSED:
            self._move(CLOSED)
            return True
        return False

    def record_failure(self) -> bool:
        """Returns True when this opened the breaker."""
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.opened_at = self._clock()
            self._move(OPEN)
            return True
        if self.state == OPEN:
            self.opened_at = self._clock()
        return False

    def release_trial(self) -> None:
        """A half-open trial ended without a verdict (e.g. the caller went away): let another one try."""
        if self.state == HALF_OPEN:
            self.trial_taken = False

    def force_open(self, *, failures: int | None = None) -> None:
        if failures is not None:
            self.failures = failures
        self.opened_at = self._clock()
        self._move(OPEN)

    def force_close(self) -> None:
        self.failures = 0
        self._move(CLOSED)

    def _move(self, state: str) -> None:
        self.state = state
        self.trial_taken = False
        self.changed_wall = time.time()
