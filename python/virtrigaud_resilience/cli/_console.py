"""Tables for the command line: rich on a terminal, plain aligned text elsewhere.

The CLI's commands (``demo``, ``bench``) describe a table once, as headers
and rows of cells, and :func:`print_table` draws it: with ``rich`` when the
stream is a terminal and rich is installed, as plain columns otherwise (a
pipe, a log file, CI), so what a script reads never depends on a terminal's
width. A cell is a str, or ``(text, style)`` with a rich style for the
terminal. rich is imported here only when used.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import IO, Any

__all__ = ["Cell", "have_rich", "is_terminal", "print_table", "text_of"]

Cell = str | tuple[str, str]


def have_rich() -> bool:
    """Whether rich can be imported (without importing it)."""
    return importlib.util.find_spec("rich") is not None


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stdout) is a terminal."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def text_of(cell: Cell) -> str:
    """A cell's text, without its style."""
    return cell if isinstance(cell, str) else cell[0]


def rich_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]],
               right: Sequence[bool] | None = None) -> Any:
    """The table as a ``rich.table.Table``: headers, then rows; ``right[i]``
    aligns column ``i`` right (numbers)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD)
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if right and right[i] else "left",
                         no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) if isinstance(cell, str) else Text(cell[0], style=cell[1])
                        for cell in row))
    return table


def plain_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]],
                right: Sequence[bool] | None = None) -> str:
    """The table as aligned plain text (title, header, rule, rows)."""
    texts = [[text_of(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in texts]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if right and right[i] else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in texts]
    return "\n".join(out)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]],
                right: Sequence[bool] | None = None, stream: IO[str] | None = None) -> None:
    """Prints the table to ``stream`` (default stdout): rich on a terminal
    where rich is installed, plain text otherwise."""
    stream = sys.stdout if stream is None else stream
    if is_terminal(stream) and have_rich():
        from rich.console import Console

        console = Console(file=stream)
        if title:
            console.print(title, style="bold", highlight=False)
        console.print(rich_table("", headers, rows, right))
    else:
        print(plain_table(title, headers, rows, right), file=stream)
