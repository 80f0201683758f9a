"""The one place dsspn sets up matplotlib, for every picture it draws: the concept tree's PNG
(``hierarchy show --format png``), predict's legends and a run's ``curves.png``.

Those pictures hold user text: concept and label names, image file names, run folder names.
matplotlib would read ``$...$`` in any of them as mathtext (``$x^$`` stops the drawing with a
parse error; others draw something else than the name), and with a matplotlibrc that sets
``text.usetex`` it would hand the text to TeX. Here text is drawn as written, always.
No torch: the hierarchy commands use it.
"""

from __future__ import annotations

import io

PLAIN_TEXT = {
    "text.parse_math": False,              # '$' is a dollar sign, not the start of math
    "text.usetex": False,                  # never TeX, whatever the user's matplotlibrc says
    "axes.formatter.use_mathtext": False,  # tick labels as plain text too (1e6, not $10^6$)
}


def new_figure(width: float, height: float, dpi: float = 100):
    """A matplotlib Figure drawn off-screen (Agg, whatever the configured backend), its text
    drawn as written."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Text reads these when it is made: set before the figure, for the whole process.
    matplotlib.rcParams.update(PLAIN_TEXT)
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure, **options) -> bytes:
    """The figure as PNG bytes (``options`` go to ``savefig``: dpi, bbox_inches...)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **options)
    return buffer.getvalue()


__all__ = ["new_figure", "png_bytes", "PLAIN_TEXT"]
