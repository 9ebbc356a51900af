"""How numbers and tables are shown to people, the same way in the terminal, the report, the model card and the docs."""

from __future__ import annotations


def fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (and its sign, if ``signed``), or "n/a" for a metric that could not be
    computed (None)."""
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def with_ci(metrics: dict, key: str) -> str:
    """A metric with its bootstrap 95 % interval, when the evaluation computed one."""
    ci = metrics.get("bootstrap", {}).get(key)
    return fmt(metrics.get(key)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: ``header`` then one line per row, each cell as ``str`` gives it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
