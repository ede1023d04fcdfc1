"""Which calls the tracer provider's sampler drops before any span exists.

A sampler that drops everything (``ALWAYS_OFF``) keeps the policies'
native methods in place (see ``instrument()``). A parent-based sampler (the
SDK's default: ``ParentBased(ALWAYS_ON)``) decides per call from the
parent's trace flags: the most common production setting is a service
whose callers sample a fraction of their traces, so most calls arrive under
a parent that is not sampled. For those, the native gate of _gate.py
decides before any Python frame and runs the native call: no span is made,
not even a non-recording one. Where the gate cannot read the context (the
API configured with another runtime context), :meth:`SamplingRule.drops`
decides in the traced methods instead, from one read of the current span's
context.

The rule is read from the sampler's description (the API's only public
view of a sampler): ``ParentBased{root:...,remoteParentSampled:...,
remoteParentNotSampled:...,localParentSampled:...,localParentNotSampled:...}``.
A delegate counts as dropping only when it is ``AlwaysOffSampler``; any
other sampler (a ratio, a custom one) is left to decide on the traced path.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from ._context import SPAN_KEY, current

ALWAYS_OFF = "AlwaysOffSampler"
_PARENT_BASED = "ParentBased{"
#: The delegates a ParentBased sampler's description names, in its order.
_DELEGATES = ("root", "remoteParentSampled", "remoteParentNotSampled",
              "localParentSampled", "localParentNotSampled")


def description(provider: Any) -> str | None:
    """The provider's sampler's description; None when it has none."""
    describe = getattr(getattr(provider, "sampler", None), "get_description", None)
    if not callable(describe):
        return None
    described = describe()
    return described if isinstance(described, str) else None


class SamplingRule:
    """Whether a parent-based sampler drops a call, by its parent.

    ``off[is_remote][sampled]``: whether the delegate for a valid parent
    (remote or local, sampled or not) is ``ALWAYS_OFF``; ``root_off``: the
    same for a call without a valid parent.
    """

    __slots__ = ("root_off", "off")

    def __init__(self, root_off: bool, off: tuple[tuple[bool, bool], tuple[bool, bool]]) -> None:
        self.root_off = root_off
        self.off = off

    def drops(self) -> bool:
        """Whether the sampler drops a span started now, under the current span."""
        span = current().get(SPAN_KEY)
        if span is None:
            return self.root_off
        if TUPLE_LAYOUT:  # 4x faster than the properties, each a Python call
            _, _, remote, flags, _, valid = span.get_span_context()  # type: ignore[attr-defined]
            return self.off[remote][flags & 1] if valid else self.root_off
        parent = trace.get_current_span().get_span_context()
        if not parent.is_valid:
            return self.root_off
        return self.off[parent.is_remote][parent.trace_flags.sampled]


def _tuple_layout() -> bool:
    """Whether a SpanContext is the tuple (trace_id, span_id, is_remote,
    trace_flags, trace_state, is_valid), as the API has built it since 1.0
    (checked here, not assumed: a change falls back to the properties)."""
    context = SpanContext(3, 5, is_remote=True, trace_flags=TraceFlags(1))
    try:
        _, _, remote, flags, _, valid = NonRecordingSpan(context).get_span_context()
    except (TypeError, ValueError):
        return False
    return (remote, flags, valid) == (True, 1, True) and context.trace_flags.sampled


TUPLE_LAYOUT = _tuple_layout()


def rule(provider: Any) -> SamplingRule | None:
    """The provider's parent-based rule; None when its sampler is not
    parent-based or none of its delegates is ``ALWAYS_OFF`` (nothing to
    decide ahead of the SDK)."""
    delegates = _delegates(description(provider))
    if delegates is None:
        return None
    off = {name: sampler == ALWAYS_OFF for name, sampler in delegates.items()}
    if not any(off.values()):
        return None
    return SamplingRule(off["root"], (
        (off["localParentNotSampled"], off["localParentSampled"]),
        (off["remoteParentNotSampled"], off["remoteParentSampled"])))


def _delegates(described: str | None) -> dict[str, str] | None:
    """``{delegate: its description}`` of a ParentBased description (a
    nested one, e.g. a ParentBased root, kept whole); None for another."""
    if described is None or not described.startswith(_PARENT_BASED) \
            or not described.endswith("}"):
        return None
    body = described[len(_PARENT_BASED):-1]
    parts: dict[str, str] = {}
    depth = start = 0
    for index, char in enumerate(body + ","):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            name, _, sampler = body[start:index].partition(":")
            parts[name] = sampler
            start = index + 1
    return parts if tuple(parts) == _DELEGATES else None
