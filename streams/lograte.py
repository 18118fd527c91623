"""Rate-limited logs for the workers: a repeated message is logged a few times per
period, then counted, and the count is logged with its next appearance.

In: every log record reaching the root handlers. Out: the same records, except that
beyond ``burst`` records of one (logger, level, message template) within ``period_s``
the rest are dropped and counted. Measured on a broker restarted under load: one worker
wrote 19,632 lines in 13 s (aiokafka's "Unable connect to node" and "Unable to update
metadata", about 1,500 a second), filling its unrotated log.

:class:`Worker` is ``faust.Worker`` with the filter installed on the root handlers once
Faust configured logging (``on_setup_root_logger``): Faust replaces the handlers set up
before it, so a filter installed earlier would be lost.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import faust

#: Distinct message templates remembered; the oldest is forgotten beyond this.
MAX_KEYS = 1000


class RepeatLimiter(logging.Filter):
    def __init__(
        self, burst: int, period_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.period_s = period_s
        self.clock = clock
        # key -> [window start, records in the window, records dropped in it]
        self._windows: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.period_s:
            dropped = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            self._windows.move_to_end(key)
            while len(self._windows) > MAX_KEYS:
                self._windows.popitem(last=False)
            if dropped:
                # As a template with arguments, as formatters expect of every record.
                text = record.getMessage()
                record.msg = "%s [and %d more like it in the last %s s, not logged]"
                record.args = (text, dropped, f"{self.period_s:g}")
            return True
        window[1] += 1
        if window[1] <= self.burst:
            return True
        window[2] += 1
        return False


class Worker(faust.Worker):
    """``faust.Worker`` whose root log handlers drop repeats (:class:`RepeatLimiter`)."""

    def __init__(self, *args: Any, log_burst: int, log_period_s: float, **kwargs: Any) -> None:
        self._limiter = RepeatLimiter(log_burst, log_period_s)
        super().__init__(*args, **kwargs)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        for handler in logger.handlers:
            if self._limiter not in handler.filters:
                handler.addFilter(self._limiter)
