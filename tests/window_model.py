"""A plain-Python reference model of the window-mode breaker (issue 22).

resilience4j's rules as BreakerConfig documents them, written for sequential
use (one call at a time, a ManualClock in integer nanoseconds), with nothing
of the native core's machinery: no atomics, no tags, outcomes kept as plain
lists. tests/test_breaker_window.py drives it beside a real breaker.

Rules:
  closed: each outcome of the current generation goes into the window (the
    last `size` outcomes, or those of the last `size` whole seconds). Once
    the window holds >= minimum_calls outcomes, failed / outcomes >=
    failure_rate_threshold, or (slow calls on) slow / outcomes >=
    slow_call_rate_threshold, opens. A call is slow when its outcome comes
    slow_call_duration or later after its admission. Metrics-only never
    opens; disabled records nothing.
  open: rejects until the opening's duration has passed since the opening
    (reset_timeout, or with open_backoff the backoff's delay for attempt k,
    k the openings since the breaker last closed); then the next call moves
    it to half-open and is its first probe.
  half-open: admits half_open_max_calls probes (a released one gives its
    slot back); when all probes of the round have reported, judged together
    over them (minimum = half_open_max_calls): above either threshold opens,
    else closes with an empty window. With max_wait_in_half_open, a call
    asking while half-open that long opens it and is rejected.
  every transition starts a generation; an outcome of an earlier one moves
  nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS = 1_000_000_000

CLOSED, HALF_OPEN, OPEN, HELD = "CLOSED", "HALF_OPEN", "OPEN", "HELD"
NORMAL, DISABLED, METRICS_ONLY = 0, 1, 2


@dataclass
class ModelConfig:
    kind: str  # "count" or "time"
    size: int
    minimum_calls: int
    failure_rate: float
    slow_ns: int | None
    slow_rate: float
    reset_ns: int
    half_open_max: int
    max_wait_ns: int | None = None
    # exponential backoff without jitter: (base s, cap s, multiplier)
    backoff: tuple[float, float, float] | None = None


@dataclass
class Ticket:
    generation: int
    probe: bool
    start_ns: int


@dataclass
class WindowBreakerModel:
    config: ModelConfig
    state: str = CLOSED
    mode: int = NORMAL
    generation: int = 0
    opened_at: int = 0
    open_for: int = 0
    openings: int = 0
    half_open_since: int = 0
    slots: int = 0
    # closed window: (second, failed, slow) per outcome since the last reset
    outcomes: list[tuple[int, bool, bool]] = field(default_factory=list)
    # half-open round: (failed, slow) per probe outcome
    round: list[tuple[bool, bool]] = field(default_factory=list)
    slow_calls: int = 0
    ignored: int = 0

    # ---- what the window holds

    def totals(self, now: int) -> tuple[int, int, int]:
        """(outcomes, failed, slow) in the closed window at `now`."""
        c = self.config
        if c.kind == "count":
            kept = self.outcomes[-c.size:]
        else:
            second = now // NS
            kept = [o for o in self.outcomes if second - c.size < o[0] <= second]
        return len(kept), sum(o[1] for o in kept), sum(o[2] for o in kept)

    def exceeded(self, calls: int, failed: int, slow: int, minimum: int) -> bool:
        c = self.config
        if calls == 0 or calls < minimum:
            return False
        return float(failed) >= c.failure_rate * float(calls) or (
            c.slow_ns is not None and float(slow) >= c.slow_rate * float(calls))

    def rate(self, now: int, which: int) -> float:
        calls, failed, slow = self.totals(now)
        if calls == 0 or calls < self.config.minimum_calls:
            return -1.0
        return (failed if which == 1 else slow) / calls

    # ---- transitions

    def _time_opening(self) -> None:
        """With open_backoff: the opening about to start lasts the delay of
        attempt `openings` (exponential, no jitter)."""
        if self.config.backoff is not None:
            base, cap, multiplier = self.config.backoff
            delay = base * multiplier ** float(self.openings)
            delay = delay if delay < cap else cap
            self.open_for = int(delay * 1e9)

    def _open(self, now: int) -> None:
        self._time_opening()
        self.opened_at = max(self.opened_at, now)
        self.state = OPEN
        self.generation += 1
        self.slots = 0
        self.openings += 1

    def _close(self, mode: int | None = None) -> None:
        if mode is not None:
            self.mode = mode
        self.state = CLOSED
        self.generation += 1
        self.slots = 0
        self.outcomes = []
        self.openings = 0

    def open_timeout(self) -> int:
        return self.open_for if self.config.backoff is not None else self.config.reset_ns

    # ---- calls

    def acquire(self, now: int) -> Ticket | None:
        c = self.config
        if self.state == CLOSED:
            return Ticket(self.generation, False, now)
        if self.state == HALF_OPEN:
            if c.max_wait_ns is not None and now - self.half_open_since >= c.max_wait_ns:
                self._open(now)
                return None
            if self.slots < c.half_open_max:
                self.slots += 1
                return Ticket(self.generation, True, now)
            return None
        if self.state == OPEN and now - self.opened_at >= self.open_timeout():
            self.state = HALF_OPEN
            self.generation += 1
            self.slots = 1
            self.round = []
            self.half_open_since = now
            return Ticket(self.generation, True, now)
        return None

    def record(self, ticket: Ticket, failed: bool, now: int) -> None:
        c = self.config
        if ticket.generation != self.generation or self.mode == DISABLED:
            self.ignored += 1
            return
        slow = c.slow_ns is not None and now - ticket.start_ns >= c.slow_ns
        if self.state == CLOSED:
            self.outcomes.append((now // NS, failed, slow))
            self.slow_calls += slow
            if self.mode == METRICS_ONLY:
                return
            if self.exceeded(*self.totals(now), c.minimum_calls):
                self._open(now)
            return
        if self.state == HALF_OPEN and ticket.probe:
            self.slow_calls += slow
            self.round.append((failed, slow))
            if len(self.round) < c.half_open_max:
                return
            calls = len(self.round)
            bad = sum(r[0] for r in self.round)
            slow_probes = sum(r[1] for r in self.round)
            if self.exceeded(calls, bad, slow_probes, c.half_open_max):
                self._open(now)
            else:
                self._close()
            return
        self.ignored += 1

    def release(self, ticket: Ticket) -> None:
        if (ticket.probe and ticket.generation == self.generation and self.state == HALF_OPEN
                and self.slots > 0):
            self.slots -= 1

    # ---- the operator

    def reset(self) -> None:
        self._close(NORMAL)

    def disable(self) -> None:
        self._close(DISABLED)

    def metrics_only(self) -> None:
        self._close(METRICS_ONLY)

    def force_open(self, now: int) -> None:
        self.mode = NORMAL
        self._time_opening()
        self.opened_at = max(self.opened_at, now)
        self.generation += 1
        self.state = HELD
        self.slots = 0
