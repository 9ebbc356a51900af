"""Progress of a long loop on stderr: a rich bar on a terminal, a plain line every few batches otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """A rich progress bar on a terminal; plain lines every ``every`` updates otherwise (logs, CI).

    ``total`` counts items (images); :meth:`update` adds ``n`` done. ``after_items`` are items the caller
    processes right after this loop at ``after_cost`` times the loop's cost per item (validation after a
    training epoch: a forward pass costs about a third of a training step's forward and backward), so that the
    remaining time tells when the whole step ends, not this loop alone.
    """

    def __init__(self, total: int, desc: str, every: int = 1, enabled: bool = True, after_items: int = 0,
                 after_cost: float = 1 / 3):
        self.total, self.desc, self.every, self.n, self.updates = total, desc, max(1, every), 0, 0
        self.enabled, self.after_items, self.after_cost = enabled, after_items, after_cost
        self.start = time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TextColumn("eta {task.fields[eta]}"), transient=True)
            self.task = self.bar.add_task(desc, total=total, info="", eta="?")
            self.bar.start()

    def eta(self) -> float:
        """Seconds left: this loop's remaining items and the items after it, at this loop's rate so far."""
        per_item = (time.perf_counter() - self.start) / max(self.n, 1)
        return per_item * (max(self.total - self.n, 0) + self.after_items * self.after_cost)

    def update(self, n: int, info: str = "") -> None:
        self.n += n
        self.updates += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=n, info=info, eta=f"{self.eta():.0f}s")
        elif self.enabled and (self.updates % self.every == 0 or self.n >= self.total):
            print(f"{self.desc} {self.n}/{self.total} {info} eta {self.eta():.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def progress_callback(total: int, desc: str, enabled: bool = True, min_total: int = 64):
    """``(callback, close)`` for library loops that take ``on_progress(n)``: a bar on a terminal for more than
    ``min_total`` items, else ``(None, a no-op)``, so short runs and pipes print nothing extra."""
    if not enabled or total <= min_total or not sys.stderr.isatty():
        return None, lambda: None
    bar = Progress(total, desc)
    return bar.update, bar.close
