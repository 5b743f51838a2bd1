"""`ivf-bag`: make, play, record, process and inspect rosbag2 night drives (no ROS install)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import json
from pathlib import Path
import queue
import sys
import threading
import time
from typing import Any

import numpy as np

from ivf_ros.cli.help import interrupted_exit_code
from ivf_ros.io import bagio
from ivf_ros.io.bagio import BagError, BagReader, BagWriter
from ivf_ros.io.image_codec import ImageFormatError
from ivf_ros.io.paths import share_file
from ivf_ros.pipeline.runtime import compute_threads, use_threads

# Output topics of the live graph (fusion_node and detection_node with the launch file's
# remappings): `process` writes the same names and types so tools cannot tell them apart.
FUSED_TOPIC = '/fused/image'
DETECTIONS_TOPIC = '/detections'
ANNOTATED_TOPIC = '/detections/image'


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'WIDTHxHEIGHT' into (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must look like 640x512, got {text!r}') from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f'size {text} is too small (at least 8x8)')
    return width, height


def camera_topics(reader: BagReader, visible_topic: str, infrared_topic: str) -> tuple[str, str]:
    """Return the bag's visible/infrared topics, accepting the image_transport /compressed ones."""
    found = []
    for topic in (visible_topic, infrared_topic):
        candidates = [topic, topic + '/compressed']
        match = next((name for name in candidates
                      if reader.topics.get(name) in bagio.IMAGE_TYPES), None)
        if match is None:
            raise BagError(f'{reader.path} has no image topic {topic} (or {topic}/compressed); '
                           f'it has {sorted(reader.topics)}')
        found.append(match)
    return found[0], found[1]


# ----------------------------------------------------------------------------------------- make
def make_command(args: argparse.Namespace) -> int:
    """Write a two-camera bag from paired folders or the synthetic night generator."""
    from tqdm import tqdm

    if args.source == 'synthetic':
        width, height = args.size or (640, 512)
        pairs = bagio.synthetic_pairs(args.frames, width, height, args.seed, args.thermal_bits)
        total = args.frames
    else:
        folder = Path(args.source)
        pairs = bagio.folder_pairs(folder, args.frames, args.size, args.night_only)
        total = args.frames
    stamps = bagio.StampModel(rate_hz=args.rate, infrared_offset_s=args.ir_offset_ms / 1e3,
                              jitter_s=args.jitter_ms / 1e3, seed=args.seed)
    cameras = bagio.CameraTopics(args.visible_topic, args.infrared_topic,
                                 args.visible_frame_id, args.infrared_frame_id,
                                 args.compressed, args.reliability, args.depth)
    with tqdm(total=total, desc='make', unit='pair', disable=args.quiet) as progress:
        counts = bagio.write_pairs(args.output, pairs, args.storage, stamps, cameras,
                                   args.overwrite, progress)
    if not args.quiet:
        print(bagio.format_info(bagio.bag_info(args.output)))
    return 0 if min(counts.values(), default=0) > 0 else 1


# ----------------------------------------------------------------------------------------- info
def refuse_if_cut_short(bag: str) -> None:
    """Raise BagError for a bag without metadata.yaml: being recorded, or cut short."""
    # A recorder writes metadata.yaml only when it closes the bag, so a bag without it may be
    # one still being written: reading it here must not change it (ros2 bag refuses too).
    if bagio.needs_reindex(bag):
        raise BagError(f'{bag} has no metadata.yaml: it is still being recorded, or its '
                       f'recording was cut short; once nothing records into it, '
                       f'`ivf-bag reindex {bag}` rebuilds it')


def reindex_command(args: argparse.Namespace) -> int:
    """Rebuild metadata.yaml (and a complete storage file) of a bag whose recording was cut."""
    result = bagio.reindex(args.bag)
    print(f'reindexed {args.bag}: {sum(result.counts.values())} messages')
    for topic, count in result.counts.items():
        print(f'  {topic}: {count}')
    # A kill leaves a last record half written, so unread bytes are the rule after a crash;
    # many of them (a damaged chunk) mean messages are missing: the original is kept for that.
    for what in result.unread:
        print(f'ivf-bag reindex: not recovered: {what}', file=sys.stderr)
    print(f'the original is kept in {result.original}; delete it once the rebuilt bag is '
          'checked')
    return 0


def info_command(args: argparse.Namespace) -> int:
    """Print topics, types, counts, rates and duration."""
    refuse_if_cut_short(args.bag)
    info = bagio.bag_info(args.bag)
    if args.json:
        print(json.dumps({
            'path': str(info.path), 'storage': info.storage, 'duration_s': info.duration_s,
            'start_ns': info.start_ns, 'end_ns': info.end_ns, 'messages': info.message_count,
            'topics': {name: {'type': topic.msgtype, 'count': topic.count,
                              'rate_hz': round(topic.rate_hz, 3),
                              'qos': [{'reliability': q.reliability.name.lower(),
                                       'depth': q.depth} for q in topic.qos]}
                       for name, topic in info.topics.items()}}, indent=2))
    else:
        print(bagio.format_info(info))
    return 0


# ----------------------------------------------------------------------------------------- play
def play_command(args: argparse.Namespace) -> int:
    """Publish a bag over DDS with its timing (rclpy)."""
    from ivf_ros.nodes.bag_player import Pacing, parse_remaps, play_bag

    pacing = Pacing(args.pace, args.pace_trigger, args.pace_lag) if args.pace else None
    refuse_if_cut_short(args.bag)
    stats = play_bag(
        args.bag, wait_for_subscribers=args.wait_for_subscribers,
        wait_timeout_s=args.wait_timeout, delay_s=args.delay, ros_args=args.ros_args,
        rate=args.rate, loop=args.loop, loops=args.loops, start_offset_s=args.start,
        topics=args.topics, remap=parse_remaps(args.remap), clock_hz=args.clock or 0.0,
        reliability=args.reliability, pacing=pacing)
    sent, failed = sum(stats.published.values()), sum(stats.failed.values())
    print(f'played {sent} messages in {stats.wall_s:.2f} s ({stats.loops} loop(s)); '
          f'{failed} publish failures')
    for topic, count in stats.published.items():
        print(f'  {topic}: {count}' + (f' ({stats.failed[topic]} failed)'
                                        if stats.failed[topic] else ''))
    return 0 if failed == 0 else 1


# --------------------------------------------------------------------------------------- record
def record_command(args: argparse.Namespace) -> int:
    """Record topics raw until Ctrl-C (or --duration)."""
    from ivf_ros.nodes.bag_recorder import record_bag

    def ready() -> None:
        print(f'recording {len(args.topics)} topic(s) to {args.output}', flush=True)

    stats = record_bag(args.output, args.topics, args.storage, args.overwrite, args.duration,
                       ros_args=args.ros_args, on_ready=ready,
                       on_progress=lambda count: print(f'received {count} messages', flush=True),
                       progress_every=args.log_every)
    print(f'received {sum(stats.received.values())}, '
          f'written {sum(stats.written.values())} messages')
    if not any(stats.written.values()):
        # Say why per topic when it is known (a type rclpy lacks, a QoS it cannot take).
        reasons = '; '.join(f'{topic}: {error}' for topic, error in stats.errors.items())
        print('nothing was recorded: ' + (reasons or 'no requested topic had a publisher'),
              file=sys.stderr)
        return 1
    for topic in stats.received:
        print(f'  {topic}: received {stats.received[topic]}, written {stats.written[topic]}'
              + (f' (error: {stats.errors[topic]})' if topic in stats.errors else ''))
    return 0 if stats.received == stats.written and not stats.errors else 1


# -------------------------------------------------------------------------------------- process
@dataclass
class ProcessOptions:
    """What `process` runs and writes: the live graph's settings, from the same YAML.

    Every setting left None comes from the params file (fusion_node's and detection_node's
    sections, as the nodes read them); ``fusion`` overrides fusion_node parameters by name.
    """

    params_file: str | None = None        # None = the package's config/ivf_ros.yaml
    model: str | None = None              # None = fusion_node's model_path ('' = shipped)
    detector: str | None = None           # None = fusion only
    allow_unsafe_checkpoint: bool = False  # full pickle for the detector (can run code)
    device: str | None = None
    conf: float | None = None
    iou: float | None = None
    imgsz: int | None = None
    classes: list[str] | None = None
    fusion: dict[str, Any] = field(default_factory=dict)  # e.g. {'slop': 0.05}
    visible_topic: str = bagio.VISIBLE_TOPIC
    infrared_topic: str = bagio.INFRARED_TOPIC
    fused_topic: str = FUSED_TOPIC
    detections_topic: str = DETECTIONS_TOPIC
    annotated_topic: str = ANNOTATED_TOPIC
    storage: bagio.Storage = 'sqlite3'
    keep_inputs: bool = True
    with_enhanced: bool = False
    mp4: str | None = None
    png_dir: str | None = None
    overwrite: bool = False


@dataclass
class ProcessedFrame:
    """One fused pair as `process` produced it (for callers such as the demo)."""

    stamp_ns: int
    visible: np.ndarray    # (h, w, 3) uint8 RGB, as fed to the network
    infrared: np.ndarray   # (h, w) uint8, registered to the visible frame
    fused: np.ndarray      # (h, w, 3) uint8 RGB
    detections: list[Any]
    enhanced: np.ndarray | None = None


@dataclass
class ProcessStats:
    """Counts and timings of one `process` run."""

    pairs: int = 0
    detections: int = 0
    unmatched_visible: int = 0
    unmatched_infrared: int = 0
    repeated_stamps: int = 0    # of the unmatched: arrived with the stamp of the last pair
    bad_frames: int = 0
    replaced_outputs: int = 0   # messages of earlier output topics, not copied to the output
    replaced_topics: dict[str, int] = field(default_factory=dict)  # topic -> messages not copied
    seconds: float = 0.0
    fusion_ms: list[float] = field(default_factory=list)
    detection_ms: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Return pairs per second over the whole run (reading and writing included)."""
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float | int]:
        """Return the numbers a person wants to see."""
        def median(values: list[float]) -> float:
            return round(float(np.median(values)), 2) if values else 0.0
        return {'pairs': self.pairs, 'detections': self.detections,
                'unmatched_visible': self.unmatched_visible,
                'unmatched_infrared': self.unmatched_infrared,
                'repeated_stamps': self.repeated_stamps, 'bad_frames': self.bad_frames,
                'replaced_outputs': self.replaced_outputs,
                'seconds': round(self.seconds, 3), 'fps': round(self.fps, 2),
                'fusion_ms_median': median(self.fusion_ms),
                'detection_ms_median': median(self.detection_ms)}


def node_settings(options: ProcessOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (fusion_node, detection_node) parameter values: defaults < YAML < options."""
    from ivf_ros.nodes.param_specs import defaults, DETECTION_NODE, FUSION_NODE, load_params_file

    path = options.params_file or share_file('config', 'ivf_ros.yaml')
    fusion = {**defaults(FUSION_NODE), **load_params_file(path, FUSION_NODE), **options.fusion}
    detection = {**defaults(DETECTION_NODE), **load_params_file(path, DETECTION_NODE)}
    for name in ('conf', 'iou', 'imgsz', 'classes'):
        if getattr(options, name) is not None:
            detection[name] = getattr(options, name)
    if options.device is not None:
        fusion['device'] = detection['device'] = options.device
    if options.model is not None:
        fusion['model_path'] = options.model
    return fusion, detection


def _check_output_apart(bag: Path, output: Path, what: str = 'the output bag',
                        may_hold: bool = False) -> None:
    """Refuse an output that is the input bag, lies inside it or (unless may_hold) holds it."""
    bag, output = bag.resolve(), output.resolve()
    # A storage file named as the input belongs to its bag folder when metadata.yaml is there:
    # writing next to it would replace the folder's own files.
    folder = bag.parent if bag.is_file() and (bag.parent / 'metadata.yaml').is_file() else bag
    for protected in (bag, folder):
        if output == protected:
            raise BagError(f'{what} {output} is the input bag: write it elsewhere')
        if protected in output.parents:
            raise BagError(f'{what} {output} is inside the input bag {folder}: write it '
                           'elsewhere')
    if not may_hold and output in bag.parents:
        # --overwrite would delete the folder, and with it the bag being read.
        raise BagError(f'{what} {output} holds the input bag {bag}: write it elsewhere')


def process_bag(bag: str | Path, output: str | Path | None, options: ProcessOptions,
                progress: bool = True,
                on_frame: Callable[[ProcessedFrame], None] | None = None) -> ProcessStats:
    """Fuse (and detect) every synchronised pair of a bag in-process; write an output bag."""
    from tqdm import tqdm

    from ivf_ros.pipeline.frames import (
        FramePipeline,
        load_fusion_model,
        PairDecodeError,
        PipelineConfig,
    )

    stats = ProcessStats()
    if output is not None:
        _check_output_apart(Path(bag), Path(output))
    for what, path in (('--mp4', options.mp4), ('--png-dir', options.png_dir)):
        if path:
            # PNGs and the video are added to a folder, never replace it: one above is fine.
            _check_output_apart(Path(bag), Path(path), what, may_hold=True)
            if output is not None and Path(output).resolve() in Path(path).resolve().parents:
                raise BagError(f'{what} {path} is inside the output bag {output}, which the bag '
                               'writer creates (or replaces): write it elsewhere')
    fusion, detection = node_settings(options)
    pipeline = FramePipeline(PipelineConfig.from_params(fusion))  # checks before any loading
    video = _VideoSink(options.mp4) if options.mp4 else None
    png_dir = Path(options.png_dir) if options.png_dir else None
    if png_dir:
        png_dir.mkdir(parents=True, exist_ok=True)
    with BagReader(bag) as reader:
        # Cheap checks first: a wrong topic fails before seconds of model loading.
        visible_topic, infrared_topic = camera_topics(
            reader, options.visible_topic, options.infrared_topic)
        pipeline.model = load_fusion_model(fusion)
        detector = None
        if options.detector:
            from ivf_ros.pipeline.detector import YoloDetector

            detector = YoloDetector(options.detector, conf=detection['conf'],
                                    iou=detection['iou'], imgsz=detection['imgsz'],
                                    classes=detection['classes'] or None,
                                    max_det=detection['max_det'], device=detection['device'],
                                    half=detection['half'],
                                    allow_unsafe_checkpoint=options.allow_unsafe_checkpoint)
            detector.warmup()  # the first frame must not carry Ultralytics' lazy set-up
        started = time.perf_counter()  # throughput excludes loading the models
        inputs = [visible_topic, infrared_topic]
        # A bag processed (or recorded from the graph) before holds outputs of an earlier
        # fusion: this run's fused images replace them, and detections of the earlier fused
        # images would not match, so none of the output topics is copied (counted), even when
        # this run writes no detections.
        outputs = {options.fused_topic, options.detections_topic, options.annotated_topic}
        copied = sorted(set(reader.topics) - outputs) if options.keep_inputs else []
        if options.keep_inputs and output:
            stats.replaced_topics = {topic: reader.counts.get(topic, 0)
                                     for topic in sorted(set(reader.topics) & outputs)}
            stats.replaced_outputs = sum(stats.replaced_topics.values())
        total = reader.counts.get(visible_topic, 0)
        writer: BagWriter | None = None
        bar = tqdm(total=total, desc='process', unit='pair', disable=not progress)

        def fuse(pair: Any) -> None:
            """Fuse one pair (this thread) and queue it for detection and writing."""
            try:
                fused = pipeline.fuse(pair, with_enhanced=options.with_enhanced)
            except PairDecodeError as error:
                stats.bad_frames += 1
                bar.write(f'skipping a pair: {error}')
                return
            stats.fusion_ms.append(fused.model_s * 1e3)
            finish.put(fused)

        def detect(fused: Any) -> tuple[Any, list[Any], np.ndarray]:
            """Detect on a fused pair (the worker thread); return what write() needs."""
            detections: list[Any] = []
            annotated = fused.result.fused
            if detector is not None:
                tick = time.perf_counter()
                detections = detector.detect(fused.result.fused)
                stats.detection_ms.append((time.perf_counter() - tick) * 1e3)
                annotated = detector.annotate(fused.result.fused, detections)
            return fused, detections, annotated

        def write(done: tuple[Any, list[Any], np.ndarray]) -> None:
            """Write a detected pair (in this thread: sqlite3 keeps to its thread)."""
            fused, detections, annotated = done
            visible, result = fused.visible, fused.result
            # The pair exists once both frames arrived: the later receive time.
            log_time = max(visible.log_time_ns, fused.infrared.log_time_ns)
            stats.pairs += 1
            stats.detections += len(detections)
            if writer is not None:
                # Outputs carry the visible header, as the fusion node copies it.
                frame_id = visible.header.frame_id
                writer.write(options.fused_topic, log_time, bagio.image_message(
                    result.fused, 'rgb8', visible.stamp_ns, frame_id))
                if detector is not None:
                    writer.write(options.detections_topic, log_time, bagio.detections_message(
                        detections, visible.stamp_ns, frame_id))
                    writer.write(options.annotated_topic, log_time, bagio.image_message(
                        annotated, 'rgb8', visible.stamp_ns, frame_id))
            if video is not None:
                video.write(annotated)
            if png_dir is not None:
                _write_png(png_dir / f'{stats.pairs - 1:05d}_fused.png', result.fused)
                if detector is not None:
                    _write_png(png_dir / f'{stats.pairs - 1:05d}_detections.png', annotated)
            if on_frame is not None:
                on_frame(ProcessedFrame(visible.stamp_ns, fused.visible_rgb, fused.infrared_mono,
                                        result.fused, detections, result.enhanced))
            bar.update(1)

        # Two stages as in the live graph: this thread fuses pair N+1 while a worker detects
        # on pair N; each with the threads the nodes would use (the same threads: the very
        # same pixels as the live graph), nothing dropped, written in order here.
        finish = _OrderedStage(detect, write, compute_threads(int(detection['threads'])))
        previous_threads = use_threads(compute_threads(int(fusion['threads'])))
        try:
            if output:
                writer = BagWriter(output, options.storage, options.overwrite).__enter__()
                for topic in copied:
                    msgtype, msgdef, rihs01 = reader.definition(topic)
                    writer.add_topic(topic, msgtype, reader.qos(topic) or None, msgdef, rihs01)
                reliable = bagio.camera_qos('reliable')
                writer.add_topic(options.fused_topic, bagio.IMAGE, reliable)
                if detector is not None:
                    writer.add_topic(options.detections_topic, bagio.DETECTIONS, reliable)
                    writer.add_topic(options.annotated_topic, bagio.IMAGE, reliable)
            for message in reader.messages(sorted(set(copied) | set(inputs))):
                finish.write_done()
                if writer is not None and message.topic in copied:
                    writer.write_raw(message.topic, message.log_time_ns, message.raw)
                if message.topic not in inputs:
                    continue
                stream = 'visible' if message.topic == visible_topic else 'infrared'
                try:
                    pairs = pipeline.arrive(stream, reader.decode(message),
                                            log_time_ns=message.log_time_ns)
                except (BagError, ImageFormatError) as error:
                    stats.bad_frames += 1
                    bar.write(f'skipping a bad frame on {message.topic}: {error}')
                    continue
                for pair in pairs:
                    fuse(pair)
            # The bag is over: no later frame can improve the last pairs.
            for pair in pipeline.flush():
                fuse(pair)
            finish.close()
        finally:
            finish.close(raise_error=False)
            use_threads(previous_threads)
            bar.close()
            if writer is not None:
                writer.close()
            if video is not None:
                video.close()
    sync = pipeline.sync.stats
    stats.unmatched_visible = sync.unmatched_visible
    stats.unmatched_infrared = sync.unmatched_infrared
    stats.repeated_stamps = sync.repeated_stamps
    stats.seconds = time.perf_counter() - started
    return stats


class _OrderedStage:
    """A worker thread for the second stage; results are handed back in order, none dropped."""

    def __init__(self, work: Callable[[Any], Any], done: Callable[[Any], None],
                 threads: int) -> None:
        self._work = work
        self._done = done  # called in the caller's thread, by write_done() and close()
        self._threads = threads
        self._inputs: queue.Queue[Any] = queue.Queue(maxsize=2)  # bounded: fusion waits
        self._outputs: queue.Queue[Any] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name='process_detect', daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        """Queue an item (blocks while two wait); hand back what is done."""
        self.write_done()
        self._inputs.put(item)

    def write_done(self) -> None:
        """Pass finished results to `done` in order; re-raise an error of the worker."""
        if self._error is not None:
            raise self._error
        while True:
            try:
                result = self._outputs.get_nowait()
            except queue.Empty:
                return
            self._done(result)

    def close(self, raise_error: bool = True) -> None:
        """Finish every queued item, hand back the results and stop the worker."""
        if self._thread.is_alive():
            self._inputs.put(None)
            self._thread.join()
        if raise_error:
            self.write_done()

    def _run(self) -> None:
        use_threads(self._threads)
        while (item := self._inputs.get()) is not None:
            if self._error is None:
                try:
                    self._outputs.put(self._work(item))
                except BaseException as error:  # noqa: BLE001 - re-raised in the caller
                    self._error = error


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    # imwrite says False, not why, when it cannot write (the folder is gone, the disk full).
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f'cannot write {path}')


class _VideoSink:
    """MP4 (MPEG-4 part 2, what OpenCV writes everywhere) of RGB frames."""

    def __init__(self, path: str | Path, fps: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self._writer: Any = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            height, width = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*'mp4v'),
                                           self.fps, (width, height))
            if not self._writer.isOpened():
                raise BagError(f'OpenCV cannot write {self.path} (no MPEG-4 encoder)')
        self._writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def process_command(args: argparse.Namespace) -> int:
    """Run fusion + detection over a bag offline and write the results."""
    given = {'slop': args.slop, 'queue_size': args.queue_size}
    fusion = {name: value for name, value in given.items() if value is not None}
    options = ProcessOptions(
        params_file=args.params_file, model=args.model, detector=args.detector,
        allow_unsafe_checkpoint=args.allow_unsafe_checkpoint, device=args.device, conf=args.conf,
        iou=args.iou, imgsz=args.imgsz, classes=args.classes, fusion=fusion,
        visible_topic=args.visible_topic,
        infrared_topic=args.infrared_topic, fused_topic=args.fused_topic,
        detections_topic=args.detections_topic, annotated_topic=args.annotated_topic,
        storage=args.storage, keep_inputs=not args.outputs_only, mp4=args.mp4,
        png_dir=args.png_dir, overwrite=args.overwrite)
    stats = process_bag(args.bag, args.output, options, progress=not args.quiet)
    if stats.replaced_topics:
        dropped = ', '.join(f'{topic} ({count})' for topic, count in stats.replaced_topics.items())
        print(f'not copied (outputs of an earlier run): {dropped}', file=sys.stderr)
    summary = stats.summary()
    print(json.dumps(summary, indent=2) if args.json else
          ', '.join(f'{key} {value}' for key, value in summary.items()))
    return 0 if stats.pairs else 1


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    """Return the `ivf-bag` argument parser."""
    parser = argparse.ArgumentParser(
        prog='ivf-bag', description=__doc__.split(':', 1)[1].strip() if __doc__ else None)
    commands = parser.add_subparsers(dest='command', required=True)

    make = commands.add_parser('make', help='paired folders or synthetic pairs -> camera bag')
    make.add_argument('output', help='bag directory to write')
    make.add_argument('--from', dest='source', default='synthetic',
                      help="a folder with vi/ and ir/ (e.g. ../shared/datasets/llvip_train), "
                           "or 'synthetic' (default)")
    make.add_argument('--frames', type=int, default=30, help='number of pairs (default 30)')
    make.add_argument('--size', type=parse_size, help='WIDTHxHEIGHT (synthetic: 640x512)')
    make.add_argument('--night-only', action='store_true', help='only the night pairs')
    make.add_argument('--rate', type=float, default=10.0, help='camera rate in Hz')
    make.add_argument('--ir-offset-ms', type=float, default=4.0,
                      help='infrared stamp offset in ms (free-running cameras)')
    make.add_argument('--jitter-ms', type=float, default=0.5, help='stamp jitter (sigma, ms)')
    make.add_argument('--thermal-bits', type=int, choices=(8, 16), default=8,
                      help='synthetic infrared: mono8 or radiometric mono16')
    make.add_argument('--compressed', action='store_true',
                      help='CompressedImage on <topic>/compressed (JPEG visible, PNG infrared)')
    make.add_argument('--visible-topic', default=bagio.VISIBLE_TOPIC)
    make.add_argument('--infrared-topic', default=bagio.INFRARED_TOPIC)
    make.add_argument('--visible-frame-id', default=bagio.VISIBLE_FRAME_ID)
    make.add_argument('--infrared-frame-id', default=bagio.INFRARED_FRAME_ID)
    make.add_argument('--reliability', choices=('reliable', 'best_effort'), default='reliable',
                      help='offered QoS recorded in the bag (camera driver)')
    make.add_argument('--depth', type=int, default=10, help='offered QoS history depth')
    make.add_argument('--seed', type=int, default=0)
    make.set_defaults(handler=make_command)

    info = commands.add_parser('info', help='topics, types, counts, rates, duration')
    info.add_argument('bag')
    info.add_argument('--json', action='store_true', help='machine-readable output')
    info.set_defaults(handler=info_command)

    reindex = commands.add_parser(
        'reindex', help='rebuild a bag whose recording was cut short (no metadata.yaml)')
    reindex.add_argument('bag')
    reindex.set_defaults(handler=reindex_command)

    play = commands.add_parser('play', help='publish a bag over DDS with its timing')
    play.add_argument('bag')
    play.add_argument('--rate', type=float, default=1.0, help='speed factor')
    play.add_argument('--loop', action='store_true', help='play again and again')
    play.add_argument('--loops', type=int, default=0, help='play this many times (with --loop)')
    play.add_argument('--start', '--start-offset', type=float, default=0.0,
                      help='start this many seconds into the bag')
    play.add_argument('--topics', nargs='+', help='only these topics')
    play.add_argument('--remap', nargs='+', metavar='FROM:=TO', help='topic remappings')
    play.add_argument('--clock', type=float, nargs='?', const=40.0, default=0.0,
                      help='publish /clock at this rate in Hz (default 40) for use_sim_time')
    play.add_argument('--reliability', choices=('reliable', 'best_effort', 'recorded'),
                      default='reliable',
                      help='publisher QoS; reliable (default) matches every subscriber')
    play.add_argument('--wait-for-subscribers', type=int, default=0, metavar='N',
                      help='wait until every topic has N subscribers before playing')
    play.add_argument('--wait-timeout', type=float, default=10.0, help='seconds to wait')
    play.add_argument('--delay', type=float, default=0.0, help='seconds to sleep before playing')
    play.add_argument('--pace', metavar='OUTPUT_TOPIC',
                      help='lockstep: hold each --pace-trigger frame until the graph has '
                           'published on OUTPUT_TOPIC (e.g. /detections) for all but '
                           '--pace-lag earlier frames; nothing is dropped on a slow machine')
    play.add_argument('--pace-trigger', default=bagio.VISIBLE_TOPIC,
                      help='the input topic with one message per pair')
    play.add_argument('--pace-lag', type=int, default=1,
                      help='outputs allowed in flight (1: the synchroniser holds one pair)')
    play.set_defaults(handler=play_command)

    record = commands.add_parser('record', help='record topics raw into a bag (Ctrl-C stops)')
    record.add_argument('topics', nargs='+')
    record.add_argument('-o', '--output', required=True, help='bag directory to write')
    record.add_argument('--duration', type=float, default=0.0, help='stop after N seconds')
    record.add_argument('--log-every', type=int, default=0, metavar='N',
                        help='print the count each time N more messages were recorded')
    record.set_defaults(handler=record_command)

    process = commands.add_parser('process', help='offline fusion + detection over a bag')
    process.add_argument('bag')
    process.add_argument('-o', '--output', help='output bag (inputs + fused + detections)')
    process.add_argument('--model', help="fusion weights (default: the YAML's model_path)")
    process.add_argument('--detector', help='YOLO weights (.pt/.onnx); omit for fusion only')
    process.add_argument('--allow-unsafe-checkpoint', action='store_true',
                         help='load a --detector file that needs full pickle (it can run code)')
    process.add_argument('--params-file',
                         help="the nodes' YAML every setting below defaults to (default: the "
                              "package's config/ivf_ros.yaml, as the live graph)")
    process.add_argument('--device', help='auto | cpu | cuda[:N] (default: the YAML)')
    process.add_argument('--conf', type=float, help='detection confidence (default: the YAML)')
    process.add_argument('--iou', type=float, help='NMS IoU (default: the YAML)')
    process.add_argument('--imgsz', type=int, help='detector input size (default: the YAML)')
    process.add_argument('--classes', nargs='+', help='keep only these class names')
    process.add_argument('--slop', type=float, help='pairing tolerance [s] (default: the YAML)')
    process.add_argument('--queue-size', type=int, help='default: the YAML')
    process.add_argument('--visible-topic', default=bagio.VISIBLE_TOPIC)
    process.add_argument('--infrared-topic', default=bagio.INFRARED_TOPIC)
    process.add_argument('--fused-topic', default=FUSED_TOPIC)
    process.add_argument('--detections-topic', default=DETECTIONS_TOPIC)
    process.add_argument('--annotated-topic', default=ANNOTATED_TOPIC)
    process.add_argument('--outputs-only', action='store_true',
                         help='do not copy the input topics into the output bag')
    process.add_argument('--mp4', help='also write the (annotated) fused video here')
    process.add_argument('--png-dir', help='also write every fused frame as PNG here')
    process.add_argument('--json', action='store_true', help='print the summary as JSON')
    process.set_defaults(handler=process_command)

    for sub in (make, record, process):
        sub.add_argument('--storage', choices=tuple(bagio.STORAGES), default='sqlite3')
        sub.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    for sub in (make, process):
        sub.add_argument('-q', '--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ivf-bag`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # ROS arguments (--ros-args ... ) pass through to rclpy for play/record.
    ros_args: list[str] = []
    if '--ros-args' in argv:
        index = argv.index('--ros-args')
        argv, ros_args = argv[:index], argv[index + 1:]
    args = build_parser().parse_args(argv)
    args.ros_args = ros_args
    try:
        return args.handler(args)
    except (BagError, ImageFormatError, ValueError, OSError, RuntimeError) as error:
        # RuntimeError: ModelLoadError, DetectorLoadError (missing or unreadable weights).
        print(f'ivf-bag {args.command}: error: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        return interrupted_exit_code(interrupt)


if __name__ == '__main__':
    sys.exit(main())
