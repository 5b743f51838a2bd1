"""The frame pipeline: checks on arrival, lazy decoding, learned camera rate, fusion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ivf_ros.io.image_codec import encode_compressed, ImageFormatError
from ivf_ros.pipeline.frames import (
    arrived_frame,
    ArrivedFrame,
    FramePipeline,
    PairDecodeError,
    PipelineConfig,
)

MS = 1_000_000


def stamp(ns: int) -> SimpleNamespace:
    return SimpleNamespace(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def raw_message(ns: int, array: np.ndarray, encoding: str) -> SimpleNamespace:
    """Return an object with sensor_msgs/Image fields (as rclpy's and rosbags' have)."""
    height, width = array.shape[:2]
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp(ns), frame_id='cam'),
                           height=height, width=width, encoding=encoding, is_bigendian=0,
                           step=array.strides[0], data=array.tobytes())


class CountingFrame:
    """Arrived frames whose decoding is counted."""

    decoded = 0

    @classmethod
    def make(cls, ns: int, width: int = 8, height: int = 6) -> ArrivedFrame:
        def decode() -> tuple[np.ndarray, str]:
            cls.decoded += 1
            return np.zeros((height, width, 3), np.uint8), 'rgb8'
        return ArrivedFrame(ns, width, height, decode)


class FakeModel:
    device = 'cpu'

    def run(self, visible_rgb, infrared, with_enhanced=False):
        assert infrared.shape == visible_rgb.shape[:2]
        return SimpleNamespace(fused=visible_rgb, weights=np.zeros(infrared.shape, np.float32),
                               enhanced=None)


def test_config_comes_from_the_node_parameters() -> None:
    config = PipelineConfig.from_params({'slop': 0.05, 'queue_size': 3, 'model_path': 'x',
                                         'homography': [2.0, 0, 0, 0, 2.0, 0, 0, 0, 1.0]})
    assert (config.slop, config.queue_size) == (0.05, 3)
    assert config.homography == (2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0)


def test_arrival_refuses_negative_stamps_and_oversized_frames_before_decoding() -> None:
    grey = np.zeros((6, 8), np.uint8)
    message = raw_message(5 * MS, grey, 'mono8')
    message.header.stamp.sec = -1
    with pytest.raises(ImageFormatError, match='negative stamp'):
        arrived_frame(message, None)
    with pytest.raises(ImageFormatError, match='exceeds max_pixels'):
        arrived_frame(raw_message(5 * MS, grey, 'mono8'), max_pixels=47)
    fmt, data = encode_compressed(grey, 'mono8', 'png')
    compressed = SimpleNamespace(header=SimpleNamespace(stamp=stamp(5 * MS)), format=fmt,
                                 data=data)
    frame = arrived_frame(compressed, max_pixels=48)
    assert (frame.width, frame.height) == (8, 6)
    array, encoding = frame.decode()  # the PNG is decoded only now
    assert array.shape == (6, 8) and encoding == 'mono8'


def test_frames_that_never_pair_are_never_decoded() -> None:
    CountingFrame.decoded = 0
    pipeline = FramePipeline(PipelineConfig(slop=0.01), FakeModel())
    pairs = []
    for k in range(5):
        pairs += pipeline.add('visible', CountingFrame.make(k * 100 * MS))
        if k % 2 == 0:  # infrared only every other frame
            pairs += pipeline.add('infrared', CountingFrame.make(k * 100 * MS))
    pairs += pipeline.flush()
    assert CountingFrame.decoded == 0
    for pair in pairs:
        pipeline.decode(pair)
    assert len(pairs) == 3 and CountingFrame.decoded == 6  # 2 unpaired visible frames: never


def test_a_learned_camera_rate_releases_pairs_without_waiting_a_frame() -> None:
    pipeline = FramePipeline(PipelineConfig(slop=0.02), FakeModel())
    waited = []
    for k in range(12):  # 10 Hz, infrared 3 ms after visible
        base = 1_000 * MS + k * 100 * MS
        released = pipeline.add('visible', CountingFrame.make(base))
        released += pipeline.add('infrared', CountingFrame.make(base + 3 * MS))
        waited.append(not any(pair.visible_stamp_ns == base for pair in released))
    # Until the period is known each pair waits for the next frame; then none does.
    assert waited[:5] == [True] * 5 and not any(waited[7:]), waited
    assert pipeline.sync.min_interval_s == pytest.approx(0.05)
    given = FramePipeline(PipelineConfig(slop=0.02, camera_rate=30.0), FakeModel())
    assert given.sync.min_interval_s == pytest.approx(0.5 / 30)
    # A learnt rate is forgotten with the recording: the next bag may be faster, and a hint
    # above its real gap would release pairs before their nearest frame arrives.
    pipeline.flush(streams_ended=True)
    assert pipeline.sync.min_interval_s == 0.0
    given.flush(streams_ended=True)
    assert given.sync.min_interval_s == pytest.approx(0.5 / 30)     # the user's rate holds
    for k in range(12):
        base = 1_000 * MS + k * 100 * MS
        pipeline.add('visible', CountingFrame.make(base))
        pipeline.add('infrared', CountingFrame.make(base + 3 * MS))
    assert pipeline.sync.min_interval_s == pytest.approx(0.05)
    pipeline.add('visible', CountingFrame.make(0))           # stamps jump back: a new timeline
    assert pipeline.sync.stats.resets == 1 and pipeline.sync.min_interval_s == 0.0


def test_fuse_registers_the_infrared_and_names_a_frame_that_fails() -> None:
    pipeline = FramePipeline(PipelineConfig(slop=0.0), FakeModel())
    visible = np.full((12, 16, 3), 50, np.uint8)
    infrared = np.full((6, 8), 200, np.uint16)
    pairs = pipeline.arrive('visible', raw_message(0, visible, 'rgb8'))
    pairs += pipeline.arrive('infrared', raw_message(0, infrared, 'mono16'))
    fused = pipeline.fuse(pairs[0])
    assert fused.infrared_mono.shape == (12, 16) and fused.size_mismatch == ((6, 8), (12, 16))
    assert fused.model_s >= 0 and fused.result.fused.shape == (12, 16, 3)
    broken = ArrivedFrame(MS, 4, 4, lambda: (_ for _ in ()).throw(ImageFormatError('corrupt')))
    pairs = pipeline.add('visible', CountingFrame.make(MS)) + pipeline.add('infrared', broken)
    with pytest.raises(PairDecodeError, match='infrared frame dropped: corrupt') as error:
        pipeline.fuse(pairs[0])
    assert error.value.stream == 'infrared'


def test_a_new_timeline_starts_the_thermal_stretch_afresh() -> None:
    pipeline = FramePipeline(PipelineConfig(slop=0.02, camera_rate=10.0), FakeModel())
    warm = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000   # scene 1: 0..47000 counts
    cool = np.arange(48, dtype=np.uint16).reshape(6, 8) + 100    # scene 2: 100..147 counts
    visible = np.zeros((6, 8, 3), np.uint8)

    def pair_at(ns: int, infrared: np.ndarray) -> list:
        return (pipeline.arrive('visible', raw_message(ns, visible, 'rgb8'))
                + pipeline.arrive('infrared', raw_message(ns, infrared, 'mono16')))

    old = [pair for k in range(3) for pair in pair_at(10_000 * MS + k * 100 * MS, warm)]
    new = pair_at(0, cool)                            # stamps jump back: a bag looped
    assert pipeline.sync.stats.resets == 1 and len(old) == 3 and len(new) == 1
    for pair in old[:2]:
        pipeline.fuse(pair)
    smoothed = pipeline.thermal._range
    # A worker decodes the old timeline's last pair after the jump: still the old scene's range.
    pipeline.fuse(old[2])
    assert pipeline.thermal._range[1] == pytest.approx(smoothed[1], rel=0.01)
    # The new scene's first pair is stretched on its own, not with the warm scene's range.
    assert pipeline.fuse(new[0]).infrared_mono.max() >= 250
    assert pipeline.thermal._range[1] < 200
    pipeline.flush(streams_ended=True)                # a bag's end: the next play is a new scene
    again = pair_at(20_000 * MS, warm)                # later stamps, yet a new recording
    assert pipeline.fuse(again[0]).infrared_mono.max() >= 250
    assert pipeline.thermal._range[1] > 40_000


def test_a_pair_released_by_the_jump_itself_keeps_the_old_timeline() -> None:
    # Rate not given: each pair waits for the next frame, so the old scene's last pair comes
    # back from the very add() whose stamp jumps back, and is fused after the new pair.
    pipeline = FramePipeline(PipelineConfig(slop=0.02, camera_rate=0.0), FakeModel())
    warm = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000
    cool = np.arange(48, dtype=np.uint16).reshape(6, 8) + 100
    visible = np.zeros((6, 8, 3), np.uint8)
    old = []
    for k in range(3):
        stamp = 10_000 * MS + k * 100 * MS
        old += pipeline.arrive('visible', raw_message(stamp, visible, 'rgb8'))
        old += pipeline.arrive('infrared', raw_message(stamp + 5 * MS, warm, 'mono16'))
    released_by_jump = pipeline.arrive('visible', raw_message(0, visible, 'rgb8'))
    new = pipeline.arrive('infrared', raw_message(5 * MS, cool, 'mono16'))
    new += pipeline.flush()
    assert len(old) == 2 and len(released_by_jump) == 1 and len(new) == 1
    assert {pair.visible.timeline for pair in old + released_by_jump} == {0}
    assert new[0].visible.timeline == new[0].infrared.timeline == 1
    for pair in old:
        pipeline.fuse(pair)
    assert pipeline.fuse(new[0]).infrared_mono.max() >= 250     # fresh stretch for scene 2
    # The old scene's last pair, decoded after the new one, starts its own stretch again.
    assert pipeline.fuse(released_by_jump[0]).infrared_mono.max() >= 250
    assert pipeline.thermal._range[1] > 40_000


def test_a_negative_stamp_is_named_by_its_real_value() -> None:
    message = raw_message(0, np.zeros((6, 8), np.uint8), 'mono8')
    message.header.stamp.sec, message.header.stamp.nanosec = -1, 500_000_000   # -0.5 s
    with pytest.raises(ImageFormatError, match=r'negative stamp -0\.500000000 s'):
        arrived_frame(message, None)
