"""Tests of ivf_ros.pipeline.sync.PairSynchronizer (approximate-time pairing of two streams)."""

from __future__ import annotations

import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from ivf_ros.pipeline.sync import (
    MatchedPair,
    PairSynchronizer,
    STALE_FRAMES_TO_RESET,
    SyncStats,
)

MS = 1_000_000
S = 1_000_000_000


def feed(sync: PairSynchronizer, events: list[tuple[str, int, object]]) -> list[MatchedPair]:
    """Add ('v'|'i', stamp_ns, item) events in order; return every pair emitted."""
    pairs: list[MatchedPair] = []
    for stream, stamp, item in events:
        add = sync.add_visible if stream == 'v' else sync.add_infrared
        pairs += add(stamp, item)
    return pairs


def assert_accounted(sync: PairSynchronizer) -> None:
    """Assert that every received frame is matched, dropped (counted) or still pending."""
    stats = sync.stats
    pending_visible, pending_infrared = sync.pending
    received = stats.received_visible + stats.received_infrared
    assert received == (2 * stats.matched + stats.unmatched_visible + stats.unmatched_infrared
                        + stats.dropped_overflow + pending_visible + pending_infrared)


def test_in_order_streams_pair_after_one_frame_of_the_other_stream() -> None:
    sync = PairSynchronizer(slop_s=0.02, queue_size=10)
    assert sync.add_visible(0, 'v0') == []
    # i0 is 5 ms after v0: a visible frame at 2..5 ms would be nearer to i0, so wait for one.
    assert sync.add_infrared(5 * MS, 'i0') == []
    assert sync.add_visible(33 * MS, 'v1') == [MatchedPair(0, 5 * MS, 'v0', 'i0')]
    assert sync.add_infrared(38 * MS, 'i1') == []
    assert sync.stats == SyncStats(matched=1, received_visible=2, received_infrared=2)
    assert sync.flush() == [MatchedPair(33 * MS, 38 * MS, 'v1', 'i1')]
    assert sync.pending == (0, 0)


def test_equal_stamps_pair_at_once() -> None:
    sync = PairSynchronizer()
    sync.add_visible(10 * MS, 'v')
    assert sync.add_infrared(10 * MS, 'i') == [MatchedPair(10 * MS, 10 * MS, 'v', 'i')]
    assert sync.add_infrared(10 * MS, 'i2') == []


def test_min_interval_lets_pairs_out_without_waiting() -> None:
    # Cameras at 30 Hz never send two frames within 30 ms: the pair is final at once.
    sync = PairSynchronizer(slop_s=0.02, min_interval_s=0.03)
    for k in range(3):
        assert sync.add_visible(k * 33 * MS, f'v{k}') == []
        pairs = sync.add_infrared(k * 33 * MS + 5 * MS, f'i{k}')
        assert [(p.visible, p.infrared) for p in pairs] == [(f'v{k}', f'i{k}')]


def test_cameras_at_different_rates_pair_each_slow_frame_with_its_nearest() -> None:
    # A 30 Hz colour camera and a 9 Hz thermal camera (a common export-limited rate).
    sync = PairSynchronizer(slop_s=0.02, queue_size=10)
    visible = [('v', k * S // 30, k) for k in range(90)]
    infrared = [('i', k * S // 9 + 3 * MS, k) for k in range(27)]
    events = sorted(visible + infrared, key=lambda event: event[1])
    pairs = feed(sync, events) + sync.flush()
    assert [p.infrared for p in pairs] == list(range(27))
    for pair in pairs:
        nearest = min(range(90), key=lambda k: abs(k * S // 30 - pair.infrared_stamp_ns))
        assert pair.visible == nearest
    assert sync.stats.dropped_overflow == 0
    assert sync.stats.unmatched_visible + sync.pending[0] == 90 - 27
    assert_accounted(sync)


def test_clocks_further_apart_than_slop_show_up_in_the_counters() -> None:
    sync = PairSynchronizer(slop_s=0.01, queue_size=5)
    # The infrared driver stamps ~0.5 s late, half a frame off: nothing pairs, all counted.
    events = sorted([('v', k * 33 * MS, k) for k in range(30)]
                    + [('i', k * 33 * MS + 516 * MS, k) for k in range(30)],
                    key=lambda event: event[1])
    assert feed(sync, events) == []
    assert sync.stats.matched == 0 and sync.stats.dropped_overflow == 50
    assert_accounted(sync)


def test_nearest_partner_wins_and_frames_are_used_once() -> None:
    sync = PairSynchronizer(slop_s=0.02)
    pairs = feed(sync, [('v', 0, 'v0'), ('v', 10 * MS, 'v1'), ('i', 12 * MS, 'i0'),
                        ('v', 40 * MS, 'v2'), ('i', 45 * MS, 'i1'), ('v', 80 * MS, 'v3')])
    # i0 is within slop of v0 and v1 but v1 is nearer; v0 is passed and counted.
    assert [(p.visible, p.infrared) for p in pairs] == [('v1', 'i0'), ('v2', 'i1')]
    assert sync.stats.unmatched_visible == 1 and sync.stats.matched == 2
    assert [p.skew_ns for p in pairs] == [2 * MS, 5 * MS]
    assert_accounted(sync)


def test_frames_further_apart_than_slop_never_pair() -> None:
    sync = PairSynchronizer(slop_s=0.005)
    pairs = feed(sync, [('v', 0, 'v0'), ('i', 6 * MS, 'i0'), ('v', 33 * MS, 'v1'),
                        ('i', 37 * MS, 'i1'), ('v', 66 * MS, 'v2')])
    assert [(p.visible, p.infrared) for p in pairs] == [('v1', 'i1')]
    assert (sync.stats.unmatched_visible, sync.stats.unmatched_infrared) == (1, 1)
    sync.slop_s = 0.0
    assert sync.slop_s == 0.0
    assert feed(sync, [('i', 66 * MS + 1, 'i2'), ('v', 99 * MS, 'v3')]) == []


def test_out_of_order_arrival_is_tolerated() -> None:
    sync = PairSynchronizer(slop_s=0.01)
    # Visible frames arrive 2, 0, 1 (a reordering transport); infrared in order.
    pairs = feed(sync, [('v', 66 * MS, 'v2'), ('v', 0, 'v0'), ('i', 1 * MS, 'i0'),
                        ('v', 33 * MS, 'v1'), ('i', 34 * MS, 'i1'), ('i', 67 * MS, 'i2')])
    pairs += sync.flush()
    assert [(p.visible, p.infrared) for p in pairs] == [('v0', 'i0'), ('v1', 'i1'), ('v2', 'i2')]
    assert sync.stats.resets == 0


def test_a_frame_older_than_the_last_pair_is_dropped_and_counted() -> None:
    sync = PairSynchronizer(slop_s=0.01)
    feed(sync, [('v', 100 * MS, 'v'), ('i', 100 * MS, 'i')])
    assert sync.add_visible(50 * MS, 'late') == []  # 50 ms back: out of order, not a loop
    assert sync.stats.unmatched_visible == 1 and sync.stats.resets == 0
    assert sync.pending == (0, 0)
    assert_accounted(sync)


def test_queue_overflow_drops_the_oldest_and_counts_it() -> None:
    sync = PairSynchronizer(slop_s=0.01, queue_size=3)
    feed(sync, [('v', k * 33 * MS, f'v{k}') for k in range(5)])
    assert sync.stats.dropped_overflow == 2 and sync.pending == (3, 0)
    pairs = sync.add_infrared(66 * MS, 'i')
    assert [(p.visible, p.infrared) for p in pairs] == [('v2', 'i')]
    # Shrinking the queue at runtime trims it at once.
    sync.queue_size = 1
    assert sync.queue_size == 1 and sync.pending == (1, 0)
    assert sync.stats.dropped_overflow == 3
    assert_accounted(sync)


def test_backward_jump_as_a_looping_bag_resets() -> None:
    sync = PairSynchronizer(slop_s=0.01)
    events = []
    for k in range(40):
        events += [('v', k * 33 * MS, ('v', k)), ('i', k * 33 * MS + 2 * MS, ('i', k))]
    first_loop = feed(sync, events)
    assert len(first_loop) == 39 and sync.pending == (1, 1)
    # The bag starts over: visible jumps back first, which ends the old timeline and so emits
    # its last pair; an infrared frame of the old timeline is still in flight, then infrared
    # jumps back too.
    second = feed(sync, [('v', 0, ('v', 0)), ('i', 39 * 33 * MS + 5 * MS, 'stale'),
                         ('i', 2 * MS, ('i', 0)), ('v', 33 * MS, ('v', 1))])
    assert second == [MatchedPair(39 * 33 * MS, 39 * 33 * MS + 2 * MS, ('v', 39), ('i', 39)),
                      MatchedPair(0, 2 * MS, ('v', 0), ('i', 0))]
    stats = sync.stats
    assert stats.resets == 1
    # Only the stale infrared frame is counted.
    assert (stats.unmatched_visible, stats.unmatched_infrared) == (0, 1)
    assert_accounted(sync)


def in_step(start_ns: int, count: int, period_ns: int = 100 * MS) -> list[tuple[str, int, str]]:
    """Return both streams' frames of a 10 Hz rig in step, visible first."""
    events = []
    for k in range(count):
        stamp = start_ns + k * period_ns
        events += [('v', stamp, f'v{stamp}'), ('i', stamp, f'i{stamp}')]
    return events


def test_one_stray_old_stamp_costs_a_reset_not_the_streams_after_it() -> None:
    sync = PairSynchronizer(slop_s=0.02)
    before = feed(sync, in_step(100 * S, 10))
    # A stamp-0 frame (an unset clock, a camera restart): more than 1 s back, so it resets.
    feed(sync, [('v', 0, 'stray')])
    after = feed(sync, in_step(101 * S, 10))
    assert sync.stats.resets == 1
    assert len(before) == 10 and len(after) == 10, after
    assert_accounted(sync)


def test_a_loop_whose_infrared_starts_later_than_the_visible_pairs_again() -> None:
    sync = PairSynchronizer(slop_s=0.02)
    # Each loop of the bag: 2 s of visible alone, then both cameras.
    loop = [('v', 10 * S + k * 100 * MS, f'v{k}') for k in range(20)] + in_step(12 * S, 20)
    first = feed(sync, loop)
    second = feed(sync, loop)  # the bag starts over
    assert len(first) == 20 and len(second) == 20, (len(first), len(second))
    assert sync.stats.resets == 1


def test_a_duplicated_frame_makes_no_second_pair() -> None:
    sync = PairSynchronizer(slop_s=0.02)
    # A driver republishing its last frame: same stamps as the pair just emitted.
    last = S + 200 * MS
    pairs = feed(sync, in_step(S, 3) + [('v', last, 'again'), ('i', last, 'again')]
                 + in_step(4 * S, 2))
    stamps = [pair.visible_stamp_ns for pair in pairs]
    assert len(stamps) == len(set(stamps)), stamps
    assert_accounted(sync)


def test_manual_reset_counts_what_it_drops() -> None:
    sync = PairSynchronizer()
    feed(sync, [('v', 0, 'a'), ('v', 40 * MS, 'b'), ('i', 100 * MS, 'c')])
    sync.reset()
    assert sync.pending == (0, 0)
    assert sync.stats.resets == 1
    assert sync.stats.unmatched_visible == 2 and sync.stats.unmatched_infrared == 1
    # Forgotten history: earlier stamps are welcome again.
    feed(sync, [('v', 0, 'a'), ('i', 0, 'b')])
    assert sync.stats.matched == 1


def test_flush_pairs_what_it_can_and_counts_the_rest() -> None:
    sync = PairSynchronizer(slop_s=0.01)
    # i0 waits for a later visible frame to be sure; the stream ends instead (end of a bag).
    assert feed(sync, [('v', 0, 'v0'), ('i', 3 * MS, 'i0'), ('i', 50 * MS, 'i1')]) == []
    pairs = sync.flush()
    assert [(p.visible, p.infrared) for p in pairs] == [('v0', 'i0')]
    assert sync.stats.unmatched_infrared == 1 and sync.pending == (0, 0)
    assert_accounted(sync)


@pytest.mark.parametrize('name, value', [
    ('slop_s', -0.001), ('slop_s', float('nan')), ('slop_s', float('inf')), ('slop_s', True),
    ('slop_s', '0.1'), ('queue_size', 0), ('queue_size', -3), ('queue_size', 2.0),
    ('queue_size', True), ('queue_size', None), ('min_interval_s', -0.01),
    ('min_interval_s', float('nan')), ('reset_jump_s', -1.0), ('reset_jump_s', None),
])
def test_invalid_settings_raise_value_error(name: str, value: object) -> None:
    sync = PairSynchronizer()
    with pytest.raises(ValueError, match=name):
        setattr(sync, name, value)
    with pytest.raises(ValueError, match=name):
        PairSynchronizer(**{name: value})
    assert (sync.slop_s, sync.queue_size, sync.min_interval_s, sync.reset_jump_s) == (
        0.02, 10, 0.0, 1.0)


def test_settings_change_at_runtime() -> None:
    sync = PairSynchronizer()
    sync.slop_s, sync.queue_size, sync.min_interval_s, sync.reset_jump_s = 0.05, 3, 0.03, 5.0
    assert (sync.slop_s, sync.queue_size, sync.min_interval_s, sync.reset_jump_s) == (
        0.05, 3, 0.03, 5.0)
    # A 2 s jump back is now within the tolerated disorder: no reset.
    feed(sync, [('v', 10 * S, 'a'), ('v', 8 * S, 'b')])
    assert sync.stats.resets == 0


def test_invalid_stamps() -> None:
    with pytest.raises(ValueError, match='stamp_ns must be an integer'):
        PairSynchronizer().add_visible(0.5, 'x')


def test_concurrent_callbacks_keep_the_books_balanced() -> None:
    sync = PairSynchronizer(slop_s=0.002, queue_size=5)
    pairs: list[MatchedPair] = []
    lock = threading.Lock()

    def publish(stream: str, offset_ns: int) -> None:
        for k in range(400):
            add = sync.add_visible if stream == 'v' else sync.add_infrared
            out = add(k * 10 * MS + offset_ns, (stream, k))
            with lock:
                pairs.extend(out)

    threads = [threading.Thread(target=publish, args=('v', 0)),
               threading.Thread(target=publish, args=('i', MS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    used = [p.visible for p in pairs] + [p.infrared for p in pairs]
    assert len(used) == len(set(used))
    assert all(abs(p.skew_ns) <= 2 * MS for p in pairs)
    assert_accounted(sync)


# Property 1, for ANY arrival (arbitrary order, duplicates, ties, loops back in time, queue
# overflow, a wrong min_interval hint): a pair is never further apart than slop, a frame is
# never used twice, items keep their own stamps, output stamps never go backwards between
# resets, and every frame is accounted for.
# One integer per event keeps Hypothesis' generation cheap (most of these tests' time):
# even/odd -> visible/infrared; stamps 0..60 ms (ties, near misses) or a few 0.7 s steps
# (jumps forwards and more than 1 s back: loops).
_STAMPS = [k * MS for k in range(61)] + [k * 700 * MS for k in range(1, 5)]
events_strategy = st.lists(st.integers(0, 2 * len(_STAMPS) - 1).map(
    lambda code: ('vi'[code % 2], _STAMPS[code // 2])), max_size=40)


@settings(max_examples=500, deadline=None)
@given(events=events_strategy, slop_ms=st.integers(0, 15), queue_size=st.integers(1, 6),
       min_interval_ms=st.sampled_from([0, 0, 5]), flush=st.booleans())
def test_property_never_pairs_beyond_slop_nor_reuses_a_frame(
        events: list[tuple[str, int]], slop_ms: int, queue_size: int, min_interval_ms: int,
        flush: bool) -> None:
    sync = PairSynchronizer(slop_s=slop_ms / 1000, queue_size=queue_size,
                            min_interval_s=min_interval_ms / 1000)
    stamps = {}
    pairs: list[MatchedPair] = []
    timelines: list[int] = []  # resets so far when each pair came out
    for index, (stream, stamp) in enumerate(events):
        stamps[index] = stamp
        add = sync.add_visible if stream == 'v' else sync.add_infrared
        resets_before = sync.stats.resets
        out = add(stamp, (stream, index))
        pairs += out
        # A resetting call returns only the old timeline's last pairs: the new timeline holds
        # one frame then, which cannot pair yet.
        timelines += [resets_before] * len(out)
    if flush:
        out = sync.flush()
        pairs += out
        timelines += [sync.stats.resets] * len(out)
    for earlier, later, same in zip(pairs, pairs[1:], (
            a == b for a, b in zip(timelines, timelines[1:], strict=False)), strict=False):
        if same:  # output stamps never go backwards within one timeline
            assert later.visible_stamp_ns >= earlier.visible_stamp_ns
            assert later.infrared_stamp_ns >= earlier.infrared_stamp_ns
    used = set()
    for pair in pairs:
        assert abs(pair.visible_stamp_ns - pair.infrared_stamp_ns) <= slop_ms * MS
        assert pair.visible[0] == 'v' and pair.infrared[0] == 'i'
        assert stamps[pair.visible[1]] == pair.visible_stamp_ns
        assert stamps[pair.infrared[1]] == pair.infrared_stamp_ns
        assert pair.visible not in used and pair.infrared not in used
        used |= {pair.visible, pair.infrared}
    assert sync.stats.matched == len(pairs)
    assert_accounted(sync)


# Property 2, completeness. Precondition (built by the generator below):
# * each stream arrives in stamp order (the interleaving of the two streams is arbitrary);
# * partners are unambiguous: time is cut into slots 3 * slop apart, each slot holds at most
#   one frame per stream within +-slop/2 of its centre, so the only frame within slop of a frame
#   is the other stream's frame in the same slot, if any;
# * queue_size is at least the number of frames of a stream (no overflow), and the run ends
#   with flush() (the last pair cannot be known final without a later frame).
# Claim: exactly the partner pairs are emitted, all but the last one without flush(); every
# other frame is counted as unmatched.
_SLOT_KINDS = ('both', 'both', 'visible', 'infrared', 'none')
# One integer per slot: kind, visible offset and infrared offset (-5..5 ms each).
slot_strategy = st.integers(0, len(_SLOT_KINDS) * 121 - 1).map(
    lambda code: (_SLOT_KINDS[code // 121], code % 121 // 11 - 5, code % 11 - 5))


@settings(max_examples=500, deadline=None)
@given(slots=st.lists(slot_strategy, max_size=25), merge_seed=st.integers(0, 2**32 - 1),
       min_interval=st.booleans())
def test_property_pairs_every_unambiguous_partner_when_streams_are_in_order(
        slots: list[tuple[str, int, int]], merge_seed: int, min_interval: bool) -> None:
    merge = random.Random(merge_seed)
    slop = 10 * MS  # offsets of +-5 ms: partners within one slot are <= slop apart
    visible, infrared, expected = [], [], []
    for index, (kind, v_offset, i_offset) in enumerate(slots):
        centre = 5 * S + index * 3 * slop
        if kind in ('both', 'visible'):
            visible.append(('v', centre + v_offset * MS, ('v', index)))
        if kind in ('both', 'infrared'):
            infrared.append(('i', centre + i_offset * MS, ('i', index)))
        if kind == 'both':
            expected.append((('v', index), ('i', index)))
    # A random interleaving that keeps each stream in order.
    events = []
    while visible or infrared:
        source = visible if (visible and (not infrared or merge.random() < 0.5)) else infrared
        events.append(source.pop(0))
    # Frames of a stream are >= 2 * slop apart, a valid lower bound to assume.
    sync = PairSynchronizer(slop_s=slop / S, queue_size=max(1, len(slots)),
                            min_interval_s=(2 * slop / S) if min_interval else 0.0)
    live = feed(sync, events)
    flushed = sync.flush()
    pairs = live + flushed
    assert [(p.visible, p.infrared) for p in pairs] == expected
    # Timely too: a later slot's frame makes every earlier pair final, so only the last pair
    # can still wait at the end of the streams.
    assert len(flushed) <= 1
    stats = sync.stats
    assert stats.dropped_overflow == 0 and stats.resets == 0
    assert stats.unmatched_visible == sum(kind == 'visible' for kind, _, _ in slots)
    assert stats.unmatched_infrared == sum(kind == 'infrared' for kind, _, _ in slots)


def test_after_forget_history_a_replay_of_a_short_bag_pairs_again() -> None:
    sync = PairSynchronizer(slop_s=0.02)
    short = in_step(S, 4)  # 0.3 s: a replay jumps back less than reset_jump_s
    assert len(feed(sync, short)) == 4
    sync.flush()
    sync.forget_history()
    assert len(feed(sync, short)) == 4 and sync.stats.resets == 0
    assert_accounted(sync)


def test_a_short_bag_looping_without_a_pause_pairs_on_every_pass() -> None:
    # `ros2 bag play --loop` of a 0.5 s bag: each pass jumps back by less than reset_jump_s.
    # One frame older than the last pair is a late frame (dropped); a run of them is a new
    # timeline, which resets at the STALE_FRAMES_TO_RESET-th frame of the run.
    sync = PairSynchronizer(slop_s=0.02)
    loop = in_step(S, 15, period_ns=33 * MS)
    matched = []
    for _ in range(3):
        feed(sync, loop)
        matched.append(sync.stats.matched)
    per_pass = [now - before for before, now in zip([0, *matched[:-1]], matched, strict=True)]
    lost = STALE_FRAMES_TO_RESET - 1            # frames of each stream before the reset
    assert per_pass == [15, 15 - lost, 15 - lost]   # equal stamps: every pair final at once
    assert sync.stats.resets == 2
    assert_accounted(sync)
    # A single late frame is still dropped without a reset.
    sync = PairSynchronizer(slop_s=0.02)
    feed(sync, in_step(S, 5))
    assert feed(sync, [('v', S + 50 * MS, 'late')]) == []
    assert sync.stats.resets == 0 and sync.stats.unmatched_visible == 1


def test_a_queue_of_one_still_pairs_streams_a_few_ms_apart() -> None:
    # The arriving frame that makes a pair final is matched before the queue is trimmed: the
    # trim used to drop the waiting member first, so queue_size 1 paired nothing.
    sync = PairSynchronizer(slop_s=0.02, queue_size=1)
    events = []
    for k in range(30):
        stamp = S + k * 33 * MS
        events += [('v', stamp, k), ('i', stamp + 5 * MS, k)]
    pairs = feed(sync, events)
    assert len(pairs) == 29 and all(pair.visible == pair.infrared for pair in pairs)
    assert sync.stats.dropped_overflow == 0
    assert_accounted(sync)


def test_a_duplicate_queued_before_its_partner_arrives_makes_no_second_pair() -> None:
    sync = PairSynchronizer(slop_s=0.02)
    events = [('v', 100 * MS, 'v100a'), ('v', 100 * MS, 'v100b'), ('i', 100 * MS, 'i100'),
              ('i', 116 * MS, 'i116'), ('v', 133 * MS, 'v133'), ('i', 150 * MS, 'i150'),
              ('v', 166 * MS, 'v166'), ('i', 183 * MS, 'i183')]
    pairs = feed(sync, events)
    visible_stamps = [pair.visible_stamp_ns for pair in pairs]
    assert len(visible_stamps) == len(set(visible_stamps))
    assert pairs[0].visible == 'v100a'
    assert_accounted(sync)


def test_streams_that_never_change_their_stamp_pair_once_and_are_counted() -> None:
    sync = PairSynchronizer(slop_s=0.02)
    pairs = feed(sync, [(stream, 0, k) for k in range(20) for stream in ('v', 'i')])
    assert len(pairs) == 1
    assert sync.stats.repeated_stamps == 2 * 19      # every frame after the first pair
    assert_accounted(sync)
