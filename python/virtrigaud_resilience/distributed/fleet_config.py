"""Rolling config changes: every bucket of a fleet decides with the newest config.

During a rolling deploy, processes built with different ``qps`` / ``burst``
share one key for a while. Each bucket registers, under a name of its own,
the config it was built with and the server time of its first registration
(``"id qps burst born"``; ``born`` is ``?`` until the server says): the
exact bucket in its members set, the leased bucket as its field in the
lease table. Among the members still registered, the newest config (that
of the latest born; ties broken by the larger name, so every member picks
the same) is the fleet's: the scripts decide with it (:data:`NEWEST_CONFIG_LUA`)
and return it, and each bucket adopts it (:class:`FleetConfig`), logging the
change once with both values and counting it
(``virtrigaud_distributed_transitions_total{to="newer_config"}``). A config
no bucket could have been built with (a forged name) is ignored.
"""

from __future__ import annotations

import logging

from ..ratelimit import MAX_BURST, MAX_QPS, MIN_QPS, validate_rate

__all__ = ["FleetConfig", "NEWEST_CONFIG_LUA", "member_name"]

logger = logging.getLogger("virtrigaud_resilience")

#: Lua: ``consider(name)`` folds a registered name into the newest config
#: seen so far, ``newest_config`` ({qps, burst} as registered, or nil);
#: names of another form, or with an impossible config, are skipped.
NEWEST_CONFIG_LUA = f"""
local newest_born, newest_name, newest_config = -1, '', nil
local function consider(name)
  local _, q, b, born = string.match(name, '^(%S+) (%S+) (%S+) (%S+)$')
  local qps, burst, at = tonumber(q), tonumber(b), tonumber(born)
  if not (at and qps and burst and qps >= {MIN_QPS!r} and qps <= {MAX_QPS!r}
          and burst >= 1 and burst <= {MAX_BURST} and burst == math.floor(burst)) then
    return
  end
  if at > newest_born or (at == newest_born and name > newest_name) then
    newest_born, newest_name, newest_config = at, name, {{q, b}}
  end
end
"""


def member_name(member: str, qps: float, burst: int) -> str:
    """A member's name before its first registration (born: ``?``)."""
    return f"{member} {qps!r} {burst} ?"


class FleetConfig:
    """The qps and burst a bucket of a fleet decides with.

    The config it was built with (:attr:`built_with`, what it registers),
    until :meth:`adopt` is given another, newer one.
    """

    __slots__ = ("_what", "_key", "built_with", "qps", "burst", "changes")

    def __init__(self, what: str, key: str, qps: float, burst: int) -> None:
        self._what, self._key = what, key  # for the log: "rate limit" / "leased rate limit"
        self.built_with = (qps, burst)
        self.qps, self.burst = qps, burst
        #: How many times the bucket took a newer config.
        self.changes = 0

    def adopt(self, qps_text: object, burst_text: object) -> bool:
        """Takes the fleet's newest config (as a script returned it: text or
        bytes; empty: none known). True if it differs from the current one
        and is a config a bucket can be built with: then it is current,
        logged (once: the next call finds it current) and counted."""
        parsed = _parse(qps_text, burst_text)
        if parsed is None or parsed == (self.qps, self.burst):
            return False
        qps, burst = parsed
        logger.warning(
            "%s %r: the fleet's newest config is qps=%g, burst=%d; this process has qps=%g, "
            "burst=%d (built with qps=%g, burst=%d): it now decides with the newest",
            self._what, self._key, qps, burst, self.qps, self.burst, *self.built_with,
            extra={"rate_limit": self._key, "redis_state": "config_mismatch"})
        self.qps, self.burst = qps, burst
        self.changes += 1
        return True


def _parse(qps_text: object, burst_text: object) -> tuple[float, int] | None:
    """(qps, burst) from a reply's text, or None if absent or impossible."""
    try:
        qps, burst = float(_str(qps_text)), float(_str(burst_text))
        if not burst.is_integer():
            return None
        return validate_rate("FleetConfig", qps, int(burst))
    except (TypeError, ValueError):
        return None  # absent (''), or not a config a bucket could be built with


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
