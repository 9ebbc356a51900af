"""Making and saving the figures every plot of the package draws: one size, one DPI, one colour per class.

Figures are ``matplotlib.figure.Figure`` objects rendered by the Agg canvas: no pyplot, no global state, no display
needed.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

DPI = 110
COLORS = {"real": "#1f77b4", "fake": "#d95f02"}


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder made if need be); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # the Agg canvas renders PNGs; no pyplot involved
    return path
