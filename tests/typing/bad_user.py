"""Mistakes mypy must catch through the forwarding (ParamSpec) signatures.

tests/test_typing.py runs mypy on this file and expects exactly the errors
marked ``# E:`` (by line).
"""

from __future__ import annotations

import virtrigaud_resilience as vr


def describe(vm_id: str, *, verbose: bool = False) -> dict[str, str]:
    return {"id": vm_id}


cb = vr.CircuitBreaker("x")
policy = vr.PolicyBuilder("p").build()
cb.call(describe, 42)  # E: arg-type
policy.execute(describe, "vm", verbos=True)  # E: call-arg
count: int = cb.call(describe, "vm")  # E: assignment
vr.TokenBucket().try_acquire(n="2")  # E: arg-type
vr.BreakerConfig(reset_timeout=[60])  # E: arg-type
