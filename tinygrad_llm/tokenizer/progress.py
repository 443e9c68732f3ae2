"""A tiny one-line progress bar for long tokenizer training (no dependency)."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    """Draws `desc [#####.....] done/total elapsed` on one line of a stream.

    enabled=None means: only when the stream is a terminal, and only once the
    work has run for `delay` seconds (so short runs stay quiet).
    """

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None,
                 stream=None, delay: float = 1.0, min_interval: float = 0.1, width: int = 30):
        self.total = max(int(total), 1)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        else:
            delay = 0.0
        self.enabled = enabled
        self.delay = delay
        self.min_interval = min_interval
        self.width = width
        self.start = time.perf_counter()
        self._last = 0.0
        self._drawn = False
        self.done = 0

    def update(self, done: int) -> None:
        """Set the amount of work done so far and redraw if it is time to."""
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.start < self.delay or now - self._last < self.min_interval:
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.desc} [{bar}] {self.done}/{self.total} {now - self.start:.1f}s")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state (if anything was drawn) and end the line."""
        if self.enabled and self._drawn:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
