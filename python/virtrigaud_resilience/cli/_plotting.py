"""matplotlib for the CLI's charts (``demo --plot``, ``bench --plot``): headless, small files.

:func:`pyplot` selects the Agg backend (no display needed) before pyplot is
imported; :func:`save_png` writes a figure as a PNG of at most 256 colours
(the charts are flat colours and text, so nothing visible is lost, and the
file is a fraction of the size: what the docs' images are made of).
matplotlib and Pillow (a matplotlib dependency) are imported here only.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save_png"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 80) -> None:
    """Writes ``fig`` to ``path`` as a palette PNG and closes it."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            path, format="PNG", optimize=True)
