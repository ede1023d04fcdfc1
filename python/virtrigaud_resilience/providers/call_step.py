"""The step every transport adapter takes around each call: breaker, limiter, deadline, metrics.

:class:`CallStep` admits a call before it is sent and records its outcome
after (it is what "the adapter guards the call" means). It is the part the
gRPC interceptors and the httpx transport share; each adapter subclasses it
for its method names, its rejection errors and its error mapping. Per call:

1. :meth:`CallStep.method` resolves the call's method once (its name, its
   timeout from the RPC config or ``timeouts=``, its metrics);
2. :meth:`CallStep.admit` / :meth:`CallStep.admit_async` take the
   breaker's permit and a token, or raise the adapter's rejection (marked
   :func:`~virtrigaud_resilience.providers.never_sent`, nothing held); a
   breaker or bucket the enclosing attempt (a policy around the call) already
   holds is not taken twice: that layer admits and records the attempt;
3. :meth:`CallStep.deadline` is the call's budget: the method's timeout,
   capped by the caller's and by what an enclosing policy has left;
4. the adapter runs the call and reports it with :meth:`CallStep.settle`
   (a breaker outcome: ``True`` failure, ``False`` success, ``None`` no
   outcome) or :meth:`CallStep.cancelled`; both record the metrics;
5. with ``RATE_LIMIT_ADAPTIVE`` on (the config's ``rate_limit.adaptive``,
   the switch that gives the provider's policies an adaptive rate), the
   provider's answers feed the :class:`~virtrigaud_resilience.AdaptiveRate`
   of the step's bucket (the one its policies share):
   :meth:`CallStep.quota_answer` reads the quota headers of every HTTP
   response and the trailing metadata of a gRPC ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._admission import enable, held
from .._sent import is_provider_rate_limit
from .._tracking import provider_labels
from ..adaptive_rate import AdaptiveRate
from ..breaker import CircuitBreaker, Permit
from ..config import Config
from ..errors import CircuitOpenError, RateLimitError
from ..events import emit_request, request_listeners
from ..rpcstats import RPCStats, rpc_stats
from ..timeouts import MUTATING_OPERATIONS, remaining
from .options import SHARED, AdapterOptions, OptionKeywords, Shared
from .resilient import mark_never_sent, shared_breaker, shared_limiter
from .retry_after import parse_retry_after

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SHARED", "CallStep", "Method", "Shared"]

_LOG = logging.getLogger("virtrigaud_resilience")

#: The operations whose timeout the RPC config names (anything else: mutating).
KNOWN_OPERATIONS = frozenset({"Describe", "Validate", "TaskStatus", *MUTATING_OPERATIONS})

#: The quota headers AdaptiveRate.observe_headers reads (their "-reset" pair with them).
_QUOTA_HEADERS = ("ratelimit-remaining", "x-ratelimit-remaining")

#: Method keys cached per call step; names come from stubs and code, so a few.
_MAX_CACHED = 4096

K = TypeVar("K")


class Method:
    """One method (or operation) of a call step, resolved once: name, timeout, stats."""

    __slots__ = ("name", "timeout", "stats")

    def __init__(self, name: str, timeout: float | None, stats: RPCStats | None) -> None:
        self.name = name
        self.timeout = timeout
        self.stats = stats

    def __repr__(self) -> str:
        return f"Method({self.name!r}, timeout={self.timeout!r})"


class CallStep(Generic[K]):
    """An adapter's step around each call: the breaker, limiter, deadlines
    and metrics it admits the call with before and records its outcome into after.

    (Named ``CallGuard`` before 0.2.0; the old name warns.)

    Args:
        provider_type, provider: the provider's labels (metrics, the shared breaker).
        config: as the :class:`~.options.AdapterOptions` field (given
            positionally, it overrides ``options.config`` unless None).
        options: the adapter's settings (:class:`~.options.AdapterOptions`;
            None: the defaults).
        **overrides: any AdapterOptions field as a keyword; it overrides
            that field of ``options``. A keyword that is no field is a TypeError.
    """

    owner = "CallStep"
    #: The protocol, as the request listeners hear it (events.on_request).
    system = ""

    def __init__(
        self,
        provider_type: str,
        provider: str,
        config: Config | None = None,
        *,
        options: AdapterOptions | None = None,
        **overrides: Unpack[OptionKeywords],
    ) -> None:
        owner = self.owner
        self.provider_type, self.provider = provider_labels(owner, provider_type, provider)
        self.options = options = AdapterOptions.of(
            owner, options, overrides if config is None else {**overrides, "config": config})
        self.config = config = options.resolved_config
        clock = options.clock
        breaker, limiter = options.breaker, options.limiter
        self.breaker = (shared_breaker(config, provider_type, provider, clock)
                        if isinstance(breaker, str) else breaker)
        self.limiter = (shared_limiter(config, provider_type, provider, clock)
                        if isinstance(limiter, str) else limiter)
        enable(self.breaker, self.limiter)  # attempts holding them say so, for held()
        #: The bucket's adaptive rate (RATE_LIMIT_ADAPTIVE), shared with the provider's policies.
        self.adaptive_rate = (AdaptiveRate.for_bucket(self.limiter)
                              if self.limiter is not None and config.rate_limit.adaptive else None)
        self.wait = options.wait
        self.metrics = options.metrics
        self._overrides = options.timeouts
        self._methods: dict[K, Method] = {}
        self._lock = threading.Lock()

    # -- methods -------------------------------------------------------------------

    def method(self, key: K) -> Method:
        """The resolved method for ``key`` (cached)."""
        found = self._methods.get(key)
        if found is None:
            found = self._resolve(key)
            with self._lock:
                if len(self._methods) < _MAX_CACHED:
                    self._methods[key] = found
        return found

    def _resolve(self, key: K) -> Method:
        name = str(key)
        return self._method_named(name, name)

    def _method_named(self, label: str, operation: str, *, warn: bool = True) -> Method:
        """A Method labelled ``label`` whose timeout is ``operation``'s.

        An operation the RPC config does not know gets the mutating timeout,
        as Go's ``GetRPCTimeout``; with ``warn``, that is logged once.
        """
        if operation in self._overrides:
            timeout = self._overrides[operation]
        else:
            timeout = self.config.rpc.timeout_for(operation)
            if warn and operation not in KNOWN_OPERATIONS:
                _LOG.warning("%s: %r is not an operation the RPC config knows: it gets the "
                             "mutating timeout (%gs), as Go's GetRPCTimeout does; set its own "
                             "with timeouts={%r: seconds}", self.owner, operation, timeout,
                             operation)
        stats = rpc_stats(self.provider_type, label) if self.metrics else None
        return Method(label, timeout, stats)

    def deadline(self, method: Method, caller: float | None = None) -> float | None:
        """The call's budget in seconds: the method's timeout, capped by the
        caller's ``caller`` and the time left of an enclosing policy; None: none."""
        timeout = method.timeout
        if caller is not None and (timeout is None or caller < timeout):
            timeout = caller
        left = remaining()
        if left is not None and (timeout is None or left < timeout):
            timeout = left
        return timeout

    # -- admission -------------------------------------------------------------------

    def admit(self, method: Method, start: float) -> Permit | None:
        """The breaker's permit and a token (waited for with ``wait``), or the
        adapter's rejection is raised with nothing held.

        Inside an attempt that already holds this call step's breaker or a token
        of its bucket (a :class:`~virtrigaud_resilience.Policy`, a
        ``ResilientProvider`` or ``breaker.call`` around the call with the same
        one), that one is not taken again: the attempt is admitted and counted
        once, by the enclosing layer, which also records its outcome (what the
        call raises or returns to it). The permit is then None. A breaker or
        bucket of its own (per endpoint inside per provider) still applies.
        """
        if request_listeners:  # vr.otel: the attempt's span learns the protocol
            emit_request(self.system, method.name)
        breaker_held, limiter_held = held(self.breaker, self.limiter)
        permit = None if breaker_held else self._admit_breaker(method, start)
        limiter = None if limiter_held else self.limiter
        if limiter is not None and not limiter.try_acquire():
            self._rate_binds()
            if not self.wait:
                raise self._rate_limited(permit, method, start)
            try:
                granted = limiter.acquire(1, self.deadline(method))
            except BaseException:
                self.cancelled(permit, method, start)
                raise
            if not granted:
                raise self._rate_limited(permit, method, start)
        return permit

    async def admit_async(self, method: Method, start: float) -> Permit | None:
        """:meth:`admit` for asyncio: a cancelled wait gives its tokens back."""
        if request_listeners:
            emit_request(self.system, method.name)
        breaker_held, limiter_held = held(self.breaker, self.limiter)
        permit = None if breaker_held else self._admit_breaker(method, start)
        limiter = None if limiter_held else self.limiter
        if limiter is not None and not limiter.try_acquire():
            self._rate_binds()
            if not self.wait:
                raise self._rate_limited(permit, method, start)
            try:
                granted = await limiter.acquire_async(1, self.deadline(method))
            except BaseException:
                self.cancelled(permit, method, start)
                raise
            if not granted:
                raise self._rate_limited(permit, method, start)
        return permit

    def _rate_binds(self) -> None:
        """The bucket refused: its adaptive rate's growth since the last
        throttle is brought up to date (:meth:`AdaptiveRate.refresh`), as a
        policy's refusal does; a success never reaches it."""
        if self.adaptive_rate is not None:
            self.adaptive_rate.refresh()

    def _admit_breaker(self, method: Method, start: float) -> Permit | None:
        breaker = self.breaker
        if breaker is None:
            return None
        permit = breaker.try_acquire()
        if permit is None:
            retry_after = None if breaker.held_open else (breaker.remaining_open or None)
            self.record(method, self.OPEN_CODE, start)
            raise mark_never_sent(self.open_error(method, breaker, retry_after))
        return permit

    def _rate_limited(self, permit: Permit | None, method: Method,
                      start: float) -> RateLimitError:
        if permit is not None:
            permit.release()
        self.record(method, self.LIMITED_CODE, start)
        limiter = self.limiter
        assert limiter is not None
        message = (f"{method.name}: rate limit exceeded for {self.provider_type}/"
                   f"{self.provider} ({limiter.qps:g}/s, burst {limiter.burst})")
        return mark_never_sent(self.rate_limited_error(message, limiter.retry_after()))

    # -- what an adapter raises for its own rejections (overridden) ---------------------

    #: The metrics code of a call an open breaker refused, and of one the limiter refused.
    OPEN_CODE = "Unavailable"
    LIMITED_CODE = "ResourceExhausted"

    def open_error(self, method: Method, breaker: CircuitBreaker,
                   retry_after: float | None) -> CircuitOpenError:
        """The error for a call an open breaker refused."""
        return CircuitOpenError(breaker.name, breaker.provider_type, breaker.provider, retry_after)

    def rate_limited_error(self, message: str, retry_after: float) -> RateLimitError:
        """The error for a call the limiter refused."""
        return RateLimitError(message, retry_after=retry_after)

    # -- outcomes --------------------------------------------------------------------

    def settle(self, permit: Permit | None, method: Method, start: float, code: str,
               failure: bool | None) -> None:
        """Reports a finished call: to the breaker (``failure`` True, False,
        or None for no outcome) and to the metrics (``code``)."""
        if permit is not None:
            if failure is None:
                permit.release()
            elif failure:
                permit.failure()
            else:
                permit.success()
        self.record(method, code, start)

    def cancelled(self, permit: Permit | None, method: Method, start: float) -> None:
        """The caller gave up: no breaker outcome, the slot is freed."""
        self.settle(permit, method, start, "Canceled", None)

    @staticmethod
    def record(method: Method, code: str, start: float) -> None:
        """Counts the call in the RPC metrics (``start`` from ``time.perf_counter()``)."""
        stats = method.stats
        if stats is not None:
            stats.record(code, time.perf_counter() - start)

    # -- the provider's quota (issue 24) -------------------------------------------------

    def quota_answer(self, headers: Mapping[str, Any], throttled: bool) -> None:
        """What an answer of the provider says of its quota, told to
        :attr:`adaptive_rate` (nothing without one). ``headers``: its HTTP
        headers or gRPC metadata (lower-case names, or a case-insensitive
        mapping). Quota headers that say it is spent (``RateLimit-Remaining:
        0`` with ``RateLimit-Reset``, or the ``X-RateLimit-`` pair) make the
        bucket spend nothing until the reset (:meth:`AdaptiveRate.observe_headers`);
        ``throttled`` (the provider's own rate limit: an HTTP 429, a gRPC
        ``RESOURCE_EXHAUSTED``) is a throttle with its ``retry-after``,
        unless an enclosing attempt holds this bucket: its policy observes
        the error it raises (a throttle counted once). A malformed value is
        ignored and counted in the rate's ``malformed_headers``."""
        rate = self.adaptive_rate
        if rate is None:
            return
        if _QUOTA_HEADERS[0] in headers or _QUOTA_HEADERS[1] in headers:
            rate.observe_headers(headers)
        if not throttled:
            return
        raw = headers.get("retry-after")
        retry_after = parse_retry_after(raw)
        if raw is not None and retry_after is None:
            rate.malformed_headers += 1
        if not held(self.breaker, self.limiter)[1]:
            rate.on_throttle(retry_after, rate.bucket._now_ns())

    def quota_error(self, error: BaseException, metadata: Any) -> None:
        """:meth:`quota_answer` for a failed call: ``error`` the taxonomy
        error raised for it, ``metadata`` its (key, value) pairs (None: none)."""
        if self.adaptive_rate is None:
            return
        pairs: dict[str, Any] = {}
        try:
            for key, value in metadata or ():
                pairs.setdefault(str(key).lower(), value)
        except (TypeError, ValueError):
            pass  # metadata of an odd shape: read none of it, the throttle still counts
        self.quota_answer(pairs, is_provider_rate_limit(error))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.provider_type!r}, {self.provider!r}, "
                f"breaker={self.breaker!r}, limiter={self.limiter!r})")

