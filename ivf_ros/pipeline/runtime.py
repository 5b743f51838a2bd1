"""Thread and statistics helpers the nodes share (no rclpy): newest-only worker, rates, latency."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
import signal
import threading
import time
from typing import Any, Generic, TypeVar

import numpy as np

Item = TypeVar('Item')


class LatestWorker(Generic[Item]):
    """Run handler on the newest submitted item in a thread; stale pending items are dropped.

    An item is stale when a newer one arrives while it waits behind a busy worker (a live view
    wants the newest frame, never a backlog): the newer one replaces it, counted in `dropped`.
    While the worker is idle nothing is stale yet: items submitted before its thread wakes up
    (two pairs released a few milliseconds apart) all wait, up to IDLE_QUEUE of them.
    """

    IDLE_QUEUE = 2

    def __init__(self, name: str, handler: Callable[[Item], None],
                 on_error: Callable[[Exception], None],
                 on_start: Callable[[], None] | None = None) -> None:
        self._handler = handler
        self._on_error = on_error
        self._on_start = on_start  # run first, in the worker thread (per-thread settings)
        self._condition = threading.Condition()
        self._pending: deque[Item] = deque()
        self._busy = False  # the handler is running on an item
        self._running = True
        self.dropped = 0  # items never handled: replaced by newer ones, or left at stop()
        self.processed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        """Queue item: it replaces what waits behind a busy worker, else joins the queue."""
        with self._condition:
            if not self._running:
                # A stopped worker never takes it: count it instead of queueing it for nobody.
                self.dropped += 1
                return
            if self._busy or len(self._pending) >= self.IDLE_QUEUE:
                self.dropped += len(self._pending)
                self._pending.clear()
            self._pending.append(item)
            self._condition.notify()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the item in progress (pending ones count as dropped); True once joined."""
        with self._condition:
            self._running = False
            self.dropped += len(self._pending)
            self._pending.clear()
            self._condition.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        """Wait for items and handle them one at a time."""
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception as error:  # noqa: BLE001 - reported; the worker still runs
                self._on_error(error)
        while True:
            with self._condition:
                while self._running and not self._pending:
                    self._condition.wait()
                if not self._running:
                    return
                item = self._pending.popleft()
                self._busy = True
            try:
                self._handler(item)
                self.processed += 1
            except Exception as error:  # a bad frame must never kill the worker thread
                self._on_error(error)
            finally:
                with self._condition:
                    self._busy = False


def compute_threads(requested: int, cpu_count: int | None = None) -> int:
    """Return the torch threads for one network: requested, or 0 = half the cores (>= 1).

    A graph runs two networks (fusion, detection), each in its own worker thread: half the cores
    each lets fusion of one pair overlap detection of the one before without thread fights.
    """
    if requested > 0:
        return requested
    import os

    return max(1, (cpu_count or os.cpu_count() or 1) // 2)


def use_threads(count: int) -> int:
    """Set torch's intra-op threads for the calling thread (kept per thread); return the old."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    return previous


class RateMeter:
    """Events per second over a sliding window of the last few seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window_s = window_s
        self._times: deque[float] = deque(maxlen=1000)
        self._lock = threading.Lock()
        self.count = 0
        self.last_time: float | None = None

    def tick(self, now: float | None = None) -> None:
        """Record one event."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self.count += 1
            self.last_time = now

    def rate(self, now: float | None = None) -> float:
        """Return events per second over the window ending now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._times if now - t <= self._window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


class LatencyStats:
    """Percentiles of the most recent durations, in milliseconds."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one duration in seconds."""
        with self._lock:
            self._values.append(seconds * 1e3)

    def percentiles(self, *quantiles: float) -> list[float]:
        """Return the given percentiles (0-100) in ms; NaN before any sample."""
        with self._lock:
            values = np.asarray(self._values, np.float64)
        if values.size == 0:
            return [float('nan')] * len(quantiles)
        return [float(v) for v in np.percentile(values, quantiles)]


class Throttle:
    """Allow one message per key every period seconds (clear logs under floods of bad input)."""

    def __init__(self, period_s: float = 2.0) -> None:
        self._period_s = period_s
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        """Return whether a message for key may be logged now."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self._period_s:
            self._last[key] = now
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False


class ProblemLog:
    """Counted problems by kind, each with its last message and when it last happened.

    Counters never reset (what was dropped stays reported); only problems seen within a recent
    window make a status WARN, so a node returns to OK once good input flows again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.last_message: dict[str, str] = {}
        self._last_time: dict[str, float] = {}

    def add(self, kind: str, message: str, now: float | None = None) -> int:
        """Count one problem of a kind; return how many of that kind there have been."""
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.last_message[kind] = message
            self._last_time[kind] = time.monotonic() if now is None else now
            return self.counts[kind]

    def count(self, kind: str) -> int:
        """Return how many problems of a kind were counted."""
        return self.counts.get(kind, 0)

    def recent(self, window_s: float, now: float | None = None) -> dict[str, str]:
        """Return {kind: last message} for the kinds seen within the last window_s seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return {kind: self.last_message[kind] for kind, seen in self._last_time.items()
                    if now - seen <= window_s}


@contextmanager
def installed_signal_handlers(handlers: Mapping[int, Callable[..., Any]]) -> Iterator[None]:
    """Install signal handlers for the block and put the previous ones back after it."""
    # A program that runs a graph, a player or a recorder in-process (twice, or then goes on)
    # gets its own handlers back; left installed, SIGTERM stayed a KeyboardInterrupt in it.
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:   # None: set outside Python, cannot be put back
                signal.signal(number, handler)
