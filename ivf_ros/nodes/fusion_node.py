"""
fusion_node: pair visible and infrared frames, fuse them, publish the fused image.

Subscribes (relative names, remap them): visible/image_raw, infrared/image_raw (sensor_msgs/Image,
or .../compressed CompressedImage when image_transport is 'compressed'), sensor-data QoS with QoS
overrides allowed, and the visible camera's camera_info beside its image topic. Publishes
fused/image carrying the VISIBLE frame's header (stamp and frame_id: the fused image lives in the
visible camera's frame), fused/camera_info (the visible camera's calibration with the fused
image's header, once one has arrived), optionally enhanced/image and fusion/weights (mono8,
255 = all infrared), and /diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable
import copy
import math
import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ivf_ros.io.image_codec import ImageFormatError
from ivf_ros.nodes.base import (
    IvfLifecycleNode,
    logged_transition,
    node_help,
    spin_nodes,
    wants_help,
)
from ivf_ros.nodes.param_specs import FUSION_NODE, FUSION_PARAMS, ParamValue
from ivf_ros.nodes.ros_image import (
    array_to_image_msg,
    camera_info_image_size,
    camera_info_topic,
)
from ivf_ros.pipeline.frames import (
    arrived_frame,
    ArrivedFrame,
    FramePipeline,
    FusedPair,
    FusionModelLike,
    load_fusion_model,
    PairDecodeError,
    PipelineConfig,
)
from ivf_ros.pipeline.registration import homography_matrix
from ivf_ros.pipeline.runtime import (
    LatencyStats,
    LatestWorker,
    RateMeter,
)
from ivf_ros.pipeline.sync import MatchedPair, STALE_FRAMES_TO_RESET

# A stream silent for this long while the other one flows is reported as missing.
STREAM_SILENT_S = 2.0
# An in-process consumer of the fused image (ivf-graph's fast path to the detector).
Downstream = Callable[[np.ndarray, Header], None]


class FusionNode(IvfLifecycleNode):
    """Synchronise visible + infrared, run the fusion network, publish the fused image."""

    worker_task = 'fusion'

    def __init__(self, node_name: str = FUSION_NODE, **kwargs: Any) -> None:
        super().__init__(node_name, FUSION_PARAMS, **kwargs)
        self.model: FusionModelLike | None = None
        self.pipeline: FramePipeline | None = None
        self.worker: LatestWorker[MatchedPair] | None = None
        self._inputs: list[Any] = []
        self._outputs: dict[str, Any] = {}
        self._flush_timer: Any = None
        # Set by ivf-graph: the fused array goes straight to the detector in this process
        # (intra-process, as composable nodes do), fused/image still serves other subscribers.
        self.downstream: Downstream | None = None
        self._camera_info: CameraInfo | None = None  # the visible camera's newest calibration
        self._last_frame_s = time.perf_counter()
        self._reset_counters()

    def _reset_counters(self) -> None:
        """Zero the rates, latencies and error counters reported on /diagnostics."""
        self.rates = {key: RateMeter() for key in ('visible', 'infrared', 'fused')}
        self.latency = LatencyStats()  # pair complete -> fused image published
        self.model_time = LatencyStats()
        self.overhead = LatencyStats()  # everything but the model: decode, sync, register, publish
        self.overhead_cpu = LatencyStats()  # the same in CPU time: its cost on a busy machine
        self.last_time_jump = ''
        self.rejected = {'visible': 0, 'infrared': 0}  # refused on arrival (stamp, size, layout)
        self.rejected_late = {'visible': 0, 'infrared': 0}  # paired, then failed to decode
        self.accepted = {'visible': 0, 'infrared': 0}  # checked and handed to the synchroniser
        self.time_jumps = 0
        self._flowing_since: float | None = None  # both cameras flowing since (monotonic)
        self._last_stamp_ns: dict[str, int] = {}
        self._size_warned: set[tuple[Any, ...]] = set()
        self.camera_info_mismatched = 0  # fused frames whose camera_info was of another size

    # Lifecycle --------------------------------------------------------------------------------

    @logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the fusion network, create the synchroniser and the (lifecycle) publishers."""
        path = str(self.params['model_path'])
        try:
            self.model = load_fusion_model(self.params)
        except Exception as error:  # ModelLoadError, or torch failing on a corrupt file
            return self.fail_configure(
                f'cannot load the fusion model ({path or "shipped"}): {error}')
        try:
            self.pipeline = FramePipeline(PipelineConfig.from_params(self.params), self.model)
        except ValueError as error:  # thermal range, homography
            self.model = None
            return self.fail_configure(f'invalid settings: {error}')
        self.configure_error = ''
        outputs = {'fused': ('fused/image', True),
                   'enhanced': ('enhanced/image', self.params['publish_enhanced']),
                   'weights': ('fusion/weights', self.params['publish_weights'])}
        for key, (topic, enabled) in outputs.items():
            if enabled:
                self._outputs[key] = self.output_publisher(Image, topic, depth=5)
        self._outputs['camera_info'] = self.output_publisher(
            CameraInfo, 'fused/camera_info', depth=5)
        self.get_logger().info(f'fusion model loaded on {self.model.device}')
        return super().on_configure(state)

    @logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker and subscribe to the two cameras."""
        self.worker = self.start_worker('fusion_worker', self._process_pair)
        compressed = self.params['image_transport'] == 'compressed'
        for stream in ('visible', 'infrared'):
            # image_transport convention: the compressed topic hangs off the (remapped) base name.
            base = f'{stream}/image_raw'
            topic = self.resolve_topic_name(base) + '/compressed' if compressed else base
            self._inputs.append(self.camera_subscription(
                CompressedImage if compressed else Image, topic,
                self.guarded(f'{stream} callback',
                             lambda msg, stream=stream: self._on_image(stream, msg))))
        # The fused image is the visible camera's view: its calibration applies unchanged.
        self._inputs.append(self.camera_subscription(
            CameraInfo, camera_info_topic(self.resolve_topic_name('visible/image_raw')),
            self.guarded('camera_info callback', self._on_camera_info)))
        # A wall-clock timer: with use_sim_time a paused bag also stops the ROS clock.
        self._flush_timer = self.create_timer(
            0.1, self.guarded('idle flush', self._flush_when_idle),
            clock=Clock(clock_type=ClockType.STEADY_TIME))
        return super().on_activate(state)

    def stop_inputs(self) -> None:
        """Destroy the camera subscriptions and the idle-flush timer, stop the worker."""
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs.clear()
        if self._flush_timer is not None:
            self.destroy_timer(self._flush_timer)
            self._flush_timer = None
        if self.worker is not None:
            self.worker.stop()

    def release_resources(self) -> None:
        """Destroy publishers and timer, drop the model."""
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs.clear()
        self.model, self.pipeline, self.worker = None, None, None
        self._camera_info = None
        self.free_gpu_memory()

    # Parameters -------------------------------------------------------------------------------

    def check_parameter(self, name: str, value: ParamValue) -> None:
        """Reject singular homographies."""
        if name == 'homography':
            homography_matrix(value)

    def on_parameters_changed(self, changed: dict[str, ParamValue]) -> None:
        """Apply slop, queue_size and homography at once."""
        pipeline = self.pipeline
        if pipeline is None:
            return  # on_configure reads them
        if 'slop' in changed:
            pipeline.sync.slop_s = float(changed['slop'])
        if 'queue_size' in changed:
            pipeline.sync.queue_size = int(changed['queue_size'])
        if 'homography' in changed:
            pipeline.homography = homography_matrix(changed['homography'])

    # Input ------------------------------------------------------------------------------------

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Keep the visible camera's newest calibration for fused/camera_info."""
        self._camera_info = msg

    def _on_image(self, stream: str, msg: Image | CompressedImage) -> None:
        """Check a frame's stamp and size (no decoding yet) and hand it to the pipeline."""
        received = time.perf_counter()
        received_cpu = time.thread_time()
        self.rates[stream].tick()
        pipeline = self.pipeline
        if pipeline is None:
            return
        try:
            frame = arrived_frame(msg, pipeline.config.max_pixels, received)
        except (ImageFormatError, ValueError) as error:
            self.rejected[stream] += 1
            self.report_bad_input(f'{stream} input', f'{stream} frame dropped: {error}')
            return
        self.accepted[stream] += 1
        last = self._last_stamp_ns.get(stream)
        self._last_stamp_ns[stream] = frame.stamp_ns
        resets = pipeline.sync.stats.resets
        pairs = pipeline.add(stream, frame)
        reset = pipeline.sync.stats.resets > resets
        if last is not None and frame.stamp_ns < last:
            self._note_time_jump(stream, (last - frame.stamp_ns) / 1e9, reset)
        elif reset:
            # A short bag looping: the frame that restarts the pairing is the third in a row
            # older than the last pair, not older than the frame before it.
            self.last_time_jump = (f'{stream} frames kept arriving older than the last pair (a '
                                   'short bag looping): waiting pairs emitted, pairing restarts')
            self.warn_throttled(f'{stream}_time', self.last_time_jump)
        elif frame.stamp_ns == last:
            self.warn_throttled(f'{stream}_repeated_stamp', (
                f'{stream} frames repeat the stamp {frame.stamp_ns / 1e9:.9f} s: a republished '
                'frame, or a driver that leaves header.stamp unset; only one frame of a stamp '
                'is paired'))
        self._last_frame_s = time.perf_counter()
        frame.arrival_s = self._last_frame_s - received
        frame.arrival_cpu_s = time.thread_time() - received_cpu
        self._submit(pairs)

    def _note_time_jump(self, stream: str, back_s: float, reset: bool) -> None:
        """Count and report stamps going back; say whether that restarted the pairing."""
        self.time_jumps += 1
        jump_s = self.pipeline.sync.reset_jump_s
        if reset:
            what = 'bag loop or clock reset: waiting pairs emitted, pairing restarts'
        elif back_s > jump_s:
            what = 'after the cameras went quiet: a new timeline starts'
        else:
            what = (f'within {jump_s:g} s: kept if it can still pair, else dropped; '
                    f'{STALE_FRAMES_TO_RESET} in a row older than the last pair restart the '
                    'pairing')
        self.last_time_jump = f'{stream} stamps went back by {back_s:.3f} s ({what})'
        self.warn_throttled(f'{stream}_time', self.last_time_jump)

    def _submit(self, pairs: list[MatchedPair]) -> None:
        """Hand the ready pairs to the worker (it drops those gone stale behind a busy one)."""
        if self.worker is not None:
            for pair in pairs:
                self.worker.submit(pair)

    def _flush_when_idle(self) -> None:
        """Emit the pairs still waiting for a later frame once the cameras have gone quiet."""
        idle_s = float(self.params['idle_flush'])
        pipeline = self.pipeline
        if pipeline is None or idle_s <= 0.0 or (
                time.perf_counter() - self._last_frame_s < idle_s):
            return
        # Flush once per quiet spell: the next frame re-arms it. The cameras have stopped: what
        # comes next is a new timeline even if its stamps are earlier (a bag played again).
        self._last_frame_s = math.inf
        self._submit(pipeline.flush(streams_ended=True))

    # Processing -------------------------------------------------------------------------------

    def _wanted(self, key: str) -> bool:
        """Return whether an output is enabled and someone subscribes to it."""
        publisher = self._outputs.get(key)
        return publisher is not None and publisher.get_subscription_count() > 0

    def _process_pair(self, pair: MatchedPair) -> None:
        """Decode, register, fuse and publish one pair (worker thread)."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        started = time.perf_counter()
        started_cpu = time.thread_time()
        try:
            # Optional outputs are computed only for subscribers (enhanced costs a second
            # rendering; the weight map a conversion).
            fused = pipeline.fuse(pair, with_enhanced=self._wanted('enhanced'))
        except PairDecodeError as error:
            self.rejected_late[error.stream] += 1
            self.report_bad_input(f'{error.stream} input', str(error))
            return
        if fused.size_mismatch is not None:
            self._note_size_mismatch(*fused.size_mismatch)
        self._publish_fused(fused)
        done = time.perf_counter()
        visible: ArrivedFrame = fused.visible
        infrared: ArrivedFrame = fused.infrared
        self.rates['fused'].tick()
        self.model_time.add(fused.model_s)
        self.latency.add(done - max(visible.received, infrared.received))
        self.overhead.add(visible.arrival_s + infrared.arrival_s + (done - started)
                          - fused.model_s)
        self.overhead_cpu.add(visible.arrival_cpu_s + infrared.arrival_cpu_s
                              + (time.thread_time() - started_cpu) - fused.model_cpu_s)

    def _publish_fused(self, fused: FusedPair) -> None:
        """Publish fused/image (and the optional outputs) with the visible frame's header."""
        header = fused.visible.header
        image = fused.result.fused  # (h, w, 3) uint8 RGB
        if self.downstream is not None:
            self.downstream(image, header)
        if self._wanted('fused'):
            encoding = str(self.params['output_encoding'])
            pixels = image if encoding == 'rgb8' else image[:, :, ::-1]
            self._publish('fused', array_to_image_msg(pixels, encoding, header))
        if self._wanted('camera_info'):
            self._publish_camera_info(header, image.shape[:2])
        if self._wanted('enhanced') and fused.result.enhanced is not None:
            self._publish('enhanced', array_to_image_msg(fused.result.enhanced, 'rgb8', header))
        if self._wanted('weights'):
            weights = (np.clip(fused.result.weights, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            self._publish('weights', array_to_image_msg(weights, 'mono8', header))

    def _publish_camera_info(self, header: Header, size: tuple[int, int]) -> None:
        """Publish the visible camera_info with the fused image's header, if its size fits."""
        info = self._camera_info
        if info is None:
            return
        described = camera_info_image_size(info)
        if described != size:
            self.camera_info_mismatched += 1
            self.warn_throttled('camera_info', f'visible camera_info describes {described[1]}x'
                                f'{described[0]} images, the image is {size[1]}x{size[0]}: '
                                'not published')
            return
        info = copy.copy(info)
        info.header = header
        self.publish_counted(self._outputs.get('camera_info'), info, 'camera_info')

    def _note_size_mismatch(self, infrared_size: tuple[int, ...], size: tuple[int, ...]) -> None:
        """Log once per size combination that infrared is resized to the visible frame."""
        key = (infrared_size, size)
        if key not in self._size_warned:
            self._size_warned.add(key)
            self.get_logger().warning(
                f'infrared {infrared_size[1]}x{infrared_size[0]} differs from visible '
                f'{size[1]}x{size[0]}: resizing it to the visible frame (set `homography` for '
                'a calibrated rig)')

    def _publish(self, key: str, msg: Image) -> None:
        """Publish on one of the enabled image outputs (fused, enhanced, weights)."""
        self.publish_counted(self._outputs.get(key), msg, key)

    # Diagnostics ------------------------------------------------------------------------------

    def diagnostic_status(self) -> DiagnosticStatus:
        """Return the node's health: rates, latency, drops, bad input, device."""
        now = time.monotonic()
        stats = self.pipeline.sync.stats if self.pipeline is not None else None
        p50, p95 = self.latency.percentiles(50, 95)
        model_p50, = self.model_time.percentiles(50)
        overhead_p50, overhead_p95 = self.overhead.percentiles(50, 95)
        overhead_cpu_p50, overhead_cpu_p95 = self.overhead_cpu.percentiles(50, 95)
        problems: list[str] = []
        errors: list[str] = []
        for stream, other in (('infrared', 'visible'), ('visible', 'infrared')):
            last, other_last = self.rates[stream].last_time, self.rates[other].last_time
            if other_last is not None and now - other_last < STREAM_SILENT_S and (
                    last is None or now - last > STREAM_SILENT_S):
                silent = 'never' if last is None else f'{now - last:.1f} s ago'
                problems.append(f'no {stream} frames (last {silent}) while {other} flows')
        unpaired = self._unpaired_for(now)
        if unpaired is not None:
            errors.append(unpaired)
        for problem in problems:
            if problem.startswith('no '):
                self.warn_throttled('missing_stream', problem)
        values = {
            'visible rate [Hz]': f'{self.rates["visible"].rate(now):.2f}',
            'infrared rate [Hz]': f'{self.rates["infrared"].rate(now):.2f}',
            'fused rate [Hz]': f'{self.rates["fused"].rate(now):.2f}',
            'latency p50 [ms]': f'{p50:.2f}', 'latency p95 [ms]': f'{p95:.2f}',
            'model p50 [ms]': f'{model_p50:.2f}',
            'overhead p50 [ms]': f'{overhead_p50:.2f}', 'overhead p95 [ms]': f'{overhead_p95:.2f}',
            'overhead CPU p50 [ms]': f'{overhead_cpu_p50:.2f}',
            'overhead CPU p95 [ms]': f'{overhead_cpu_p95:.2f}',
            'fused frames': str(self.rates['fused'].count),
            'received visible frames': str(self.rates['visible'].count),
            'received infrared frames': str(self.rates['infrared'].count),
            'accepted visible frames': str(self.accepted['visible']),
            'accepted infrared frames': str(self.accepted['infrared']),
            'rejected visible frames': str(self.rejected['visible']),
            'rejected infrared frames': str(self.rejected['infrared']),
            'undecodable visible frames': str(self.rejected_late['visible']),
            'undecodable infrared frames': str(self.rejected_late['infrared']),
            'dropped stale pairs': str(self.worker.dropped if self.worker else 0),
            'unmatched visible': str(stats.unmatched_visible if stats else 0),
            'unmatched infrared': str(stats.unmatched_infrared if stats else 0),
            'dropped overflow': str(stats.dropped_overflow if stats else 0),
            'sync resets': str(stats.resets if stats else 0),
            'repeated stamps': str(stats.repeated_stamps if stats else 0),
            'time jumps back': str(self.time_jumps),
            'last time jump': self.last_time_jump,
            'bad visible frames': str(self.rejected['visible'] + self.rejected_late['visible']),
            'bad infrared frames': str(self.rejected['infrared']
                                       + self.rejected_late['infrared']),
            'last bad input': self.last_bad_input,
            'fusion errors': str(self.problems.count('fusion')),
            'stamp offset infrared - visible [s]': self._stamp_offset_text(),
            'publish errors': str(self.publish_errors),
            'visible camera_info': (f'{self._camera_info.width}x{self._camera_info.height}'
                                    if self._camera_info is not None else 'none received'),
            'camera_info size mismatches': str(self.camera_info_mismatched),
            'device': self.model.device if self.model is not None else 'none',
        }
        return self.make_status('fusion', 'fusing', problems, values['device'], values, errors)

    def _stamp_offset_text(self) -> str:
        """Return the newest infrared minus newest visible stamp in seconds ('' before both)."""
        stamps = self._last_stamp_ns
        if 'visible' not in stamps or 'infrared' not in stamps:
            return ''
        return f'{(stamps["infrared"] - stamps["visible"]) / 1e9:.3f}'

    def _unpaired_for(self, now: float) -> str | None:
        """Return an error when both cameras flow but no pair has been fused for a while."""
        if self.lifecycle_state != 'active':
            return None
        rates = self.rates
        flowing = all(rates[key].last_time is not None
                      and now - rates[key].last_time < STREAM_SILENT_S
                      for key in ('visible', 'infrared'))
        if not flowing:
            self._flowing_since = None
            return None
        if self._flowing_since is None:
            self._flowing_since = now  # judged from the next report on
        last_fused = rates['fused'].last_time
        quiet_since = self._flowing_since if last_fused is None else max(
            self._flowing_since, last_fused)
        if now - quiet_since < STREAM_SILENT_S:
            return None
        return (f'both cameras flow but nothing was fused for {now - quiet_since:.1f} s: '
                f'infrared - visible stamp offset {self._stamp_offset_text() or "?"} s, '
                f'slop {float(self.params["slop"]):g} s')


def main(args: list[str] | None = None) -> int:
    """Run fusion_node on its own (ROS arguments: --ros-args -r ... -p ...)."""
    if wants_help(args):
        print(node_help('fusion_node', __doc__, FUSION_PARAMS), end='')
        return 0
    return spin_nodes([FusionNode], args=args)


if __name__ == '__main__':
    sys.exit(main())
