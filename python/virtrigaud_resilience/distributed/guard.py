"""Deprecated: the module is now :mod:`~virtrigaud_resilience.distributed.client_breaker`.

Its names are served from there, each with a DeprecationWarning naming the
new one, until 0.3.0 (importing this module warns about nothing: reading a
name does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _deprecated

if TYPE_CHECKING:
    from .client_breaker import CLIENT_BREAKER_NAME as GUARD_NAME  # noqa: F401
    from .client_breaker import CLIENT_BREAKER_PROVIDER_TYPE as GUARD_PROVIDER_TYPE  # noqa: F401
    from .client_breaker import DEFAULT_PROBE_INTERVAL, RedisBusy, RedisUnavailable  # noqa: F401
    from .client_breaker import RedisClientBreaker as RedisGuard  # noqa: F401
else:
    _NEW = "virtrigaud_resilience.distributed.client_breaker"
    __getattr__ = _deprecated.module_getattr(__name__, {
        "RedisGuard": f"{_NEW}.RedisClientBreaker",
        "GUARD_NAME": f"{_NEW}.CLIENT_BREAKER_NAME",
        "GUARD_PROVIDER_TYPE": f"{_NEW}.CLIENT_BREAKER_PROVIDER_TYPE",
        "DEFAULT_PROBE_INTERVAL": f"{_NEW}.DEFAULT_PROBE_INTERVAL",
        "RedisUnavailable": f"{_NEW}.RedisUnavailable",
        "RedisBusy": f"{_NEW}.RedisBusy",
        "PROBE_BACKOFF_CAP": f"{_NEW}.PROBE_BACKOFF_CAP",
    })
