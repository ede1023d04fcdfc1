"""A griffe extension: the docstrings' reST markup, read as Markdown.

The docstrings are written for reading in the source and in ``help()``:
Sphinx roles (``:class:`TokenBucket```, ``:meth:`~x.y.z```), literal
blocks introduced by ``::`` and reST simple tables (columns under rules of
``=``). mkdocstrings renders Markdown, where a role would show as text
around a code span, ``::`` as two colons and a simple table as one run-on
paragraph. Each docstring is rewritten once loaded: a role becomes a code
span of its target (``~`` keeps the last component, as Sphinx shows it),
``text::`` becomes ``text:`` (the indented block after it is already a
Markdown code block), and a simple table a Markdown table. The source
stays as it is.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`]+)`")
TABLE_RULE = re.compile(r"^(\s*)=+(?:\s+=+)+\s*$")


def _role_as_code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _without_literal_markers(lines: list[str]) -> list[str]:
    kept = []
    for line in lines:
        if line.rstrip().endswith("::"):
            line = line.rstrip()[:-1]
            if line.strip() == ":":  # a bare "::" line only introduces the block
                continue
        kept.append(line)
    return kept


def _column_starts(rule: str) -> list[int]:
    return [match.start() for match in re.finditer(r"=+", rule)]


def _cells(line: str, starts: list[int]) -> list[str]:
    ends = [*starts[1:], len(line)]
    return [line[start:end].strip() for start, end in zip(starts, ends)]


def _markdown_table(rows: list[str], starts: list[int], indent: str, header_rows: int) -> list[str]:
    """Rows of a simple table (a blank first cell continues the row above) as Markdown."""
    table: list[list[str]] = []
    for number, line in enumerate(rows):
        cells = _cells(line, starts)
        if table and not cells[0] and number != header_rows:
            table[-1] = [f"{old} {new}".strip() for old, new in zip(table[-1], cells)]
        else:
            table.append(cells)
    if not header_rows:  # Markdown needs a header: an empty one
        table.insert(0, [""] * len(starts))

    def row(cells: list[str]) -> str:
        return indent + "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [row(table[0]), indent + "|" + "---|" * len(starts), *map(row, table[1:])]


def _with_markdown_tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        rule = TABLE_RULE.match(lines[i])
        if not rule:
            out.append(lines[i])
            i += 1
            continue
        # The table runs to the first blank line; its rules split header from body.
        end = i + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        block = lines[i:end]
        rules = [n for n, line in enumerate(block) if TABLE_RULE.match(line)]
        body = [line for n, line in enumerate(block) if n not in rules]
        header_rows = rules[1] - 1 if len(rules) == 3 else 0
        out.extend(["", *_markdown_table(body, _column_starts(block[0]), rule.group(1), header_rows)])
        i = end
    return out


def markdown_of(docstring: str) -> str:
    """``docstring`` with its roles, ``::`` markers and simple tables as Markdown."""
    lines = ROLE.sub(_role_as_code, docstring).split("\n")
    return "\n".join(_with_markdown_tables(_without_literal_markers(lines)))


class RestAsMarkdown(Extension):
    """Rewrites each object's docstring with :func:`markdown_of` once loaded."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
