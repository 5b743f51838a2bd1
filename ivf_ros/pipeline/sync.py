"""
Approximate-time pairing of two image streams (visible, infrared) by header stamp.

A pure, two-stream simplification of message_filters' ApproximateTime policy (which is not
installable here); a node feeds it from its two subscription callbacks.

Exact semantics:

* Each stream keeps a queue of at most ``queue_size`` unmatched frames, sorted by stamp.
* A visible frame ``v`` and an infrared frame ``i`` are paired when all of these hold:

  1. ``|v - i| <= slop``;
  2. they are mutual nearest neighbours among the queued unmatched frames (``i`` is the
     infrared frame nearest to ``v`` and ``v`` the visible frame nearest to ``i``; on equal
     distance the older frame wins);
  3. the pair is final: assuming each stream arrives in stamp order and consecutive frames of
     a stream are at least ``min_interval_s`` apart (0 by default: no assumption), no frame
     still to come can be strictly nearer to ``v`` or to ``i``. With equal stamps this holds at
     once; otherwise the pair waits until the stream of its older frame has delivered a frame
     at least ``|v - i|`` after the newer one (usually its next frame: one frame of latency,
     as ApproximateTime waits for a message past its pivot). A ``min_interval_s`` hint (e.g.
     0.03 for cameras that never exceed 33 Hz) removes that wait when frames are that far
     apart. :meth:`flush` skips this condition (end of a bag).

  Ready pairs are emitted oldest first; every frame is used at most once.
* Emitting a pair drops every queued frame not newer than its members (counted in
  ``unmatched_visible`` / ``unmatched_infrared``): output stamps never go backwards (until a
  reset). A frame arriving older than the last pair of its stream is dropped (counted) too.
* A queue over ``queue_size`` after the arriving frame has been matched drops its oldest
  frames (counted in ``dropped_overflow``).
* Out-of-order arrival is tolerated: a late frame is inserted in stamp order and may still pair
  with any unmatched frame, though condition 3 may then have been judged too early.
* A stamp more than ``reset_jump_s`` (1 s) older than the newest stamp of its stream (a bag
  looping, a simulator restarting) resets: the old timeline has ended, so the pairs still
  waiting for a later frame are emitted first (as by :meth:`flush`; they come before any pair of
  the new timeline in the same returned list), then the other queued frames are dropped
  (counted as unmatched),
  ``resets`` is incremented, and pairing starts afresh from that frame. Until the other stream
  sends a frame of the new timeline, its frames stamped more than ``reset_jump_s`` after the
  newest frame of the stream that jumped are stale (still in flight from before the loop) and
  dropped (counted as unmatched); the first frame it sends within that window joins the new
  timeline. The window follows the jumped stream, so one stray old stamp (stamp 0, a stale
  frame) costs the frames queued then, never the streams after it. A shorter jump back (a bag
  of under ``reset_jump_s`` looping) resets the same way at the ``STALE_FRAMES_TO_RESET``-th
  frame in a row older than its stream's last pair; the frames before it are dropped (counted
  as unmatched), as a single late frame is.
* A frame arriving with the stamp of its stream's last paired frame is a duplicate: dropped
  (counted as unmatched and in ``repeated_stamps``); queued frames of a stamp that pairs are
  dropped with the frames older than it. So one camera frame never makes two pairs, and
  streams whose stamps never change (a driver leaving header.stamp at 0) pair once:
  ``repeated_stamps`` is how a node sees it.
* ``slop_s``, ``queue_size``, ``min_interval_s`` and ``reset_jump_s`` are properties settable
  at runtime (ValueError when invalid); a smaller queue size trims the queues at once (counted
  as overflow).
* Thread-safe: one lock guards the state, for multi-threaded executors.

Every frame is accounted for: received_visible + received_infrared = 2 * matched +
unmatched_visible + unmatched_infrared + dropped_overflow + pending frames of both streams.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
import math
import threading
from typing import Any, NamedTuple

_NS_PER_S = 1_000_000_000
# Frames in a row older than their stream's last pair that start a new timeline: one late frame
# is dropped, a run of them is a bag looping back by less than reset_jump_s (a short bag).
STALE_FRAMES_TO_RESET = 3


class MatchedPair(NamedTuple):
    """A visible and an infrared frame paired by stamp (the items are whatever was added)."""

    visible_stamp_ns: int
    infrared_stamp_ns: int
    visible: Any
    infrared: Any

    @property
    def skew_ns(self) -> int:
        """Return infrared minus visible stamp in nanoseconds."""
        return self.infrared_stamp_ns - self.visible_stamp_ns


@dataclass(frozen=True)
class SyncStats:
    """Counters since construction (a reset() does not clear them)."""

    matched: int = 0
    unmatched_visible: int = 0
    unmatched_infrared: int = 0
    dropped_overflow: int = 0
    resets: int = 0
    received_visible: int = 0
    received_infrared: int = 0
    # Of the unmatched: frames arriving with the stamp of their stream's last paired frame (a
    # republished frame, or a driver that leaves header.stamp at 0; duplicates queued before
    # their stamp paired are unmatched only).
    repeated_stamps: int = 0


class _Stream:
    """Sorted queue of unmatched frames of one stream and its bookkeeping."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.items: list[Any] = []
        self.newest_ns: int | None = None  # newest stamp ever received (since the last reset)
        self.last_paired_ns: int | None = None
        self.stale_run = 0      # frames in a row older than the last pair

    def clear(self) -> int:
        dropped = len(self.stamps)
        self.stamps.clear()
        self.items.clear()
        self.newest_ns = None
        self.last_paired_ns = None
        self.stale_run = 0
        return dropped

    def insert(self, stamp_ns: int, item: Any) -> None:
        # Right of equal stamps: among duplicates the earlier arrival stays the older frame.
        index = bisect.bisect_right(self.stamps, stamp_ns)
        self.stamps.insert(index, stamp_ns)
        self.items.insert(index, item)

    def pop(self, index: int) -> tuple[int, Any]:
        return self.stamps.pop(index), self.items.pop(index)

    def drop_oldest(self, count: int) -> int:
        del self.stamps[:count]
        del self.items[:count]
        return count

    def drop_up_to(self, stamp_ns: int) -> int:
        # Equal stamps too: a duplicate of a frame just paired must not make a second pair.
        count = bisect.bisect_right(self.stamps, stamp_ns)
        del self.stamps[:count]
        del self.items[:count]
        return count

    def nearest(self, stamp_ns: int) -> int | None:
        """Return the index of the queued frame nearest to stamp_ns (older on a tie)."""
        if not self.stamps:
            return None
        right = bisect.bisect_left(self.stamps, stamp_ns)
        if right == 0:
            return 0
        if right == len(self.stamps):
            return right - 1
        left = right - 1
        # Older wins ties: `left` is older than `right`.
        if stamp_ns - self.stamps[left] <= self.stamps[right] - stamp_ns:
            return left
        return right


class PairSynchronizer:
    """Two-stream approximate-time synchroniser (semantics in the module docstring)."""

    def __init__(self, slop_s: float = 0.02, queue_size: int = 10, *,
                 reset_jump_s: float = 1.0, min_interval_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._visible = _Stream()
        self._infrared = _Stream()
        self._stats = SyncStats()
        # The stream whose backward jump reset the pairing, until the other stream joins its
        # new timeline (None: no automatic reset waiting for the other stream).
        self._jumped: _Stream | None = None
        self._slop_ns = 0
        self._queue_size = 1
        self.slop_s = slop_s
        self.queue_size = queue_size
        self._reset_jump_ns = 0
        self._min_interval_ns = 0
        self.reset_jump_s = reset_jump_s
        self.min_interval_s = min_interval_s

    @staticmethod
    def _seconds_to_ns(name: str, seconds: float) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
                math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f'{name} must be a finite number >= 0 seconds, got {seconds!r}')
        return round(seconds * _NS_PER_S)

    @property
    def slop_s(self) -> float:
        """Return the largest stamp difference (seconds) a pair may have."""
        return self._slop_ns / _NS_PER_S

    @slop_s.setter
    def slop_s(self, value: float) -> None:
        slop_ns = self._seconds_to_ns('slop_s', value)
        with self._lock:
            self._slop_ns = slop_ns

    @property
    def queue_size(self) -> int:
        """Return the most unmatched frames kept per stream."""
        return self._queue_size

    @queue_size.setter
    def queue_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'queue_size must be an integer >= 1, got {value!r}')
        with self._lock:
            self._queue_size = value
            self._count(dropped_overflow=sum(
                stream.drop_oldest(max(0, len(stream.stamps) - value))
                for stream in (self._visible, self._infrared)))

    @property
    def min_interval_s(self) -> float:
        """Return the assumed least time between two frames of one stream (0: no assumption)."""
        return self._min_interval_ns / _NS_PER_S

    @min_interval_s.setter
    def min_interval_s(self, value: float) -> None:
        interval_ns = self._seconds_to_ns('min_interval_s', value)
        with self._lock:
            self._min_interval_ns = interval_ns

    @property
    def reset_jump_s(self) -> float:
        """Return how far back (seconds) a stamp must jump to reset the synchroniser."""
        return self._reset_jump_ns / _NS_PER_S

    @reset_jump_s.setter
    def reset_jump_s(self, value: float) -> None:
        jump_ns = self._seconds_to_ns('reset_jump_s', value)
        with self._lock:
            self._reset_jump_ns = jump_ns

    @property
    def stats(self) -> SyncStats:
        """Return a snapshot of the counters."""
        return self._stats

    @property
    def pending(self) -> tuple[int, int]:
        """Return the numbers of queued unmatched (visible, infrared) frames."""
        with self._lock:
            return len(self._visible.stamps), len(self._infrared.stamps)

    def add_visible(self, stamp_ns: int, item: Any) -> list[MatchedPair]:
        """Queue a visible frame; return the pairs that became ready (oldest first)."""
        return self._add(self._visible, stamp_ns, item)

    def add_infrared(self, stamp_ns: int, item: Any) -> list[MatchedPair]:
        """Queue an infrared frame; return the pairs that became ready (oldest first)."""
        return self._add(self._infrared, stamp_ns, item)

    def reset(self) -> None:
        """Drop every queued frame (counted as unmatched) and forget stream history."""
        with self._lock:
            self._reset_locked()
            self._jumped = None

    def forget_history(self) -> None:
        """Start a new timeline at the next frame, whatever its stamp (queues must be empty).

        For streams that have ended (a bag played to its end, then played again): the next
        frames are not 'older than the last pair', they are a new recording.
        """
        with self._lock:
            for stream in (self._visible, self._infrared):
                stream.newest_ns = stream.last_paired_ns = None
            self._jumped = None

    def flush(self) -> list[MatchedPair]:
        """Pair what can still pair without waiting for later frames, drop the rest (counted)."""
        with self._lock:
            pairs = self._match(final_only=False)
            self._count(unmatched_visible=len(self._visible.stamps),
                        unmatched_infrared=len(self._infrared.stamps))
            for stream in (self._visible, self._infrared):
                last_paired = stream.last_paired_ns
                newest = stream.newest_ns
                stream.clear()
                # Keep the history: a frame that arrives after a flush is judged as before.
                stream.last_paired_ns, stream.newest_ns = last_paired, newest
            return pairs

    def _count(self, **increments: int) -> None:
        stats = self._stats
        self._stats = replace(stats, **{
            name: getattr(stats, name) + value for name, value in increments.items()})

    def _reset_locked(self) -> None:
        self._count(unmatched_visible=self._visible.clear(),
                    unmatched_infrared=self._infrared.clear(), resets=1)

    def _add(self, stream: _Stream, stamp_ns: int, item: Any) -> list[MatchedPair]:
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int):
            raise ValueError(f'stamp_ns must be an integer (nanoseconds), got {stamp_ns!r}')
        is_visible = stream is self._visible
        unmatched_key = 'unmatched_visible' if is_visible else 'unmatched_infrared'
        with self._lock:
            self._count(**{'received_visible' if is_visible else 'received_infrared': 1})
            before_reset: list[MatchedPair] = []
            stale = stream.last_paired_ns is not None and stamp_ns < stream.last_paired_ns
            stream.stale_run = stream.stale_run + 1 if stale else 0
            if stream.newest_ns is not None and (
                    stamp_ns < stream.newest_ns - self._reset_jump_ns
                    or stream.stale_run >= STALE_FRAMES_TO_RESET):
                # The old timeline has ended: its pairs still waiting for a later frame are
                # final now (as at flush()); emit them before dropping what cannot pair.
                before_reset = self._match(final_only=False)
                self._reset_locked()
                self._jumped = stream
            elif stream.newest_ns is None and self._jumped is not None:
                jumped_newest = self._jumped.newest_ns
                if jumped_newest is not None and stamp_ns > jumped_newest + self._reset_jump_ns:
                    # A frame of the old timeline still in flight after the other stream jumped
                    # back: pairing it would trigger a second reset.
                    self._count(**{unmatched_key: 1})
                    return []
                self._jumped = None  # this stream has joined the new timeline
            if stream.last_paired_ns is not None and stamp_ns <= stream.last_paired_ns:
                # Older: pairing it would emit a pair older than one already emitted. Equal: a
                # duplicate of a frame already paired (it would make a second, identical pair).
                repeated = {} if stale else {'repeated_stamps': 1}
                self._count(**{unmatched_key: 1}, **repeated)
                return []
            stream.newest_ns = stamp_ns if stream.newest_ns is None else max(
                stream.newest_ns, stamp_ns)
            stream.insert(stamp_ns, item)
            # Match first: the arriving frame may be the one that makes the oldest queued frame's
            # pair final, and trimming first would drop that frame (queue_size 1 paired nothing).
            pairs = before_reset + self._match(final_only=True)
            if len(stream.stamps) > self._queue_size:
                self._count(dropped_overflow=stream.drop_oldest(
                    len(stream.stamps) - self._queue_size))
            return pairs

    def _is_final(self, stamp_ns: int, distance_ns: int, other: _Stream) -> bool:
        """Return whether no future frame of `other` can be strictly nearer than distance_ns."""
        if other.newest_ns is None:
            return False
        # In order, future frames of `other` come at >= newest + min_interval; one could be
        # strictly nearer only inside (stamp - distance, stamp + distance).
        return other.newest_ns + self._min_interval_ns >= stamp_ns + distance_ns

    def _ready_pair(self, final_only: bool) -> tuple[int, int] | None:
        """Return (visible index, infrared index) of the oldest ready pair, if any."""
        visible, infrared = self._visible, self._infrared
        for v_index, v_stamp in enumerate(visible.stamps):
            i_index = infrared.nearest(v_stamp)
            if i_index is None:
                return None
            i_stamp = infrared.stamps[i_index]
            distance = abs(v_stamp - i_stamp)
            if distance > self._slop_ns or visible.nearest(i_stamp) != v_index:
                continue
            if not final_only or (self._is_final(v_stamp, distance, infrared)
                                  and self._is_final(i_stamp, distance, visible)):
                return v_index, i_index
        return None

    def _match(self, final_only: bool) -> list[MatchedPair]:
        pairs: list[MatchedPair] = []
        while (ready := self._ready_pair(final_only)) is not None:
            v_stamp, v_item = self._visible.pop(ready[0])
            i_stamp, i_item = self._infrared.pop(ready[1])
            pairs.append(MatchedPair(v_stamp, i_stamp, v_item, i_item))
            self._visible.last_paired_ns = v_stamp
            self._infrared.last_paired_ns = i_stamp
            self._count(matched=1,
                        unmatched_visible=self._visible.drop_up_to(v_stamp),
                        unmatched_infrared=self._infrared.drop_up_to(i_stamp))
        return pairs
