"""AIMD, Gradient2 and Vegas against a plain transcription of Netflix's Java.

The reference functions below are line-for-line transcriptions of
concurrency-limits' AIMDLimit._update, Gradient2Limit._update (with its
ExpAvgMeasurement) and VegasLimit._update / updateEstimatedLimit, with the
Java names kept, written independently of adaptive_limits.py. Each
algorithm is fed recorded RTT traces of 10,000 samples (seeded: the same
trace every run) and must return the reference's limit sequence within 1.
"""

from __future__ import annotations

import math
import random

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.adaptive_limits import log10_root

SAMPLES = 10_000


# -------------------------------------------------------------- the traces --


def trace(seed: int) -> list[tuple[int, int, bool]]:
    """(rtt_ns, inflight, didDrop) per window: a service at 20 ms that
    congests (RTT grows with load), recovers, and times out now and then."""
    rng = random.Random(seed)
    out = []
    base = 20e6
    for i in range(SAMPLES):
        phase = (i // 1000) % 4
        load = rng.randint(1, 120) if phase != 3 else rng.randint(1, 20)
        congestion = 1.0 + (max(0, load - 40) / 20.0 if phase == 1 else 0.0)
        rtt = int(base * congestion * rng.uniform(0.9, 1.6))
        drop = rng.random() < (0.08 if phase == 1 else 0.005)
        out.append((rtt, load, drop))
    return out


TRACES = [trace(seed) for seed in (1, 2, 3)]


# ---------------------------------------------------- the reference formulas --


def reference_aimd(samples: list[tuple[int, int, bool]], *, initial: int = 20,
                   min_limit: int = 1, max_limit: int = 1000, backoff_ratio: float = 0.9,
                   timeout: int = 5_000_000_000) -> list[int]:
    limit = initial
    out = []
    for rtt, inflight, did_drop in samples:
        current_limit = limit
        if did_drop or rtt > timeout:
            current_limit = int(current_limit * backoff_ratio)
        elif inflight * 2 >= current_limit:
            current_limit = current_limit + 1
        limit = min(max_limit, max(min_limit, current_limit))
        out.append(limit)
    return out


def reference_gradient2(samples: list[tuple[int, int, bool]], *, initial: int = 20,
                        min_limit: int = 1, max_limit: int = 1000, smoothing: float = 0.2,
                        rtt_tolerance: float = 1.5, long_window: int = 600,
                        queue_size: float = 4) -> list[int]:
    estimated_limit = float(initial)
    # ExpAvgMeasurement(longWindow, 10)
    value, total, count = 0.0, 0.0, 0
    out = []
    for rtt, inflight, _did_drop in samples:
        short_rtt = float(rtt)
        if count < 10:
            count += 1
            total += short_rtt
            value = total / count
        else:
            factor = 2.0 / (long_window + 1)
            value = value * (1 - factor) + short_rtt * factor
        long_rtt = value
        if long_rtt / short_rtt > 2:
            value = value * 0.95
        if inflight < estimated_limit / 2:
            out.append(int(estimated_limit))
            continue
        gradient = max(0.5, min(1.0, rtt_tolerance * long_rtt / short_rtt))
        new_limit = estimated_limit * gradient + queue_size
        new_limit = estimated_limit * (1 - smoothing) + new_limit * smoothing
        new_limit = max(min_limit, min(max_limit, new_limit))
        estimated_limit = new_limit
        out.append(int(estimated_limit))
    return out


def reference_vegas(samples: list[tuple[int, int, bool]], rng: random.Random, *,
                    initial: int = 20, max_concurrency: int = 1000, smoothing: float = 1.0,
                    probe_multiplier: int = 30) -> list[int]:
    def log10(i: int) -> int:  # Log10RootIntFunction.create(0)
        return max(1, int(math.log10(i))) if i >= 1 else 1

    estimated_limit = float(initial)
    rtt_noload = 0
    probe_count = 0
    probe_jitter = 0.5 + 0.5 * rng.random()
    out = []
    for rtt, inflight, did_drop in samples:
        probe_count += 1
        if probe_jitter * probe_multiplier * estimated_limit <= probe_count:
            probe_jitter = 0.5 + 0.5 * rng.random()
            probe_count = 0
            rtt_noload = rtt
            out.append(int(estimated_limit))
            continue
        if rtt_noload == 0 or rtt < rtt_noload:
            rtt_noload = rtt
            out.append(int(estimated_limit))
            continue
        queue_size = math.ceil(estimated_limit * (1 - rtt_noload / rtt))
        if did_drop:
            new_limit = estimated_limit - log10(int(estimated_limit))
        elif inflight * 2 < estimated_limit:
            out.append(int(estimated_limit))
            continue
        else:
            alpha = 3 * log10(int(estimated_limit))
            beta = 6 * log10(int(estimated_limit))
            threshold = log10(int(estimated_limit))
            if queue_size <= threshold:
                new_limit = estimated_limit + beta
            elif queue_size < alpha:
                new_limit = estimated_limit + log10(int(estimated_limit))
            elif queue_size > beta:
                new_limit = estimated_limit - log10(int(estimated_limit))
            else:
                out.append(int(estimated_limit))
                continue
        new_limit = max(1, min(max_concurrency, new_limit))
        new_limit = (1 - smoothing) * estimated_limit + smoothing * new_limit
        estimated_limit = new_limit
        out.append(int(estimated_limit))
    return out


# -------------------------------------------------------------- fidelity --


def run(algorithm: vr.adaptive_limits.LimitAlgorithm,
        samples: list[tuple[int, int, bool]]) -> list[int]:
    return [algorithm.update(rtt, inflight, drop) for rtt, inflight, drop in samples]


def assert_within_one(ours: list[int], reference: list[int]) -> None:
    assert len(ours) == len(reference) == SAMPLES
    worst = max(abs(a - b) for a, b in zip(ours, reference))
    assert worst <= 1, worst
    assert len(set(reference)) > 10  # the trace moves the limit: the check means something


@pytest.mark.parametrize("samples", TRACES)
def test_aimd_matches_netflix(samples: list[tuple[int, int, bool]]) -> None:
    assert_within_one(run(vr.AIMD(), samples), reference_aimd(samples))


@pytest.mark.parametrize("samples", TRACES)
def test_aimd_with_bounds_and_timeout_matches(samples: list[tuple[int, int, bool]]) -> None:
    ours = run(vr.AIMD(50, backoff_ratio=0.7, timeout=0.03, min_limit=5, max_limit=90), samples)
    assert_within_one(ours, reference_aimd(samples, initial=50, min_limit=5, max_limit=90,
                                           backoff_ratio=0.7, timeout=30_000_000))


@pytest.mark.parametrize("samples", TRACES)
def test_gradient2_matches_netflix(samples: list[tuple[int, int, bool]]) -> None:
    assert_within_one(run(vr.Gradient2(), samples), reference_gradient2(samples))


@pytest.mark.parametrize("samples", TRACES)
def test_gradient2_with_parameters_matches(samples: list[tuple[int, int, bool]]) -> None:
    ours = run(vr.Gradient2(64, smoothing=0.5, rtt_tolerance=2.0, long_window=100,
                            queue_size=2, min_limit=4, max_limit=200), samples)
    assert_within_one(ours, reference_gradient2(samples, initial=64, smoothing=0.5,
                                                rtt_tolerance=2.0, long_window=100,
                                                queue_size=2, min_limit=4, max_limit=200))


@pytest.mark.parametrize("samples", TRACES)
def test_vegas_matches_netflix(samples: list[tuple[int, int, bool]]) -> None:
    ours = run(vr.Vegas(random=random.Random(7).random), samples)
    assert_within_one(ours, reference_vegas(samples, random.Random(7)))


@pytest.mark.parametrize("samples", TRACES)
def test_vegas_smoothed_matches(samples: list[tuple[int, int, bool]]) -> None:
    ours = run(vr.Vegas(100, smoothing=0.5, probe_multiplier=10,
                        random=random.Random(3).random), samples)
    assert_within_one(ours, reference_vegas(samples, random.Random(3), initial=100,
                                            smoothing=0.5, probe_multiplier=10))


# ------------------------------------------------------------ the behaviour --


def test_aimd_backs_off_on_a_drop_and_grows_under_load() -> None:
    aimd = vr.AIMD(20)
    assert aimd.update(10_000_000, 10, True) == 18       # int(20 * 0.9)
    assert aimd.update(10_000_000, 9, False) == 19       # in flight >= limit / 2
    assert aimd.update(10_000_000, 2, False) == 19       # app-limited: holds
    assert aimd.update(6_000_000_000, 19, False) == 17   # over the 5 s timeout: a drop


def test_gradient2_falls_when_latency_rises() -> None:
    g = vr.Gradient2(100)
    for _ in range(20):
        g.update(10_000_000, 100, False)
    high = g.limit
    for _ in range(10):
        g.update(40_000_000, 100, False)
    assert g.limit < high * 0.6


def test_log10_root() -> None:
    assert [log10_root(n) for n in (0, 1, 9, 10, 99, 100, 1000)] == [1, 1, 1, 1, 1, 2, 3]


def test_bounded_is_a_fresh_copy() -> None:
    g = vr.Gradient2(30)
    g.update(10_000_000, 30, False)
    copy = g.bounded(2, 25)
    assert (copy.min_limit, copy.max_limit, copy.limit, copy.initial_limit) == (2, 25, 25, 25)
    assert type(copy) is vr.Gradient2 and copy is not g
    assert "Gradient2(initial_limit=25" in repr(copy)


# --------------------------------------------------------------- bad input --


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: vr.AIMD(backoff_ratio=1.0), ValueError, "AIMD backoff_ratio must be in"),
    (lambda: vr.AIMD(backoff_ratio=0.0), ValueError, "AIMD backoff_ratio must be in"),
    (lambda: vr.AIMD(backoff_ratio=float("nan")), ValueError, "AIMD backoff_ratio must be fin"),
    (lambda: vr.AIMD(timeout=float("inf")), ValueError, "AIMD timeout must be finite"),
    (lambda: vr.AIMD(timeout=0), ValueError, "AIMD timeout must be > 0"),
    (lambda: vr.AIMD(0), ValueError, "AIMD initial_limit must be >= 1"),
    (lambda: vr.AIMD(2.5), TypeError, "AIMD initial_limit must be an int"),  # type: ignore[arg-type]
    (lambda: vr.AIMD(min_limit=10, max_limit=5), ValueError, "AIMD min_limit must be <= max"),
    (lambda: vr.Gradient2(smoothing=0), ValueError, "Gradient2 smoothing must be > 0"),
    (lambda: vr.Gradient2(smoothing=1.5), ValueError, "Gradient2 smoothing must be <= 1"),
    (lambda: vr.Gradient2(rtt_tolerance=0.9), ValueError, "Gradient2 rtt_tolerance must be >="),
    (lambda: vr.Gradient2(queue_size=float("nan")), ValueError,
     "Gradient2 queue_size must be finite"),
    (lambda: vr.Gradient2(long_window=0), ValueError, "Gradient2 long_window must be >= 1"),
    (lambda: vr.Vegas(smoothing=float("inf")), ValueError, "Vegas smoothing must be finite"),
    (lambda: vr.Vegas(probe_multiplier=0), ValueError, "Vegas probe_multiplier must be >= 1"),
    (lambda: vr.Vegas(random=3), TypeError, "Vegas random must be a callable"),  # type: ignore[arg-type]
])
def test_bad_parameters_name_the_field(make: object, error: type[Exception],
                                       message: str) -> None:
    with pytest.raises(error, match=message):
        make()  # type: ignore[operator]


def test_a_zero_rtt_sample_is_ignored() -> None:
    for algorithm in (vr.Gradient2(), vr.Vegas()):
        assert algorithm.update(0, 20, False) == 20
        assert algorithm.update(-5, 20, True) == 20
