"""RetryBudget: each kind against a plain-Python reference model of its
semantics (Finagle's TokenRetryBudget over a WindowedAdder, grpc-core's
ServerRetryThrottleData, botocore's RetryQuota), bad input, and threads."""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtrigaud_resilience import ManualClock, RetryBudget
from virtrigaud_resilience.retry_budget import BudgetSpec

# ------------------------------------------------------- reference models --


class RatioModel:
    """Finagle: deposit 1000, withdrawal int(1000 / percent) (saturated at
    Int.MaxValue), reserve min_per_second * ttl * withdrawal; what was added
    in the 10 slots of ttl / 10 up to now counts."""

    def __init__(self, percent: float, min_per_second: int, ttl: float) -> None:
        self.withdrawal = min(int(1000 / percent), 2**31 - 1)
        self.reserve = round(min_per_second * ttl * self.withdrawal)
        self.slot_ns = round(ttl * 1e9) // 10
        self.slots: dict[int, int] = {}

    def _sum(self, now_ns: int) -> int:
        current = now_ns // self.slot_ns
        return sum(v for k, v in self.slots.items() if current - 10 < k <= current)

    def _add(self, now_ns: int, amount: int) -> None:
        key = now_ns // self.slot_ns
        self.slots[key] = self.slots.get(key, 0) + amount

    def deposit(self, now_ns: int) -> None:
        self._add(now_ns, 1000)

    def try_withdraw(self, now_ns: int, timeout: bool) -> bool:
        if self._sum(now_ns) + self.reserve < self.withdrawal:
            return False
        self._add(now_ns, -self.withdrawal)
        return True

    def started(self, now_ns: int) -> None:
        self.deposit(now_ns)

    def succeeded(self, now_ns: int, last_cost: int) -> None:
        pass

    def failed(self, now_ns: int) -> None:
        pass

    def balance(self, now_ns: int) -> int:
        return self._sum(now_ns) + self.reserve

    def available(self, now_ns: int) -> int:
        return max(0, self.balance(now_ns)) // self.withdrawal


def three_decimals(x: float) -> int:
    """``x`` in thousandths, further digits dropped (grpc-core's parse)."""
    return math.floor(Fraction(repr(float(x))) * 1000)


class TokensModel:
    """grpc-core ServerRetryThrottleData: milli-tokens in [0, max]."""

    def __init__(self, max_tokens: float, token_ratio: float) -> None:
        self.max = three_decimals(max_tokens)
        self.ratio = three_decimals(token_ratio)
        self.tokens = self.max

    def _change(self, delta: int) -> int:
        self.tokens = min(max(self.tokens + delta, 0), self.max)
        return self.tokens

    def deposit(self, now_ns: int) -> None:  # RecordSuccess
        self._change(self.ratio)

    def try_withdraw(self, now_ns: int, timeout: bool) -> bool:  # RecordFailure
        return self._change(-1000) > self.max // 2

    def started(self, now_ns: int) -> None:
        pass

    def succeeded(self, now_ns: int, last_cost: int) -> None:
        self.deposit(now_ns)

    def failed(self, now_ns: int) -> None:
        self._change(-1000)

    def balance(self, now_ns: int) -> int:
        return self.tokens

    def available(self, now_ns: int) -> int:
        k = 0
        while self.tokens - 1000 * (k + 1) > self.max // 2:
            k += 1
        return k


class QuotaModel:
    """botocore RetryQuota with the standard mode's costs."""

    def __init__(self, capacity: int, retry_cost: int, timeout_cost: int, refund: int) -> None:
        self.max = self.left = capacity
        self.retry_cost, self.timeout_cost, self.refund = retry_cost, timeout_cost, refund

    def _release(self, amount: int) -> None:
        if self.left == self.max:
            return
        self.left += min(self.max - self.left, amount)

    def deposit(self, now_ns: int) -> None:
        self._release(self.refund)

    def try_withdraw(self, now_ns: int, timeout: bool) -> bool:
        cost = self.timeout_cost if timeout else self.retry_cost
        if cost > self.left:
            return False
        self.left -= cost
        return True

    def started(self, now_ns: int) -> None:
        pass

    def succeeded(self, now_ns: int, last_cost: int) -> None:
        self._release(last_cost if last_cost else self.refund)

    def failed(self, now_ns: int) -> None:
        pass

    def balance(self, now_ns: int) -> int:
        return self.left

    def available(self, now_ns: int) -> int:
        return self.left // self.retry_cost if self.retry_cost else 2**63 - 1


# ------------------------------------------------------------ conformance --

OPS = st.lists(st.one_of(
    st.tuples(st.just("deposit")),
    st.tuples(st.just("withdraw"), st.booleans()),
    st.tuples(st.just("started")),
    st.tuples(st.just("succeeded"), st.integers(0, 12)),
    st.tuples(st.just("failed")),
    # up to 1.5 ttl of the longest ttl, and often less than one slot
    st.tuples(st.just("advance"), st.one_of(st.integers(0, 10**9), st.integers(0, 90 * 10**9))),
), max_size=60)

RATIO_PARAMS = st.tuples(
    st.sampled_from([0.2, 0.1, 0.5, 1.0, 10.0, 0.001, 0.3, 7.5]) | st.floats(0.0001, 10.0),
    st.integers(0, 20), st.sampled_from([1.0, 1.5, 10.0, 60.0, 3.3]))
TOKENS_PARAMS = st.tuples(
    st.sampled_from([10, 1, 3, 1000, 2.5, 0.5, 7.0015]) | st.floats(0.001, 1000.0),
    st.sampled_from([0.1, 0.0015, 1.0019, 0.5, 0.001, 2.3456]) | st.floats(0.001, 5.0))
QUOTA_PARAMS = st.tuples(st.integers(0, 600), st.integers(0, 12), st.integers(0, 20),
                         st.integers(0, 3))


@st.composite
def budgets(draw: Any) -> tuple[str, tuple[Any, ...]]:
    kind = draw(st.sampled_from(["ratio", "tokens", "quota"]))
    params = draw({"ratio": RATIO_PARAMS, "tokens": TOKENS_PARAMS, "quota": QUOTA_PARAMS}[kind])
    return kind, params


def build(kind: str, params: tuple[Any, ...], clock: ManualClock) -> tuple[RetryBudget, Any]:
    if kind == "ratio":
        return RetryBudget.ratio(*params, clock=clock), RatioModel(*params)
    if kind == "tokens":
        return RetryBudget.tokens(*params), TokensModel(*params)
    return RetryBudget.quota(*params), QuotaModel(*params)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(budgets(), OPS, st.integers(0, 10**12))
def test_each_kind_matches_its_reference_model(budget_params: tuple[str, tuple[Any, ...]],
                                               ops: list[tuple[Any, ...]], start_ns: int) -> None:
    """0 divergences over 10,000 random sequences (every kind, every
    operation, A6's three-decimal ratio and threshold included)."""
    kind, params = budget_params
    clock = ManualClock(start_ns / 1e9)
    budget, model = build(kind, params, clock)
    for op in ops:
        now = clock.now_ns()
        name = op[0]
        if name == "deposit":
            budget.deposit()
            model.deposit(now)
        elif name == "withdraw":
            assert budget.try_withdraw(timeout=op[1]) == model.try_withdraw(now, op[1]), op
        elif name == "started":
            budget._call_started()
            model.started(now)
        elif name == "succeeded":
            budget._call_succeeded(op[1])
            model.succeeded(now, op[1])
        elif name == "failed":
            budget._failed_without_retry()
            model.failed(now)
        else:
            clock._advance_ns(op[1])
            now = clock.now_ns()
        assert budget._balance() == model.balance(now), op
        assert budget.available == model.available(now), op


def test_a6_example_no_retry_at_or_below_half() -> None:
    """A6: max_tokens 10 allows 4 retried failures from full; the 5th failure
    takes the tokens to 5 = max / 2, which no longer retries; successes at
    0.1 per call climb back above half after 10."""
    budget = RetryBudget.tokens(10, 0.1)
    assert budget.available == 4
    assert [budget.try_withdraw() for _ in range(5)] == [True] * 4 + [False]
    for _ in range(10):
        assert budget.available == 0
        budget.deposit()
    assert budget._balance() == 6000
    assert budget.try_withdraw() is False  # 5.0 again
    budget.deposit()
    assert budget._balance() == 5100


@pytest.mark.parametrize(("ratio", "milli"), [
    (0.1, 100), (0.0015, 1), (1.0019, 1001), (0.001, 1), (2.3456, 2345), (1.001, 1001)])
def test_token_ratio_is_kept_to_three_decimals(ratio: float, milli: int) -> None:
    budget = RetryBudget.tokens(10, ratio)
    for _ in range(3):
        budget.try_withdraw()
    budget.deposit()
    assert budget._balance() == 7000 + milli


def test_ratio_deposits_expire_after_ttl_and_the_reserve_stays() -> None:
    clock = ManualClock()
    budget = RetryBudget.ratio(0.5, min_per_second=0, ttl=10, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert budget.available == 5  # half a retry per call
    clock.advance(9.0)  # still within the window (slots of 1 s: 0..9)
    assert budget.available == 5
    clock.advance(1.0)  # slot 0 left the window
    assert budget.available == 0
    assert budget.try_withdraw() is False
    reserved = RetryBudget.ratio(0.5, min_per_second=2, ttl=10, clock=clock)
    assert reserved.available == 20  # 2/s over 10 s, with no call at all
    assert sum(reserved.try_withdraw() for _ in range(25)) == 20


def test_quota_refunds_per_botocore() -> None:
    budget = RetryBudget.quota(capacity=20, retry_cost=5, timeout_cost=10, refund=1)
    assert budget.try_withdraw(timeout=True) and budget.try_withdraw()
    assert budget._balance() == 5 and budget.available == 1
    assert budget.try_withdraw(timeout=True) is False  # 10 > 5 left: nothing taken
    budget._call_succeeded(budget._retry_cost(False))  # a success after a retry: its 5 back
    budget.deposit()  # a success without retries: 1 back
    assert budget._balance() == 11
    for _ in range(100):
        budget.deposit()
    assert budget._balance() == 20  # never above capacity


# -------------------------------------------------------------- bad input --

BAD = [
    (lambda: RetryBudget.ratio(percent=0), ValueError, "percent"),
    (lambda: RetryBudget.ratio(percent=10.5), ValueError, "percent"),
    (lambda: RetryBudget.ratio(percent=-1), ValueError, "percent"),
    (lambda: RetryBudget.ratio(percent=math.nan), ValueError, "percent"),
    (lambda: RetryBudget.ratio(percent="0.2"), TypeError, "percent"),
    (lambda: RetryBudget.ratio(ttl=0.5), ValueError, "ttl"),
    (lambda: RetryBudget.ratio(ttl=61), ValueError, "ttl"),
    (lambda: RetryBudget.ratio(ttl=math.nan), ValueError, "ttl"),
    (lambda: RetryBudget.ratio(ttl="2m"), ValueError, "ttl"),
    (lambda: RetryBudget.ratio(min_per_second=-1), ValueError, "min_per_second"),
    (lambda: RetryBudget.ratio(min_per_second=math.nan), ValueError, "min_per_second"),
    (lambda: RetryBudget.ratio(min_per_second=1.5), ValueError, "min_per_second"),
    (lambda: RetryBudget.ratio(clock="now"), TypeError, "clock"),
    (lambda: RetryBudget.tokens(max_tokens=0), ValueError, "max_tokens"),
    (lambda: RetryBudget.tokens(max_tokens=1000.5), ValueError, "max_tokens"),
    (lambda: RetryBudget.tokens(max_tokens=math.nan), ValueError, "max_tokens"),
    (lambda: RetryBudget.tokens(max_tokens=math.inf), ValueError, "max_tokens"),
    (lambda: RetryBudget.tokens(token_ratio=0), ValueError, "token_ratio"),
    (lambda: RetryBudget.tokens(token_ratio=0.0009), ValueError, "token_ratio"),
    (lambda: RetryBudget.tokens(token_ratio=math.nan), ValueError, "token_ratio"),
    (lambda: RetryBudget.quota(capacity=-1), ValueError, "capacity"),
    (lambda: RetryBudget.quota(retry_cost=-5), ValueError, "retry_cost"),
    (lambda: RetryBudget.quota(timeout_cost=-1), ValueError, "timeout_cost"),
    (lambda: RetryBudget.quota(refund=-1), ValueError, "refund"),
    (lambda: RetryBudget.quota(capacity=math.nan), ValueError, "capacity"),
    (lambda: RetryBudget.quota(retry_cost=True), TypeError, "retry_cost"),
    (lambda: RetryBudget.quota(provider="x", provider_type=3), TypeError, "provider_type"),
    (lambda: RetryBudget(None), TypeError, "spec"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("make", "error", "field"), BAD)
def test_bad_input_names_the_field(make: Any, error: type[Exception], field: str) -> None:
    with pytest.raises(error, match=field):
        make()


def test_durations_and_whole_floats_are_accepted() -> None:
    assert RetryBudget.ratio(ttl=timedelta(seconds=30)).spec.native[4] == 30 * 10**9
    assert RetryBudget.ratio(ttl="1m").spec.native[4] == 60 * 10**9
    assert RetryBudget.quota(capacity=500.0).spec.native[0] == 500
    assert BudgetSpec.ratio(percent=1e-9).native[1] == 2**31 - 1  # Scala's saturating toInt


def test_repr_and_kind() -> None:
    budget = RetryBudget.tokens(10, 0.1)
    assert budget.kind == "tokens"
    assert repr(budget) == "RetryBudget.tokens(max_tokens=10.0, token_ratio=0.1)(available=4)"


# ---------------------------------------------------------------- threads --

THREADS = 8


def run_threads(work: Any) -> list[Any]:
    results: list[Any] = [None] * THREADS
    barrier = threading.Barrier(THREADS)

    def body(i: int) -> None:
        barrier.wait()
        results[i] = work()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_ratio_threads_never_overdraw() -> None:
    clock = ManualClock()  # still: no slot rolls while the threads run
    budget = RetryBudget.ratio(0.2, min_per_second=0, ttl=10, clock=clock)
    deposits = 2000

    def work() -> int:
        taken = 0
        for _ in range(deposits):
            budget.deposit()
            taken += budget.try_withdraw()
        return taken

    taken = sum(run_threads(work))
    assert budget._balance() == THREADS * deposits * 1000 - taken * 5000 >= 0
    # A refusal needs a concurrent withdrawal in flight: most succeed.
    assert THREADS * deposits // 5 * 0.5 <= taken <= THREADS * deposits // 5


def test_tokens_and_quota_threads_are_exact() -> None:
    tokens = RetryBudget.tokens(1000, 0.5)
    allowed = run_threads(lambda: sum(tokens.try_withdraw() for _ in range(200)))
    assert sum(allowed) == 499  # 1000 -> 501 retried, the failures after it not
    assert tokens._balance() == 0
    quota = RetryBudget.quota(capacity=10_000, retry_cost=7)
    taken = run_threads(lambda: sum(quota.try_withdraw() for _ in range(500)))
    assert sum(taken) == 10_000 // 7
    assert quota._balance() == 10_000 % 7
