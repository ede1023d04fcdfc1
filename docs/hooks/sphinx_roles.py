"""A griffe extension: the docstrings' reST markup, read as Markdown.

The docstrings are written for reading in the source and in ``help()``:
Sphinx roles (``:class:`TokenBucket```, ``:meth:`~x.y.z```) and literal
blocks introduced by ``::``. mkdocstrings renders Markdown, where a role
would show as text around a code span and ``::`` as two colons. This turns
a role into a code span of its target (``~`` keeps the last component, as
Sphinx shows it) and ``text::`` into ``text:`` (the indented block after it
is already a Markdown code block). The source stays as it is.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`]+)`")


def _role_as_code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def markdown_of(docstring: str) -> str:
    """``docstring`` with its roles as code spans and ``::`` markers as ``:``."""
    lines = []
    for line in ROLE.sub(_role_as_code, docstring).split("\n"):
        if line.rstrip().endswith("::"):
            line = line.rstrip()[:-1]
            if line.strip() == ":":  # a bare "::" line only introduces the block
                continue
        lines.append(line)
    return "\n".join(lines)


class SphinxRolesAsCode(Extension):
    """Rewrites each object's docstring with :func:`markdown_of` once loaded."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
