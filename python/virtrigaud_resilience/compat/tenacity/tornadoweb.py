"""tenacity.tornadoweb: ``TornadoRetrying`` for tornado's ``gen.coroutine`` functions
(importable only where tornado is installed)."""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable, Generator

from tornado import gen

from ._retrying import BaseRetrying, DoAttempt, DoSleep, RetryCallState

__all__ = ["TornadoRetrying"]


class TornadoRetrying(BaseRetrying):
    """Retries tornado coroutines; ``sleep`` returns a tornado Future (``gen.sleep``)."""

    def __init__(self, sleep: Callable[[float], typing.Any] = gen.sleep,
                 **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self.sleep = sleep

    @gen.coroutine  # type: ignore[misc, untyped-decorator, unused-ignore]  # (no tornado)
    def __call__(  # type: ignore[override, unused-ignore]
        self, fn: Callable[..., typing.Any], *args: typing.Any, **kwargs: typing.Any
    ) -> Generator[typing.Any, typing.Any, typing.Any]:
        self.begin()
        retry_state = RetryCallState(retry_object=self, fn=fn, args=args, kwargs=kwargs)
        while True:
            step = self.iter(retry_state=retry_state)
            if isinstance(step, DoAttempt):
                try:
                    result = yield fn(*args, **kwargs)
                except BaseException:
                    retry_state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                else:
                    retry_state.set_result(result)
            elif isinstance(step, DoSleep):
                retry_state.prepare_for_next_attempt()
                yield self.sleep(step)
            else:
                raise gen.Return(step)
