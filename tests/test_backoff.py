"""Backoff delays (the guide's table and the jitter strategies) and RetryConfig presets."""

from __future__ import annotations

import math

import pytest
import virtrigaud_resilience as vr
from hypothesis import given, settings
from hypothesis import strategies as st

INT64_MAX = 2**63 - 1
JITTER_SLACK = 1 + 1e-12  # float rounding of d + u * 0.1 * d


def capped(base: float, multiplier: float, cap: float, attempt: int) -> float:
    """min(base * multiplier**attempt, cap) as the guide defines it, saturating."""
    if base <= 0:
        return 0.0
    try:
        d = base * math.pow(multiplier, float(min(attempt, INT64_MAX)))
    except OverflowError:
        return cap
    return min(cap, d)


# ------------------------------------------------------------ guide's table --


def test_guide_delays_without_jitter() -> None:
    bo = vr.Backoff(base_delay=0.5, max_delay=30.0, multiplier=2.0, jitter=False)
    assert [bo.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert [bo.delay(n) for n in range(5, 9)] == [16.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize("seed", [None, 0, 1, 12345])
def test_guide_delays_with_jitter(seed: int | None) -> None:
    bo = vr.Backoff(base_delay=0.5, max_delay=30.0, multiplier=2.0, jitter=True, seed=seed)
    for _ in range(200):
        for n, d in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 16.0]):
            assert d <= bo.delay(n) <= 1.1 * d * JITTER_SLACK
        for n in (6, 7, 20, 100):
            assert 30.0 <= bo.delay(n) <= 33.0


def test_jitter_spans_zero_to_ten_percent() -> None:
    bo = vr.Backoff(base_delay=1.0, max_delay=30.0, jitter=True, seed=2024)
    draws = [bo.delay(0) for _ in range(2000)]
    assert min(draws) < 1.005
    assert max(draws) > 1.095
    assert len(set(draws)) > 1900  # really random, not a constant offset


def test_unseeded_jitter_varies() -> None:
    bo = vr.Backoff(jitter=True)
    assert len({bo.delay(3) for _ in range(100)}) > 90


def test_defaults_are_the_guides() -> None:
    bo = vr.Backoff()
    assert (bo.base_delay, bo.max_delay, bo.multiplier, bo.jitter, bo.strategy, bo.seed) == (
        0.5,
        30.0,
        2.0,
        True,
        "exponential",
        None,
    )
    assert vr.STRATEGIES == ("exponential", "full_jitter", "equal_jitter", "decorrelated_jitter")


@pytest.mark.parametrize("strategy", vr.STRATEGIES)
@pytest.mark.parametrize("jitter", [True, False])
@pytest.mark.parametrize("attempt", [64, 1100, 10**9, INT64_MAX, 2**63, 10**30, 10**100])
def test_huge_attempts_give_max_delay(strategy: str, jitter: bool, attempt: int) -> None:
    bo = vr.Backoff(base_delay=0.5, max_delay=30.0, jitter=jitter, strategy=strategy, seed=5)
    for _ in range(20):
        d = bo.delay(attempt)
        assert math.isfinite(d)
        if strategy == "exponential":
            assert 30.0 <= d <= (33.0 if jitter else 30.0)
        else:
            assert 0.0 <= d <= 30.0
    if strategy == "exponential" and not jitter:
        assert bo.delay(attempt) == 30.0


def test_multiplier_one_is_constant() -> None:
    bo = vr.Backoff(base_delay=2.0, max_delay=30.0, multiplier=1.0, jitter=False)
    assert {bo.delay(n) for n in (0, 1, 50, 10**9, 10**30)} == {2.0}


def test_zero_base_delay_is_zero() -> None:
    bo = vr.Backoff(base_delay=0.0, max_delay=0.0, jitter=True)
    assert {bo.delay(n) for n in (0, 5, 10**30)} == {0.0}


# -------------------------------------------------------- strategies' bounds --

delays_config = st.tuples(
    st.floats(0.0, 100.0),  # base
    st.floats(0.0, 86_400.0),  # extra on top of base for max
    st.floats(1.0, 1e3),  # multiplier
    st.one_of(st.integers(0, 200), st.integers(0, 2**80)),  # attempt
    st.integers(0, 2**64 - 1),  # seed
)


@settings(max_examples=300, deadline=None)
@given(delays_config)
def test_exponential_without_jitter_is_exact(config: tuple[float, float, float, int, int]) -> None:
    base, extra, mult, attempt, seed = config
    cap = min(base + extra, 86_400.0)
    bo = vr.Backoff(base, cap, mult, jitter=False, seed=seed)
    assert bo.delay(attempt) == capped(base, mult, cap, attempt)


@settings(max_examples=300, deadline=None)
@given(delays_config)
def test_exponential_jitter_bounds(config: tuple[float, float, float, int, int]) -> None:
    base, extra, mult, attempt, seed = config
    cap = min(base + extra, 86_400.0)
    d = capped(base, mult, cap, attempt)
    bo = vr.Backoff(base, cap, mult, jitter=True, seed=seed)
    for _ in range(5):
        x = bo.delay(attempt)
        assert math.isfinite(x)
        assert d <= x <= 1.1 * d * JITTER_SLACK


@settings(max_examples=300, deadline=None)
@given(delays_config, st.booleans())
def test_full_jitter_bounds(config: tuple[float, float, float, int, int], jitter: bool) -> None:
    d, delays = jittered(config, jitter, "full_jitter")
    for x in delays:
        assert 0.0 <= x <= d
        assert x < d or d == 0.0


def jittered(config: tuple[float, float, float, int, int], jitter: bool,
             strategy: str) -> tuple[float, list[float]]:
    """The capped delay of ``config``'s attempt and five finite draws of ``strategy``."""
    base, extra, mult, attempt, seed = config
    cap = min(base + extra, 86_400.0)
    bo = vr.Backoff(base, cap, mult, jitter=jitter, strategy=strategy, seed=seed)
    delays = [bo.delay(attempt) for _ in range(5)]
    assert all(math.isfinite(x) for x in delays)
    return capped(base, mult, cap, attempt), delays


def test_full_jitter_stays_below_a_subnormal_delay() -> None:
    d = 5e-324
    for seed in (None, 1, 2):
        bo = vr.Backoff(d, d, strategy="full_jitter", seed=seed)
        assert all(0.0 <= bo.delay(0) < d for _ in range(64))


@settings(max_examples=300, deadline=None)
@given(delays_config, st.booleans())
def test_equal_jitter_bounds(config: tuple[float, float, float, int, int], jitter: bool) -> None:
    d, delays = jittered(config, jitter, "equal_jitter")
    assert all(d / 2 <= x <= d for x in delays)


@settings(max_examples=300, deadline=None)
@given(delays_config, st.floats(0.0, 1e6))
def test_decorrelated_jitter_bounds(
    config: tuple[float, float, float, int, int], previous: float
) -> None:
    base, extra, mult, attempt, seed = config
    cap = min(base + extra, 86_400.0)
    bo = vr.Backoff(base, cap, mult, strategy="decorrelated_jitter", seed=seed)
    prev = previous if previous > 0 else base
    for _ in range(5):
        x = bo.delay(attempt, previous)
        assert math.isfinite(x)
        assert base <= x <= cap
        assert x <= max(base, 3 * prev)


@pytest.mark.parametrize("seed", [0, 1, 99])
def test_delays_feeds_previous_for_decorrelated_jitter(seed: int) -> None:
    fed = list(vr.Backoff(0.1, 60.0, strategy="decorrelated_jitter", seed=seed).delays(12))
    manual = vr.Backoff(0.1, 60.0, strategy="decorrelated_jitter", seed=seed)
    expected: list[float] = []
    previous = 0.0
    for n in range(12):
        previous = manual.delay(n, previous)
        expected.append(previous)
    assert fed == expected
    assert len(fed) == 12
    prev = 0.1
    for d in fed:
        assert 0.1 <= d <= min(60.0, 3 * prev)
        prev = d
    # without feeding `previous` every delay stays below 3 * base
    unfed = vr.Backoff(0.1, 60.0, strategy="decorrelated_jitter", seed=seed)
    assert all(unfed.delay(n) <= 0.3 for n in range(12))
    assert max(fed) > 0.3  # fed back, the delays grow


def test_delays_of_exponential_matches_delay() -> None:
    bo = vr.Backoff(jitter=False)
    assert list(bo.delays(6)) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert list(bo.delays(0)) == []


# ---------------------------------------------------------------- seeding --


@pytest.mark.parametrize("strategy", vr.STRATEGIES)
def test_same_seed_same_sequence(strategy: str) -> None:
    a = vr.Backoff(strategy=strategy, seed=42)
    b = vr.Backoff(strategy=strategy, seed=42)
    seq_a = [a.delay(n % 7) for n in range(50)]
    seq_b = [b.delay(n % 7) for n in range(50)]
    assert seq_a == seq_b
    assert list(vr.Backoff(strategy=strategy, seed=42).delays(10)) == list(
        vr.Backoff(strategy=strategy, seed=42).delays(10)
    )


@pytest.mark.parametrize("strategy", vr.STRATEGIES)
def test_different_seeds_differ(strategy: str) -> None:
    sequences = {
        tuple(vr.Backoff(strategy=strategy, seed=seed).delay(3) for _ in range(10))
        for seed in (0, 1, 2, 2**64 - 1)
    }
    assert len(sequences) == 4


def test_uniform_draws() -> None:
    bo = vr.Backoff(seed=3)
    draws = [bo.uniform() for _ in range(1000)]
    assert all(0.0 <= u < 1.0 for u in draws)
    assert 0.4 < sum(draws) / len(draws) < 0.6
    again = vr.Backoff(seed=3)
    assert [again.uniform() for _ in range(1000)] == draws


def test_repr_shows_configuration() -> None:
    text = repr(vr.Backoff(strategy="full_jitter", seed=7))
    assert "full_jitter" in text and "seed=7" in text


# -------------------------------------------------------------- RetryConfig --


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("default", (5, 0.5, 30.0, 2.0, True)),
        ("aggressive", (10, 0.1, 10.0, 1.5, True)),
        ("conservative", (3, 1.0, 60.0, 3.0, True)),
    ],
)
def test_retry_presets_hold_the_guides_values(
    preset: str, expected: tuple[int, float, float, float, bool]
) -> None:
    rc = getattr(vr.RetryConfig, preset)()
    assert isinstance(rc, vr.RetryConfig)
    assert (rc.max_attempts, rc.base_delay, rc.max_delay, rc.multiplier, rc.jitter) == expected
    assert rc.strategy == "exponential"


def test_retry_default_preset_is_the_constructor_default() -> None:
    assert vr.RetryConfig.default() == vr.RetryConfig()


def test_retry_none_preset_is_one_attempt() -> None:
    assert vr.RetryConfig.none().max_attempts == 1


def test_retry_config_accepts_durations() -> None:
    from datetime import timedelta

    rc = vr.RetryConfig(base_delay="100ms", max_delay=timedelta(seconds=5))
    assert (rc.base_delay, rc.max_delay) == (0.1, 5.0)


def test_retry_config_replace_validates() -> None:
    rc = vr.RetryConfig().replace(max_attempts=7)
    assert rc.max_attempts == 7 and rc.base_delay == 0.5
    with pytest.raises(ValueError, match="max_attempts"):
        vr.RetryConfig().replace(max_attempts=0)


def test_retry_config_is_frozen() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        vr.RetryConfig().max_attempts = 3  # type: ignore[misc]


# ----------------------------------------------------------- after fork() --


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_each_forked_worker_draws_its_own_jitter() -> None:
    # A pre-fork server: the parent has drawn (its generator is seeded), then forks
    # workers. Without reseeding, every worker would draw the parent's sequence and
    # back off in lockstep against the same provider. The forking runs in a fresh,
    # single-threaded interpreter: pytest's own may have threads (fork() there is
    # deprecated).
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import json, os
        import virtrigaud_resilience as vr

        backoff = vr.Backoff(base_delay=1.0, max_delay=1.0, strategy="full_jitter")
        backoff.delay(0)  # seed this thread's generator before forking

        def draws():
            return [backoff.delay(0) for _ in range(8)]

        sequences = []
        for _ in range(2):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report its draws and leave at once
                try:
                    os.write(write, json.dumps(draws()).encode())
                finally:
                    os._exit(0)
            os.close(write)
            with os.fdopen(read) as pipe:
                sequences.append(json.loads(pipe.read()))
            os.waitpid(pid, 0)
        sequences.append(draws())
        print("SEQUENCES", json.dumps(sequences))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("SEQUENCES "))
    sequences = json.loads(line.split(" ", 1)[1])
    assert len(sequences) == 3
    assert len({tuple(seq) for seq in sequences}) == 3, sequences
    assert all(0.0 <= d < 1.0 for seq in sequences for d in seq)


def test_a_seeded_backoff_stays_reproducible() -> None:
    first = [vr.Backoff(strategy="full_jitter", seed=7).delay(3) for _ in range(3)]
    assert len(set(first)) == 1
