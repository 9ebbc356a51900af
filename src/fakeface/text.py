"""How numbers are shown to people, the same way in the terminal, the report, the model card and the docs."""

from __future__ import annotations


def fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (and its sign, if ``signed``), or "n/a" for a metric that could not be
    computed (None)."""
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
