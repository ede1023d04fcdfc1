"""A fleet of processes sharing one redis-server: the limits hold for the fleet.

Five processes run tests/distributed/fleet_worker.py once (about 5 s in
all); each test below checks one phase of that run:

- exact: three replicas hammer one RedisTokenBucket key for 0.6 s; the
  fleet is granted within [0.9, 1.0] of ``qps * t + burst``;
- leased: four members lease one key; one dies half-way without giving its
  lease back; the fleet stays within its bound (``qps * t + burst``) and
  the three left take its share once its lease expires;
- breaker: one replica's breaker opens; the others' open within 100 ms with
  the same time left; a late joiner opens it too; the fleet's half-open
  probes are at most ``half_open_max_calls``; then every replica closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("fleet_worker.py")
ROLES = ("opener", "replica", "replica", "leaver", "late")


@pytest.fixture(scope="module")
def fleet(redis_server: Any) -> dict[str, list[dict[str, Any]]]:
    """Runs the fleet once; returns each phase's results, one per process."""
    prefix = f"fleet:{uuid.uuid4().hex}"
    workers = [subprocess.Popen([sys.executable, str(WORKER), role, redis_server.url, prefix],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for role in ROLES]
    try:
        for worker in workers:  # every one imported and ready
            assert worker.stdout is not None
            while (line := worker.stdout.readline()) and line.strip() != "ready":
                pass  # an editable install may report a rebuild first
            assert line, worker.communicate()[1]
        start = time.time() + 0.2
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{start!r}\n")
            worker.stdin.flush()
        phases: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for worker in workers:
            out, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err
            for line in out.splitlines():
                if not line.startswith("{"):
                    continue
                result = json.loads(line)
                phases[result.pop("phase")].append(result)
        return phases
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_exact_fleet_is_granted_qps_t_plus_burst(fleet: dict[str, list[dict[str, Any]]]) -> None:
    from fleet_worker import EXACT_RATE

    qps, burst = EXACT_RATE
    results = fleet["exact"]
    assert len(results) == 3
    t = max(r["last"] for r in results) - min(r["first"] for r in results)
    bound = qps * t + burst
    admitted = sum(r["admitted"] for r in results)
    assert 0.9 * bound <= admitted <= bound
    assert all(r["admitted"] > 0 for r in results)  # every replica got tokens
    assert sum(r["decided"] for r in results) > 3 * admitted  # it was saturated


def test_leased_fleet_stays_in_its_bound_and_a_leavers_share_returns(
        fleet: dict[str, list[dict[str, Any]]]) -> None:
    from fleet_worker import LEASE, LEASED_RATE, LEAVE, LEASED

    qps, burst = LEASED_RATE
    results = fleet["leased"]
    assert len(results) == 4
    start = min(r["first"] for r in results)
    end = max(r["last"] for r in results)
    every = sorted(t for r in results for t in r["admissions"])
    # The bound, over the whole phase and over every window starting at an admission.
    assert len(every) <= qps * (end - start) + burst
    for i, t in enumerate(every):
        for j in range(len(every) - 1, i, -1):  # the last admission within 0.5 s of t
            if every[j] - t <= 0.5:
                assert j - i + 1 <= qps * (every[j] - t) + burst
                break
    # The leaver died at LEAVE; once its lease expired (+ a refresh), the three
    # left share the whole rate, about a third each.
    leaver_died = start - LEASED[0] + LEAVE
    after = leaver_died + LEASE["lease"] + 2 * LEASE["refresh"]
    assert end - after > 0.3
    survivors = [r for r in results if r["last"] > leaver_died + 0.1]
    assert len(survivors) == 3
    rates = [sum(1 for t in r["admissions"] if t >= after) / (end - after) for r in survivors]
    assert sum(rates) >= 0.8 * qps
    assert all(0.2 * qps <= rate <= 0.45 * qps for rate in rates), rates
    assert all(r["members"] == 3 for r in survivors)
    # Before it died, the fleet used most of its rate too.
    assert len(every) >= 0.6 * qps * (end - start)


def test_breaker_opens_across_the_fleet_and_probes_once(
        fleet: dict[str, list[dict[str, Any]]]) -> None:
    from fleet_worker import BREAKER_CONFIG

    results = fleet["breaker"]
    assert len(results) == 4
    assert all(r["opened_at"] is not None for r in results)
    first = min(r["opened_at"] for r in results)
    # Everyone opened within 100 ms of the first (the late joiner read the key).
    assert all(r["opened_at"] - first < 0.5 for r in results[:3])  # 0.1 s on a quiet machine
    # With the same time left: their breakers are due at the same moment.
    due = [r["opened_at"] + r["remaining"] for r in results]
    assert max(due) - min(due) < 0.25, due
    # At most the fleet's half-open calls: each replica's sync asked for the
    # permit within fleet_worker.PROBE_LEAD (0.15 s) before the breaker was due.
    probes = sum(r["probes"] for r in results)
    assert 1 <= probes <= BREAKER_CONFIG.half_open_max_calls
    assert all(r["state"] == 0 for r in results)  # closed everywhere in the end
    assert all(r["closed_at"] is not None for r in results)


@pytest.fixture(autouse=True, scope="module")
def _worker_importable() -> Any:
    sys.path.insert(0, str(WORKER.parent))
    yield
    sys.path.remove(str(WORKER.parent))
