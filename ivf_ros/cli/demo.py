"""`ivf-demo`: a night drive through the live fusion + detection graph, offline, in minutes."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import cv2
import numpy as np

from ivf_ros.cli.bag import ANNOTATED_TOPIC, DETECTIONS_TOPIC, FUSED_TOPIC, parse_size
from ivf_ros.cli.help import interrupted_exit_code
from ivf_ros.io import bagio
from ivf_ros.io.bagio import BagReader, INFRARED_TOPIC, VISIBLE_TOPIC
from ivf_ros.io.datasets import DatasetError, list_pairs
from ivf_ros.io.image_codec import ImageFormatError, to_mono8, to_rgb8
from ivf_ros.io.paths import datasets_dir, share_file, shared_dir

ENHANCED_TOPIC = '/enhanced/image'
DIAGNOSTICS_TOPIC = '/diagnostics'
NAMED_SIZES = {'small': (160, 128), 'vga': (640, 512)}
NIGHT_DRIVE = 'llvip_train'  # 32 consecutive-looking night frames of one LLVIP street scene
SHARED_YOLO = ('weights', 'yolo11n', 'yolo11n-rebuilt.pt')
GET_WEIGHTS = (
    'No detector weights, so this demo shows the fusion only.\n'
    '  To add detection, get COCO YOLO11n weights (AGPL-3.0, Ultralytics) online, once:\n'
    '    python -c "from ultralytics import YOLO; YOLO(\'yolo11n.pt\')"   # downloads yolo11n.pt\n'
    '  or https://github.com/ultralytics/assets/releases (yolo11n.pt), then run\n'
    '    ivf-demo --detector /path/to/yolo11n.pt')
TILE_WIDTH = 256
FATAL = 'cannot load'  # what a node logs when its model cannot be loaded
# Written into --output: a later run replaces only a folder that carries it (or an empty one).
MARKER = '.ivf-demo'
# Everything run_demo writes into --output (what a rerun removes, and nothing else).
OUTPUTS = ('contact_sheet.png', 'night_drive.gif', 'night_drive.mp4', 'detections.json',
           'latency.json', 'summary.json', 'summary.md', 'evaluation', 'logs', 'night_drive',
           'live_outputs', 'free_run', MARKER)


class DemoError(RuntimeError):
    """The demo cannot go on (a child process died, no data, bad option)."""


@dataclass
class LiveRun:
    """What came back from the live graph, keyed by the visible header stamp."""

    visible: dict[int, np.ndarray] = field(default_factory=dict)
    infrared: dict[int, np.ndarray] = field(default_factory=dict)
    fused: dict[int, np.ndarray] = field(default_factory=dict)
    enhanced: dict[int, np.ndarray] = field(default_factory=dict)
    annotated: dict[int, np.ndarray] = field(default_factory=dict)
    detections: dict[int, list[bagio.BoxDetection]] = field(default_factory=dict)
    received_ns: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> stamp -> t
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ inputs
def night_drive(source: str, frames: int, size: tuple[int, int],
                seed: int) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]], str]:
    """Return (pairs, description): the shared night scene when present, else synthetic."""
    folder = datasets_dir() / NIGHT_DRIVE if source == 'auto' else Path(source).expanduser()
    if source != 'synthetic' and (folder / 'vi').is_dir():
        # A folder with fewer pairs than --frames plays all it has: say so, not --frames.
        available = len(list_pairs(folder))
        if available < 2:   # as --frames: one pair is no drive (no rate, no latency)
            raise DemoError(f'{folder} has {available} pair(s); the demo needs at least 2')
        count = min(frames, available)
        fewer = f'; all there are, --frames asked {frames}' if available < frames else ''
        return (bagio.folder_pairs(folder, count, size),
                f'{count} night pairs of {folder.name} (resized to {size[0]}x{size[1]}{fewer})')
    if source not in ('auto', 'synthetic'):
        raise DemoError(f'no paired images (vi/ and ir/) in {folder}')
    # Why synthetic: asked for, or the fallback (only then is the data set missing).
    why = ('--source synthetic' if source == 'synthetic'
           else f'no ../shared/datasets/{NIGHT_DRIVE} here')
    return (bagio.synthetic_pairs(frames, size[0], size[1], seed),
            f'{frames} synthetic night frames ({size[0]}x{size[1]}, ivf_ros.io.synthetic; '
            f'{why})')


def resolve_detector(option: str) -> tuple[Path | None, str]:
    """Return (weights or None, what to tell the user)."""
    if option == 'none':
        return None, 'detection switched off (--detector none)'
    if option == 'auto':
        path = shared_dir().joinpath(*SHARED_YOLO)
        if path.is_file():
            return path, f'detector: {path} (COCO YOLO11n, AGPL-3.0, used in place)'
        return None, GET_WEIGHTS
    path = Path(option).expanduser()
    if not path.is_file():
        raise DemoError(f'detector weights {path} do not exist')
    path = path.resolve()  # the graph is another process: give it no relative path
    return path, f'detector: {path}'


def resolve_model(option: str | None) -> str | None:
    """Return the fusion weights as an absolute path (None: the shipped ones); check they exist."""
    if not option:
        return None
    path = Path(option).expanduser()
    if not path.is_file():
        # Checked here: the graph would only say so after loading, in a multi-line log tail.
        raise DemoError(f'fusion weights {path} (--model) do not exist')
    return str(path.resolve())


def prepare_output(output: Path) -> None:
    """Create an empty output folder, replacing only a previous demo's output."""
    if output.exists() and not output.is_dir():
        raise DemoError(f'--output {output} is a file, not a folder')
    if output.is_dir() and any(output.iterdir()):
        # Older demos wrote no marker: their logs and input bag identify them.
        previous = ((output / MARKER).is_file()
                    or ((output / 'logs' / 'graph.log').is_file()
                        and (output / 'night_drive').is_dir()))
        if not previous:
            raise DemoError(f'--output {output} exists and is not an ivf-demo output folder; '
                            'choose a new or empty folder')
        # Remove what a demo writes, never anything else the user put there.
        for name in OUTPUTS:
            entry = output / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    try:
        (output / 'logs').mkdir(parents=True, exist_ok=True)
        (output / MARKER).write_text('written by ivf-demo: a rerun may replace this folder\n')
    except OSError as error:
        raise DemoError(f'cannot write to --output {output}: {error.strerror}') from None


# ------------------------------------------------------------------------------- processes
def ros_environment() -> dict[str, str]:
    """Return the environment for the graph and recorder: isolated, loopback, large images."""
    env = dict(os.environ)
    # A private domain unless the user chose one (e.g. to watch the demo in RViz).
    env.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    profile = share_file('config', 'fastdds_large_images.xml')
    if profile.is_file():
        env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    env.setdefault('YOLO_OFFLINE', '1')
    env.setdefault('YOLO_AUTOINSTALL', '0')
    return env


class Child:
    """A child process whose output goes to a log file (and is watched for a line)."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self.lines: list[str] = []
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with self.log.open('w') as stream:
            for line in self.process.stdout:  # type: ignore[union-attr]
                self.lines.append(line)
                stream.write(line)
                stream.flush()

    def wait_for(self, prefix: str, timeout_s: float, others: Sequence[Child] = ()) -> None:
        """Wait for an output line starting with prefix; fail if a watched process dies/fails."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(line.startswith(prefix) for line in self.lines):
                return
            for child in (self, *others):
                if child.process.poll() is not None:
                    raise DemoError(f'{child.name} exited ({child.process.returncode}):\n'
                                    + child.tail())
                # A node whose configure failed stays alive but never publishes.
                if any(FATAL in line for line in child.lines):
                    raise DemoError(f'{child.name} failed:\n{child.tail()}')
            time.sleep(0.1)
        raise DemoError(f'{self.name} not ready after {timeout_s:.0f} s:\n{self.tail()}')

    def tail(self, lines: int = 15) -> str:
        """Return the last lines of the output."""
        return ''.join(self.lines[-lines:])

    def stop(self, timeout_s: float = 20.0) -> int:
        """Send SIGINT (a clean ROS shutdown), then kill after timeout_s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode


def check_recorder(recorder: Child, warnings: list[str]) -> None:
    """Stop a recorder; note in warnings when it did not write all it received."""
    code = recorder.stop()
    # ivf-bag record exits 1 when a received message was not written (or nothing came).
    if code not in (0, None):
        summary = [line.strip() for line in recorder.lines if line.lstrip().startswith(
            ('received ', '/'))]
        warnings.append(f'{recorder.name} ({recorder.log.name}) exited {code}: '
                        + '; '.join(summary[-6:]))


def graph_command(model: str | None, detector: Path | None, device: str,
                  imgsz: int) -> list[str]:
    """Return the ivf-graph command wired to the bag's cameras, publishing enhanced images."""
    command = [sys.executable, '-m', 'ivf_ros.nodes.graph']
    if detector is None:
        command += ['--nodes', 'fusion_node']
    command += ['--ros-args', '-r', f'visible/image_raw:={VISIBLE_TOPIC}',
                '-r', f'infrared/image_raw:={INFRARED_TOPIC}',
                '-p', 'fusion_node:publish_enhanced:=true', '-p', f'fusion_node:device:={device}']
    if model:
        command += ['-p', f'fusion_node:model_path:={model}']
    if detector is not None:
        command += ['-p', f'detection_node:model:={detector}',
                    '-p', f'detection_node:device:={device}',
                    '-p', f'detection_node:imgsz:={imgsz}']
    return command


# ---------------------------------------------------------------------------------- analysis
def read_live_run(input_bag: Path, output_bag: Path) -> LiveRun:
    """Load the played inputs and the recorded outputs, keyed by visible header stamp."""
    run = LiveRun()
    with BagReader(input_bag) as reader:
        for frame in reader.frames(VISIBLE_TOPIC):
            run.visible[frame.stamp_ns] = to_rgb8(frame.array, frame.encoding)
        infrared = [to_mono8(frame.array, frame.encoding)
                    for frame in reader.frames(INFRARED_TOPIC)]
    # The n-th infrared frame belongs to the n-th visible frame (a few ms apart).
    run.infrared = dict(zip(run.visible, infrared, strict=False))
    images = {FUSED_TOPIC: run.fused, ENHANCED_TOPIC: run.enhanced, ANNOTATED_TOPIC: run.annotated}
    with BagReader(output_bag) as reader:
        for message in reader.messages():
            decoded = reader.decode(message)
            if message.topic == DIAGNOSTICS_TOPIC:
                for status in decoded.status:
                    run.diagnostics[status.name] = {v.key: v.value for v in status.values}
                continue
            stamp = bagio.join_stamp(decoded.header.stamp)
            run.received_ns.setdefault(message.topic, {})[stamp] = message.log_time_ns
            if message.topic in images:
                frame = bagio.frame_from_message(decoded)
                images[message.topic][stamp] = to_rgb8(frame.array, frame.encoding)
            elif message.topic == DETECTIONS_TOPIC:
                run.detections[stamp] = bagio.detections_from_message(decoded)
    return run


def _percentiles(values: list[float]) -> dict[str, float]:
    """Return p50, p95 and max of values (ms), rounded; {} for none."""
    if not values:
        return {}
    return {'p50': round(float(np.percentile(values, 50)), 1),
            'p95': round(float(np.percentile(values, 95)), 1),
            'max': round(float(np.max(values)), 1)}


def free_running_summary(output_bag: Path, sent: Mapping[str, Iterable[tuple[int, int]]],
                         input_bag: Path, output_topic: str) -> dict[str, Any]:
    """Return throughput and camera->output latency of a run at the camera rate."""
    with BagReader(input_bag) as reader:
        log_to_stamp = {m.log_time_ns: bagio.join_stamp(reader.decode(m).header.stamp)
                        for m in reader.messages([VISIBLE_TOPIC])}
    published = {log_to_stamp[log]: wall for log, wall in sent.get(VISIBLE_TOPIC, [])}
    received: dict[int, int] = {}
    if output_bag.is_dir():
        with BagReader(output_bag) as reader:
            for message in reader.messages([output_topic]):
                stamp = bagio.join_stamp(reader.decode(message).header.stamp)
                received.setdefault(stamp, message.log_time_ns)
    # Counted before the last pair is left out below: it was not dropped.
    outputs = len(received)
    dropped = len(set(published) - set(received))
    # The bag's last pair has no later frame: it waits for fusion_node's idle flush (1 s) by
    # design, which says nothing about the graph's speed: left out of both numbers.
    if published and max(published) in received and len(received) > 2:
        del received[max(published)]
    times = sorted(received.values())
    span = (times[-1] - times[0]) / 1e9 if len(times) > 1 else 0.0
    latency = [(received[stamp] - published[stamp]) / 1e6 for stamp in received
               if stamp in published]
    return {'outputs_received': outputs, 'pairs_played': len(published), 'dropped': dropped,
            'throughput_fps': round((len(times) - 1) / span, 2) if span > 0 else 0.0,
            'latency_ms': _percentiles(latency)}


def latency_summary(run: LiveRun, sent: Mapping[str, Iterable[tuple[int, int]]],
                    input_bag: Path, output_topic: str) -> dict[str, Any]:
    """Return FPS and latency numbers of the live run (wall clock, this machine)."""
    # Wall time each visible frame went out, by its header stamp.
    with BagReader(input_bag) as reader:
        log_to_stamp = {m.log_time_ns: bagio.join_stamp(reader.decode(m).header.stamp)
                        for m in reader.messages([VISIBLE_TOPIC])}
    published = {log_to_stamp[log]: wall for log, wall in sent.get(VISIBLE_TOPIC, [])}
    order = sorted(published)
    received = run.received_ns.get(output_topic, {})
    # From the frame's own publication: once the camera rate is learned the synchroniser
    # releases a pair when its second frame arrives (not one frame later).
    processing = [(received[stamp] - published[stamp]) / 1e6 for stamp in order[:-1]
                  if stamp in received]
    times = sorted(received.values())
    span = (times[-1] - times[0]) / 1e9 if len(times) > 1 else 0.0
    stats = _percentiles
    return {
        'pairs_played': len(order), 'outputs_received': len(received),
        'dropped': len(set(order) - set(received)), 'output_topic': output_topic,
        'throughput_fps': round((len(times) - 1) / span, 2) if span > 0 else 0.0,
        'latency_ms_lockstep': stats(processing),
        'graph_diagnostics': run.diagnostics,
    }


# ------------------------------------------------------------------------------------ pictures
def _tile(image: np.ndarray, width: int = TILE_WIDTH) -> np.ndarray:
    """Return an RGB tile of the given width (grey images become RGB)."""
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    height = round(rgb.shape[0] * width / rgb.shape[1])
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _label(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.5,
           colour: tuple[int, int, int] = (235, 235, 235)) -> None:
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def contact_sheet(run: LiveRun, stamps: list[int], path: Path, note: str = '',
                  detector: bool = True) -> None:
    """Write visible | infrared | enhanced | fused | detections for a few frames as one PNG."""
    columns = ['visible (night)', 'infrared', 'enhanced visible', 'fused', 'detections']
    first = min(run.visible)
    rows = []
    for stamp in stamps:
        fused = run.fused[stamp]
        detections = run.annotated.get(stamp)
        if detections is None:
            detections = _tile(fused).copy()
            # With a detector running, a missing annotated frame was dropped: not "no weights".
            missing = 'no annotated frame' if detector else 'no detector weights'
            _label(detections, missing, (8, 20), 0.45, (255, 200, 80))
        else:
            detections = _tile(detections).copy()
            count = len(run.detections.get(stamp, []))
            _label(detections, f'{count} detection{"" if count == 1 else "s"}',
                   (8, detections.shape[0] - 8), 0.45, (255, 255, 0))
        tiles = [_tile(run.visible[stamp]), _tile(run.infrared[stamp]),
                 _tile(run.enhanced.get(stamp, np.zeros_like(fused))), _tile(fused),
                 _tile(detections)]
        row = np.concatenate([np.pad(tile, ((0, 0), (0, 4), (0, 0))) for tile in tiles], 1)
        margin = np.full((row.shape[0], 70, 3), 24, np.uint8)
        _label(margin, f't={(stamp - first) / 1e9:.1f}s', (4, row.shape[0] // 2), 0.45)
        rows.append(np.concatenate([margin, row], 1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 24, np.uint8))
    body = np.concatenate(rows, 0)
    header = np.full((56, body.shape[1], 3), 24, np.uint8)
    _label(header, 'ivf_ros live graph: fusion_node + detection_node, replayed from a rosbag2',
           (8, 20), 0.55, (255, 255, 255))
    for index, name in enumerate(columns):
        _label(header, name, (70 + index * (TILE_WIDTH + 4) + 4, 46), 0.5)
    sheet = np.concatenate([header, body], 0)
    if note:
        footer = np.full((28, sheet.shape[1], 3), 24, np.uint8)
        _label(footer, note, (8, 19), 0.45, (255, 200, 80))
        sheet = np.concatenate([sheet, footer], 0)
    cv2.imwrite(str(path), sheet[:, :, ::-1])


def animation_frames(run: LiveRun, stamps: list[int]) -> Iterator[np.ndarray]:
    """Yield visible | infrared | fused-with-detections strips (RGB)."""
    for stamp in stamps:
        result = run.annotated.get(stamp, run.fused[stamp])
        strip = np.concatenate([_tile(run.visible[stamp], 320), _tile(run.infrared[stamp], 320),
                                _tile(result, 320)], 1)
        fused = 'ivf_ros fused + detections' if stamp in run.annotated else 'ivf_ros fused'
        for index, name in enumerate(['visible', 'infrared', fused]):
            _label(strip, name, (6 + 320 * index, 18), 0.5, (255, 255, 0))
        yield strip


def write_animation(run: LiveRun, stamps: list[int], gif: Path, mp4: Path,
                    fps: float) -> None:
    """Write the strips as a looping GIF and an MP4 (MPEG-4 part 2)."""
    from PIL import Image

    frames = list(animation_frames(run, stamps))
    if not frames:
        return
    images = [Image.fromarray(frame).quantize(colors=192, method=Image.Quantize.MEDIANCUT)
              for frame in frames]
    images[0].save(gif, save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0, optimize=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    for frame in frames:
        writer.write(frame[:, :, ::-1])
    writer.release()


def write_detections_json(run: LiveRun, path: Path) -> int:
    """Write every frame's detections (pixels of the fused image) as JSON; return the count."""
    first = min(run.visible)
    frames = [{'stamp_ns': stamp, 'time_s': round((stamp - first) / 1e9, 3),
               'detections': [{'class': box.class_id, 'score': round(box.score, 4),
                               'bbox_center_size_px': [round(box.cx, 1), round(box.cy, 1),
                                                       round(box.width, 1),
                                                       round(box.height, 1)]}
                              for box in boxes]}
              for stamp, boxes in sorted(run.detections.items())]
    path.write_text(json.dumps({'frame_id': bagio.VISIBLE_FRAME_ID, 'frames': frames},
                               indent=1))
    return sum(len(frame['detections']) for frame in frames)


def evaluate(run: LiveRun, stamps: list[int], folder: Path, progress: bool) -> Path:
    """Score the live fused images against the classical baselines (engineer C's report)."""
    from ivf_ros.evaluation.baselines import BASELINES
    from ivf_ros.evaluation.report import evaluate_methods, resolve_method, write_report
    from ivf_ros.io.datasets import list_pairs

    pairs_dir, fused_dir = folder / 'pairs', folder / 'ivf_ros_live'
    for sub in (pairs_dir / 'vi', pairs_dir / 'ir', fused_dir):
        sub.mkdir(parents=True, exist_ok=True)
    first = min(run.visible)
    for stamp in stamps:
        name = f'frame_{(stamp - first) // 1_000_000:06d}ms.png'
        cv2.imwrite(str(pairs_dir / 'vi' / name), run.visible[stamp][:, :, ::-1])
        cv2.imwrite(str(pairs_dir / 'ir' / name), run.infrared[stamp])
        cv2.imwrite(str(fused_dir / name), run.fused[stamp][:, :, ::-1])
    methods = [resolve_method(f'ivf_ros={fused_dir}')]
    methods += [resolve_method(name) for name in BASELINES]
    evaluation = evaluate_methods(list_pairs(pairs_dir), methods, example_count=3,
                                  progress=progress)
    paths = write_report(
        evaluation, folder, title='ivf_ros (live graph) vs classical fusion baselines',
        command='ivf-demo', data_description='Frames of the demo night drive as the live '
                                             'graph fused them.')
    return paths['report']


def evenly(items: list[int], count: int) -> list[int]:
    """Return count items spread over the list (all when fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[int(index)] for index in np.linspace(0, len(items) - 1, count)]


# ------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the demo options."""
    parser = argparse.ArgumentParser(prog='ivf-demo', description=__doc__)
    parser.add_argument('--output', type=Path, default=Path('output/demo'),
                        help='folder for the pictures, video, JSON and reports')
    parser.add_argument('--frames', type=int, default=24, help='pairs in the night drive')
    parser.add_argument('--size', default='vga',
                        help="'small' (160x128), 'vga' (640x512, default) or WIDTHxHEIGHT")
    parser.add_argument('--source', default='auto',
                        help="'auto' (../shared/datasets/llvip_train, else synthetic), "
                             "'synthetic', or a folder with vi/ and ir/")
    parser.add_argument('--detector', default='auto',
                        help="YOLO weights; 'auto' uses ../shared/weights/yolo11n when present; "
                             "'none' for fusion only")
    parser.add_argument('--model', help='fusion weights (default: the shipped ones)')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda[:N]')
    parser.add_argument('--imgsz', type=int, default=640, help='detector input size')
    parser.add_argument('--rate', type=float, default=10.0, help='camera rate of the drive (Hz)')
    parser.add_argument('--realtime', action='store_true',
                        help='play at the camera rate and let a slow graph drop frames '
                             '(default: lockstep, every pair processed)')
    parser.add_argument('--eval-frames', type=int, default=6,
                        help='frames scored against the baselines (metrics are slow on CPU)')
    parser.add_argument('--sheet-frames', type=int, default=4, help='rows of the contact sheet')
    parser.add_argument('--startup-timeout', type=float, default=300.0,
                        help='seconds to wait for the graph to load its models')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('-q', '--quiet', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    try:
        args.size = NAMED_SIZES.get(args.size) or parse_size(args.size)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.frames < 2:
        parser.error('--frames must be at least 2')
    # Checked here, not after minutes of live graph (they would end in a traceback).
    for name in ('eval_frames', 'sheet_frames', 'imgsz'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    for name in ('rate', 'startup_timeout'):
        if not getattr(args, name) > 0:  # NaN too
            parser.error(f'--{name.replace("_", "-")} must be positive')
    return args


def say(text: str) -> None:
    """Print a progress line at once."""
    print(text, flush=True)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole demo; return the summary written to summary.json."""
    from tqdm import tqdm

    from ivf_ros.nodes.bag_player import Pacing, play_bag

    started = time.perf_counter()
    output: Path = args.output
    # Every option is checked before the output folder is touched.
    pairs, description = night_drive(args.source, args.frames, args.size, args.seed)
    detector, detector_note = resolve_detector(args.detector)
    model = resolve_model(args.model)
    prepare_output(output)
    logs = output / 'logs'
    warnings: list[str] = []
    say(f'[1/5] night drive: {description}')
    input_bag = output / 'night_drive'
    with tqdm(total=args.frames, desc='bag', unit='pair', disable=args.quiet) as bar:
        bagio.write_pairs(input_bag, pairs, stamps=bagio.StampModel(rate_hz=args.rate),
                          progress=bar)
        bar.total = bar.n   # a folder with fewer pairs than --frames: the bar ends full
        bar.refresh()
    say(bagio.format_info(bagio.bag_info(input_bag)))
    say(f'[2/5] {detector_note}')

    env = ros_environment()
    os.environ.update(env)  # the player runs in this process
    output_topic = DETECTIONS_TOPIC if detector else FUSED_TOPIC
    topics = [FUSED_TOPIC, ENHANCED_TOPIC, DIAGNOSTICS_TOPIC]
    if detector:
        topics += [DETECTIONS_TOPIC, ANNOTATED_TOPIC]
    graph = Child('ivf-graph', graph_command(model, detector, args.device, args.imgsz),
                  logs / 'graph.log', env)
    output_bag = output / 'live_outputs'
    recorder = Child('ivf-bag record',
                     [sys.executable, '-m', 'ivf_ros.cli.bag', 'record', *topics, '-o',
                      str(output_bag)], logs / 'record.log', env)
    try:
        say(f'[3/5] starting the live graph (ivf-graph, ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}) '
            'and the recorder; loading the models ...')
        recorder.wait_for('recording ', args.startup_timeout, others=[graph])
        mode = 'at the camera rate' if args.realtime else 'in lockstep with the graph'
        say(f'[4/5] playing the bag {mode} (ivf-bag play) ...')
        pacing = None if args.realtime else Pacing(output_topic, VISIBLE_TOPIC, lag=1)
        play_started = time.perf_counter()
        stats = play_bag(input_bag, wait_for_subscribers=1, wait_timeout_s=30.0,
                         pacing=pacing)
        play_s = time.perf_counter() - play_started
        # The last processed pair is still in flight, and the very last pair waits for a next
        # frame that never comes until fusion_node's idle_flush (1 s of quiet) emits it.
        time.sleep(2.5 + min(10.0, 2.0 * play_s / max(1, args.frames)))
        check_recorder(recorder, warnings)
        free_sent = stats.sent
        if not args.realtime:
            # Lockstep measures 1 / latency; the graph's throughput shows only when the camera
            # does not wait for it: once more at the camera rate, outputs recorded on their own.
            say('      ... and once more at the camera rate, for throughput and latency')
            free = Child('ivf-bag record',
                         [sys.executable, '-m', 'ivf_ros.cli.bag', 'record', output_topic, '-o',
                          str(output / 'free_run')], logs / 'record_free_run.log', env)
            try:
                free.wait_for('recording ', args.startup_timeout, others=[graph])
                free_sent = play_bag(input_bag, wait_for_subscribers=1, wait_timeout_s=30.0).sent
                time.sleep(2.5)
            finally:
                check_recorder(free, warnings)
    finally:
        recorder.stop()
        graph.stop()
    say(f'[5/5] writing pictures and reports to {output}')
    run = read_live_run(input_bag, output_bag)
    stamps = sorted(stamp for stamp in run.fused if stamp in run.visible)
    if not stamps:
        raise DemoError('the live graph produced no fused image; see '
                        f'{logs / "graph.log"}:\n{graph.tail()}')
    note = '' if detector else 'no detector weights: fusion only (see summary.md)'
    contact_sheet(run, evenly(stamps, args.sheet_frames), output / 'contact_sheet.png', note,
                  detector=detector is not None)
    write_animation(run, stamps, output / 'night_drive.gif', output / 'night_drive.mp4',
                    fps=min(args.rate, 10.0))
    detection_count = write_detections_json(run, output / 'detections.json')
    latency = latency_summary(run, stats.sent, input_bag, output_topic)
    latency.update({'play_seconds': round(play_s, 2), 'lockstep': not args.realtime,
                    'paced_wait_s': round(stats.paced_wait_s, 2),
                    'pace_timeouts': stats.pace_timeouts})
    free_bag = output_bag if args.realtime else output / 'free_run'
    latency['free_running'] = free_running_summary(free_bag, free_sent, input_bag, output_topic)
    if latency['dropped'] and not args.realtime:
        warnings.append(f'{latency["dropped"]} of {latency["pairs_played"]} pairs played in '
                        f'lockstep have no {output_topic} output')
    if stats.pace_timeouts:
        warnings.append(f'the lockstep player gave up waiting for the graph '
                        f'{stats.pace_timeouts} time(s)')
    latency['warnings'] = warnings
    (output / 'latency.json').write_text(json.dumps(latency, indent=2))
    report = evaluate(run, evenly(stamps, args.eval_frames), output / 'evaluation',
                      progress=not args.quiet)
    summary = {
        'source': description, 'detector': str(detector) if detector else None,
        'pairs_played': latency['pairs_played'], 'fused_received': len(run.fused),
        'dropped': latency['dropped'],
        'free_running_dropped': latency['free_running']['dropped'],
        'detection_messages': len(run.detections), 'detections': detection_count,
        'throughput_fps': latency['free_running'].get('throughput_fps', 0.0),
        'latency_ms_camera_to_output': latency['free_running'].get('latency_ms', {}),
        'lockstep_fps': latency['throughput_fps'],
        'latency_ms_lockstep': latency['latency_ms_lockstep'],
        'warnings': warnings,
        'seconds_total': round(time.perf_counter() - started, 1),
        'files': {name: str(output / name) for name in (
            'contact_sheet.png', 'night_drive.gif', 'night_drive.mp4', 'detections.json',
            'latency.json', 'evaluation/report.md', 'night_drive', 'live_outputs')},
    }
    (output / 'summary.json').write_text(json.dumps(summary, indent=2))
    write_summary_markdown(summary, latency, detector_note, report, output / 'summary.md')
    return summary


def write_summary_markdown(summary: dict[str, Any], latency: dict[str, Any],
                           detector_note: str, report: Path, path: Path) -> None:
    """Write summary.md: what ran, what came out, how fast."""
    lat = summary['latency_ms_lockstep']
    free = latency.get('free_running', {})
    free_lat = free.get('latency_ms', {})
    lines = [
        '# ivf_ros demo', '',
        f'- Data: {summary["source"]}.',
        f'- {detector_note}'.replace('\n', '\n  '),
        f'- Live graph: {summary["pairs_played"]} pairs played, {summary["fused_received"]} '
        f'fused images and {summary["detection_messages"]} Detection2DArray messages '
        f'recorded ({summary["detections"]} boxes).',
        f'- Free-running (bag played at the camera rate; a slow graph drops stale frames): '
        f'{free.get("outputs_received", 0)} of {free.get("pairs_played", 0)} pairs reached '
        f'{latency["output_topic"]} ({free.get("dropped", 0)} dropped), '
        f'{free.get("throughput_fps", 0.0)} FPS, latency from the camera frame to it '
        + (f'p50 {free_lat["p50"]} ms, p95 {free_lat["p95"]} ms.' if free_lat else 'n/a.'),
        (f'- Lockstep (each pair waits for the previous result: 1 / latency, not throughput): '
         f'{summary["lockstep_fps"]} FPS; camera frame to output '
         + (f'p50 {lat["p50"]} ms, p95 {lat["p95"]} ms' if lat else 'n/a')
         + f'; {latency["dropped"]} of {latency["pairs_played"]} pairs without output.')
        if latency['lockstep'] else '- (no lockstep pass: --realtime)',
        *(f'- Warning: {warning}' for warning in summary.get('warnings', [])), '',
        '![contact sheet](contact_sheet.png)', '', '![night drive](night_drive.gif)', '',
        f'Fusion quality vs classical baselines: [{report.relative_to(path.parent)}]'
        f'({report.relative_to(path.parent)}).', '',
        'Bags: `night_drive/` (input, `ivf-bag info night_drive`) and `live_outputs/` '
        '(what the graph published, recorded raw).', '',
    ]
    path.write_text('\n'.join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ivf-demo`."""
    args = parse_args(argv)
    try:
        summary = run_demo(args)
    except (DemoError, bagio.BagError, DatasetError, ImageFormatError, OSError) as error:
        print(f'ivf-demo: error: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        return interrupted_exit_code(interrupt)
    for warning in summary['warnings']:
        say(f'warning: {warning}')
    say(f'done in {summary["seconds_total"]} s: {summary["fused_received"]} fused frames of '
        f'{summary["pairs_played"]} pairs, {summary["throughput_fps"]} FPS at the camera rate '
        f'({summary["free_running_dropped"]} dropped); open {args.output / "summary.md"} and '
        f'{args.output / "contact_sheet.png"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
