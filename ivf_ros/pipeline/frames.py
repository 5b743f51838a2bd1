"""
The frame pipeline of ivf_ros: checks on arrival, pairing, lazy decoding, registration, fusion.

One implementation behind fusion_node (and so ``ivf-graph`` and ``ros2 launch``) and
``ivf-bag process``, configured from the same parameters (the fusion_node section of the YAML):

1. :meth:`FramePipeline.add` takes a frame as it arrived (:class:`ArrivedFrame`): its stamp and
   size are checked at once (a negative stamp, a frame over ``max_pixels`` are rejected before
   any decoding), then the synchroniser pairs it by stamp. Decoding into display pixels (the
   colour conversion, the thermal stretch, a JPEG decode) waits until the frame has a partner:
   frames that never pair cost nothing.
2. :meth:`FramePipeline.fuse` decodes a pair, registers the infrared onto the visible frame and
   runs the fusion network.

The camera rates are learned from the stamps (or the faster one given as ``camera_rate``): the
synchroniser then releases a pair as soon as no later frame can be nearer, instead of waiting
for the next frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
import statistics
import time
from typing import Any, Protocol

import numpy as np

from ivf_ros.io.bagio import join_stamp
from ivf_ros.io.image_codec import (
    check_pixels,
    compressed_size,
    decode_compressed,
    DEFAULT_MAX_PIXELS,
    ImageFormatError,
    message_to_array,
    ThermalNormalizer,
    to_rgb8,
)
from ivf_ros.pipeline.registration import homography_matrix, register_infrared
from ivf_ros.pipeline.sync import MatchedPair, PairSynchronizer

STREAMS = ('visible', 'infrared')
# Stamp gaps kept per stream to learn its frame period, and how many are needed first.
RATE_WINDOW = 30
RATE_MIN_SAMPLES = 5
# Frames of a stream are assumed at least this share of the median period apart: a camera's
# jitter stays well inside it. A hint larger than a stream's real least gap can release a pair
# before a nearer frame arrives, so the hint is the faster stream's and is forgotten with the
# period learners (a new timeline may come at another rate).
PERIOD_SAFETY = 0.5


class FusionResultLike(Protocol):
    """What FusionModel.run returns (ivf_ros.fusion.inference.FusionResult)."""

    fused: np.ndarray
    weights: np.ndarray
    enhanced: np.ndarray | None


class FusionModelLike(Protocol):
    """The part of ivf_ros.fusion.inference.FusionModel the pipeline uses."""

    device: str

    def run(self, visible_rgb: np.ndarray, infrared: np.ndarray,
            with_enhanced: bool = False) -> FusionResultLike:
        """Fuse one registered pair."""


@dataclass(frozen=True)
class PipelineConfig:
    """The pipeline's settings: fusion_node's parameters of the same names."""

    slop: float = 0.02
    queue_size: int = 10
    homography: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    max_pixels: int = DEFAULT_MAX_PIXELS
    thermal_range: str = 'auto'
    thermal_min: float = 0.0
    thermal_max: float = 65535.0
    thermal_smoothing: float = 0.9
    camera_rate: float = 0.0  # Hz; 0 = learn it from the stamps

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PipelineConfig:
        """Build from a parameter mapping (unknown names are other nodes' business)."""
        known = {name: params[name] for name in cls.__dataclass_fields__ if name in params}
        if 'homography' in known:
            known['homography'] = tuple(float(value) for value in known['homography'])
        return cls(**known)


def load_fusion_model(params: Mapping[str, Any]) -> FusionModelLike:
    """Load the fusion network of fusion_node's parameters; ModelLoadError names a bad path."""
    from ivf_ros.fusion.inference import FusionModel

    cast_correction = float(params['cast_correction'])   # negative: the weights' own value
    return FusionModel.load(str(params['model_path']) or None, device=str(params['device']),
                            half=bool(params['half']),
                            cast_correction=None if cast_correction < 0 else cast_correction)


Decoder = Callable[[], tuple[np.ndarray, str]]


@dataclass
class ArrivedFrame:
    """A frame as it arrived: stamp, size, and how to decode it (called only if it pairs)."""

    stamp_ns: int
    width: int
    height: int
    decode: Decoder  # -> (array, encoding), raising ImageFormatError
    header: Any = None  # the caller's, handed back with the pair (a ROS header, a bag's)
    received: float = 0.0  # time.perf_counter() at arrival
    log_time_ns: int = 0  # a bag's receive time
    arrival_s: float = 0.0  # what checking it on arrival cost: wall time ...
    arrival_cpu_s: float = 0.0  # ... and CPU time of that thread (immune to preemption)
    timeline: int = 0  # which recording it belongs to: FramePipeline counts stamp jumps back


@dataclass
class FusedPair:
    """A fused pair: its frames, the network inputs and outputs, and what each step cost."""

    visible: ArrivedFrame
    infrared: ArrivedFrame
    visible_rgb: np.ndarray  # (h, w, 3) uint8
    infrared_mono: np.ndarray  # (h, w) uint8, registered onto the visible frame
    result: FusionResultLike
    decode_s: float
    model_s: float  # wall time of the network ...
    model_cpu_s: float  # ... and CPU time of the calling thread in it
    size_mismatch: tuple[tuple[int, int], tuple[int, int]] | None  # (infrared, visible) sizes


def arrived_frame(message: Any, max_pixels: int | None, received: float = 0.0,
                  log_time_ns: int = 0) -> ArrivedFrame:
    """Return an ArrivedFrame of an Image or CompressedImage (rclpy's or a bag's message).

    What costs nothing is checked now (stamp, size, a raw frame's layout: a zero-copy view);
    the colour conversion or the JPEG/PNG decode waits for :meth:`FramePipeline.decode`.
    Raises ImageFormatError for a frame to reject.
    """
    stamp_ns = join_stamp(message.header.stamp)
    if stamp_ns < 0:
        # From the joined value: sec -1 with nanosec 5e8 is -0.5 s, not "-1.500000000".
        seconds, nanoseconds = divmod(-stamp_ns, 1_000_000_000)
        raise ImageFormatError(f'negative stamp -{seconds}.{nanoseconds:09d} s (sec '
                               f'{message.header.stamp.sec}, nanosec '
                               f'{message.header.stamp.nanosec})')
    if hasattr(message, 'format'):  # sensor_msgs/CompressedImage
        fmt, data = message.format, message.data
        size = compressed_size(data)
        if size is None:
            # No size in a header we know: decode now, under the same limit.
            array, encoding = decode_compressed(fmt, data, max_pixels)
            return ArrivedFrame(stamp_ns, array.shape[1], array.shape[0],
                                lambda: (array, encoding), message.header, received,
                                log_time_ns)
        kind = 'png' if bytes(data[:4]) == b'\x89PNG' else 'jpeg'  # what compressed_size read
        check_pixels(*size, max_pixels, what=f'{kind} image')
        return ArrivedFrame(stamp_ns, size[0], size[1],
                            lambda: decode_compressed(fmt, data, max_pixels), message.header,
                            received, log_time_ns)
    check_pixels(message.width, message.height, max_pixels)
    array = message_to_array(message)
    encoding = message.encoding
    return ArrivedFrame(stamp_ns, int(message.width), int(message.height),
                        lambda: (array, encoding), message.header, received, log_time_ns)


class PairDecodeError(ImageFormatError):
    """A paired frame that did not decode; ``stream`` says which."""

    def __init__(self, stream: str, error: Exception) -> None:
        super().__init__(f'{stream} frame dropped: {error}')
        self.stream = stream


class PeriodLearner:
    """Learn a stream's frame period from its stamps (median of the recent positive gaps)."""

    def __init__(self) -> None:
        self._gaps: deque[int] = deque(maxlen=RATE_WINDOW)
        self._last: int | None = None

    def add(self, stamp_ns: int) -> None:
        """Record one stamp (a jump back starts over: a new timeline)."""
        if self._last is not None:
            gap = stamp_ns - self._last
            if gap < 0:
                self._gaps.clear()
            elif gap > 0:
                self._gaps.append(gap)
        self._last = stamp_ns

    def period_s(self) -> float:
        """Return the median period in seconds, 0 before enough frames."""
        if len(self._gaps) < RATE_MIN_SAMPLES:
            return 0.0
        return statistics.median(self._gaps) / 1e9


class FramePipeline:
    """Check, pair, decode, register and fuse camera frames (see the module docstring)."""

    def __init__(self, config: PipelineConfig, model: FusionModelLike | None = None) -> None:
        self.config = config
        self.model = model
        self.sync = PairSynchronizer(config.slop, config.queue_size)
        self.homography = homography_matrix(config.homography)
        self.thermal = ThermalNormalizer(config.thermal_range, config.thermal_smoothing,
                                         (config.thermal_min, config.thermal_max))
        self._periods = {stream: PeriodLearner() for stream in STREAMS}
        self._resets_seen = 0   # the synchroniser's resets counted into self._timeline
        # Frames are tagged with the timeline (recording) they arrived in; decoding a pair of a
        # new timeline resets the thermal stretch. Resetting at decode, not at arrival, keeps
        # an old timeline's last pairs (decoded later, by a worker) from seeding the new one.
        self._timeline = 0
        self._decoded_timeline = 0
        if config.camera_rate > 0:
            self.sync.min_interval_s = PERIOD_SAFETY / config.camera_rate

    # -- arrival --------------------------------------------------------------------------------
    def arrive(self, stream: str, message: Any, received: float = 0.0,
               log_time_ns: int = 0) -> list[MatchedPair]:
        """Check and queue an Image/CompressedImage; return the ready pairs; ImageFormatError."""
        return self.add(stream, arrived_frame(message, self.config.max_pixels, received,
                                              log_time_ns))

    def add(self, stream: str, frame: ArrivedFrame) -> list[MatchedPair]:
        """Queue one checked frame; return the pairs that became ready (oldest first).

        Not thread-safe: call add() and flush() from one thread at a time (fusion_node's
        callbacks share the node's mutually exclusive default group), or the timeline tag of a
        frame arriving during a reset may be the old one.
        """
        self._learn_rate(stream, frame.stamp_ns)
        frame.timeline = self._timeline
        add = self.sync.add_visible if stream == 'visible' else self.sync.add_infrared
        pairs = add(frame.stamp_ns, frame)
        resets = self.sync.stats.resets
        if resets != self._resets_seen:
            # Stamps jumped back (a bag looped, a simulator restarted): this frame starts a new
            # scene, whose thermal range the smoothing must not carry over from the old one.
            self._resets_seen = resets
            self._timeline += 1
            frame.timeline = self._timeline
            self._forget_rates()
            self._learn_rate(stream, frame.stamp_ns)
        return pairs

    def flush(self, streams_ended: bool = False) -> list[MatchedPair]:
        """Pair what is still waiting for a later frame (end of a bag, cameras gone quiet).

        streams_ended: the next frames start a new timeline, even with earlier stamps (the same
        bag played again).
        """
        pairs = self.sync.flush()
        if streams_ended:
            self.sync.forget_history()
            self._forget_rates()
            self._timeline += 1
        return pairs

    def _forget_rates(self) -> None:
        """Learn the frame periods afresh; until then the synchroniser assumes nothing."""
        if self.config.camera_rate > 0:
            return          # the user's rate holds for every recording
        self._periods = {stream: PeriodLearner() for stream in STREAMS}
        self.sync.min_interval_s = 0.0

    def _learn_rate(self, stream: str, stamp_ns: int) -> None:
        """Tell the synchroniser how far apart frames come, once both periods are known."""
        if self.config.camera_rate > 0:
            return
        self._periods[stream].add(stamp_ns)
        periods = [learner.period_s() for learner in self._periods.values()]
        if min(periods) > 0:
            self.sync.min_interval_s = PERIOD_SAFETY * min(periods)

    # -- fusion ---------------------------------------------------------------------------------
    def decode(self, pair: MatchedPair) -> tuple[np.ndarray, np.ndarray, float]:
        """Return (visible RGB, infrared mono, decode seconds) of a pair; PairDecodeError."""
        started = time.perf_counter()
        visible: ArrivedFrame = pair.visible
        infrared: ArrivedFrame = pair.infrared
        try:
            array, encoding = visible.decode()
            visible_rgb = to_rgb8(array, encoding)
        except (ImageFormatError, ValueError) as error:
            raise PairDecodeError('visible', error) from None
        if infrared.timeline != self._decoded_timeline:
            self._decoded_timeline = infrared.timeline
            self.thermal.reset()
        try:
            array, encoding = infrared.decode()
            infrared_mono = self.thermal(array, encoding)
        except (ImageFormatError, ValueError) as error:
            raise PairDecodeError('infrared', error) from None
        return visible_rgb, infrared_mono, time.perf_counter() - started

    def fuse(self, pair: MatchedPair, with_enhanced: bool = False) -> FusedPair:
        """Decode, register and fuse one pair; PairDecodeError names a frame that failed."""
        if self.model is None:
            raise RuntimeError('FramePipeline.fuse needs a fusion model')
        visible_rgb, infrared_mono, decode_s = self.decode(pair)
        size = visible_rgb.shape[:2]
        mismatch = None
        if infrared_mono.shape[:2] != size:
            mismatch = (infrared_mono.shape[:2], size)
        registered = register_infrared(infrared_mono, size, self.homography)
        started, started_cpu = time.perf_counter(), time.thread_time()
        result = self.model.run(visible_rgb, registered, with_enhanced=with_enhanced)
        return FusedPair(pair.visible, pair.infrared, visible_rgb, registered, result, decode_s,
                         time.perf_counter() - started, time.thread_time() - started_cpu,
                         mismatch)
