"""backoff.types: the ``Details`` dict handlers receive."""

from ._typing import Details

__all__ = ["Details"]
