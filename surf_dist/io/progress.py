"""Progress on long work: a tqdm bar on a terminal; in a log (stderr is not a terminal), one
line every ``LOG_EVERY_S`` seconds with the count, the time per item and the time left."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

LOG_EVERY_S = 10.0


def bar(iterable, desc: str, enabled: bool, total: int | None = None, initial: int = 0):
    """``iterable`` wrapped with progress shown on stderr when ``enabled``; the result has
    tqdm's ``set_postfix``."""
    if not enabled or sys.stderr.isatty():
        return tqdm(iterable, desc=desc, disable=not enabled, total=total, initial=initial, leave=False)
    return LogLines(iterable, desc, total, initial)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class LogLines:
    """A progress bar for logs: ``desc: 120/900, 3.1 s each, 40.3 min left (loss=...)``."""

    def __init__(self, iterable, desc: str, total: int | None, initial: int = 0):
        self.iterable, self.desc, self.initial = iterable, desc, initial
        self.total = total if total is not None else (initial + len(iterable) if hasattr(iterable, "__len__")
                                                      else None)
        self.postfix: dict = {}

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def __iter__(self):
        start = last = time.monotonic()
        done = self.initial
        for item in self.iterable:
            yield item
            done += 1
            now = time.monotonic()
            if now - last >= LOG_EVERY_S:
                last = now
                print(self.line(done, (now - start) / (done - self.initial)), file=sys.stderr, flush=True)

    def line(self, done: int, each_s: float) -> str:
        text = f"{self.desc}: {done}" + (f"/{self.total}" if self.total else "") + f", {each_s:.2g} s each"
        if self.total:
            text += f", {_duration(each_s * (self.total - done))} left"
        if self.postfix:
            text += " (" + ", ".join(f"{k}={v}" for k, v in self.postfix.items()) + ")"
        return text
