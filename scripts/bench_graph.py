#!/usr/bin/env python3
"""
Benchmark the whole ROS graph (fusion_node + detection_node, ivf-graph) over real Fast DDS.

A camera node in this process publishes 640x512 synthetic night pairs stamped with the wall
clock; the graph runs in a child process. Phase 1 runs fusion_node with a model that costs
nothing: the node's own overhead (decode, sync, register, encode, publish; from /diagnostics, and
stamp-to-fused latency including DDS both ways). Phase 2 runs fusion_node with the network.
Phases 3 and 4 run the full graph, a process per node (as ros2 launch does) and in one ivf-graph
process: delivered detection FPS and camera-stamp-to-detection latency.
Prints numbers; asserts nothing.

    python scripts/bench_graph.py [--device auto] [--rate 10] [--seconds 20]
    python scripts/bench_graph.py --counts   # people/cars on the night pairs, COCO YOLO11n
    python scripts/bench_graph.py --device cuda:0 --half --rate 60   # the GPU check
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from benchlib import time_models_alone
import numpy as np
import yaml

from ivf_ros.io.paths import shared_dir

# A domain of its own per process, within 0-101: the IDs whose Fast DDS ports stay below
# Linux's ephemeral port range (120-219 reached into it).
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

REBUILT_YOLO = shared_dir() / 'weights' / 'yolo11n' / 'yolo11n-rebuilt.pt'
COUNTED = ('person', 'car')


def detector_weights() -> str:
    """Return the COCO yolo11n when ../shared has it, else the yolo11n architecture (random)."""
    return str(REBUILT_YOLO) if REBUILT_YOLO.is_file() else 'yolo11n.yaml'


def percentiles(values: list[float]) -> str:
    """Return 'p50 / p95' of values in ms."""
    if not values:
        return 'n/a'
    p50, p95 = np.percentile(np.asarray(values) * 1e3, [50, 95])
    return f'{p50:.1f} / {p95:.1f} ms'


class Camera:
    """Publishes visible/infrared pairs at a rate and records what comes back, with times."""

    def __init__(self, width: int, height: int) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray

        from ivf_ros.io.synthetic import make_night_pair
        from ivf_ros.nodes.ros_image import array_to_image_msg

        rclpy.init()
        self.node = Node('bench_camera')
        self._visible_pub = self.node.create_publisher(Image, 'visible/image_raw',
                                                       qos_profile_sensor_data)
        self._infrared_pub = self.node.create_publisher(Image, 'infrared/image_raw',
                                                        qos_profile_sensor_data)
        self.arrivals: dict[str, list[tuple[int, float]]] = {'fused': [], 'detections': []}
        self.status: dict[str, str] = {}
        self.node.create_subscription(Image, 'fused/image',
                                      lambda m: self._arrived('fused', m), 5)
        self.node.create_subscription(Detection2DArray, 'detections',
                                      lambda m: self._arrived('detections', m), 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.detections: dict[int, Any] = {}
        # Pre-built messages: generating scenes must not slow the camera down.
        self._frames = []
        for frame in range(10):
            pair = make_night_pair(seed=7, width=width, height=height, frame=frame)
            self._frames.append((array_to_image_msg(pair.visible, 'rgb8', _header(0)),
                                 array_to_image_msg(pair.infrared, 'mono8', _header(0))))
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
        self._spinner.start()

    def _arrived(self, key: str, msg: Any) -> None:
        now = time.time()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.arrivals[key].append((stamp, now))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith('fusion_node: fusion'):
                self.status = {kv.key: kv.value for kv in status.values}

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Poll predicate until true or timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def wait_for_subscribers(self, topic: str, count: int, timeout: float) -> bool:
        """Wait until topic has count subscriptions."""
        deadline = time.monotonic() + timeout
        while self.node.count_subscribers(topic) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def run(self, rate: float, seconds: float) -> tuple[list[int], float]:
        """Publish pairs stamped with the wall clock for seconds; return stamps and start."""
        sent, start, index = [], time.time(), 0
        next_time = time.monotonic()
        while time.time() - start < seconds:
            visible, infrared = self._frames[index % len(self._frames)]
            stamp = time.time_ns()
            visible.header = _header(stamp, 'visible_camera')
            infrared.header = _header(stamp, 'thermal_camera')
            self._visible_pub.publish(visible)
            self._infrared_pub.publish(infrared)
            sent.append(stamp)
            index += 1
            next_time += 1.0 / rate
            time.sleep(max(0.0, next_time - time.monotonic()))
        time.sleep(2.0)  # let the last frames come back
        return sent, start

    def close(self) -> None:
        """Shut down."""
        import rclpy

        self._executor.shutdown()
        self._spinner.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown()


def _header(stamp_ns: int, frame_id: str = '') -> Any:
    """Return a std_msgs/Header with a nanosecond stamp."""
    from std_msgs.msg import Header

    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


# ivf-graph with a model that costs nothing: what remains is the node's own overhead.
NULL_MODEL_GRAPH = """
import sys, numpy as np
from ivf_ros.fusion.inference import FusionResult
from ivf_ros.nodes import fusion_node, graph
class NullModel:
    device = 'null'
    def run(self, visible_rgb, infrared, with_enhanced=False):
        return FusionResult(fused=visible_rgb, weights=np.zeros(infrared.shape, np.float32),
                            enhanced=None)
fusion_node.load_fusion_model = lambda *args: NullModel()
sys.exit(graph.main(['ivf-graph', *sys.argv[1:]]))
"""


def start_graph(params: Path, nodes: list[str], log: Path, null_model: bool = False,
                no_fast_path: bool = False) -> subprocess.Popen:
    """Start ivf-graph in a child process (null_model: fusion without a network)."""
    program = ['-c', NULL_MODEL_GRAPH] if null_model else ['-m', 'ivf_ros.nodes.graph']
    extra = ['--no-fast-path'] if no_fast_path else []
    return subprocess.Popen(
        [sys.executable, *program, '--params-file', str(params), '--nodes', *nodes, *extra],
        stdout=log.open('w'), stderr=subprocess.STDOUT,
        env=dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM='0'))


def stop_graph(process: subprocess.Popen) -> None:
    """Ctrl-C the graph, kill it if it hangs."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def latencies(camera: Camera, key: str, warmup_s: float, start: float) -> list[float]:
    """Return stamp-to-arrival latencies [s] of arrivals after the warm-up."""
    return [arrival - stamp / 1e9 for stamp, arrival in camera.arrivals[key]
            if stamp / 1e9 > start + warmup_s]


def resolve_fusion_model(options: argparse.Namespace, folder: Path) -> None:
    """Replace --fusion-model fresh by untrained weights of the current architecture."""
    if options.fusion_model == 'fresh':
        # Same cost as trained weights; meaningless pictures.
        from ivf_ros.fusion.inference import save_weights
        from ivf_ros.fusion.model import IVFNet

        options.fusion_model = str(folder / 'fresh_fusion.pt')
        save_weights(IVFNet(), options.fusion_model)


def bench_graph(options: argparse.Namespace) -> None:
    """Time the models alone, run the phases, print the numbers and the issue's bars."""
    folder = Path(tempfile.mkdtemp(prefix='ivf_bench_'))
    params = folder / 'params.yaml'
    model = options.detector or detector_weights()
    resolve_fusion_model(options, folder)
    threads = {'threads': options.threads} if options.threads is not None else {}
    if options.half:  # fp16 on CUDA (the fusion network replays a CUDA graph)
        threads['half'] = True
    params.write_text(yaml.safe_dump({
        '/**/fusion_node': {'ros__parameters': {
            'device': options.device, 'model_path': options.fusion_model, **threads}},
        '/**/detection_node': {'ros__parameters': {
            'device': options.device, 'model': model, 'imgsz': 640,
            'publish_annotated': True, **threads}}}))
    alone = time_models_alone(options.width, options.height, options.device, model,
                              options.fusion_model or None)
    print('models alone in this run (medians; the faster thread count counts): ' + ', '.join(
        f'{key} {value:.1f}' for key, value in alone.items()))
    results: dict[int, dict[str, float]] = {}
    print(f'graph benchmark: {options.width}x{options.height} at {options.rate} Hz for '
          f'{options.seconds} s per phase, device {options.device}, detector {model}, '
          f'fusion {options.fusion_model or "shipped"}; logs in {folder}')
    camera = Camera(options.width, options.height)
    try:
        # Each phase: its processes (node lists), and whether the fusion network is nulled.
        phases = (('node overhead (null model)', [['fusion_node']], True),
                  ('fusion only', [['fusion_node']], False),
                  ('fusion + detection, a process each (as ros2 launch runs them)',
                   [['fusion_node'], ['detection_node']], False),
                  ('fusion + detection in one ivf-graph process',
                   [['fusion_node', 'detection_node']], False))
        for index, (phase, processes, null_model) in enumerate(phases):
            if options.phases and index + 1 not in options.phases:
                continue
            for key in camera.arrivals:
                camera.arrivals[key].clear()
            camera.status = {}
            graphs = [start_graph(params, nodes, folder / f'phase{index + 1}_{number}.log',
                                  null_model, options.no_fast_path)
                      for number, nodes in enumerate(processes)]
            detecting = any('detection_node' in nodes for nodes in processes)
            # In one ivf-graph process detection_node takes the fused array in-process.
            over_dds = detecting and (len(processes) > 1 or options.no_fast_path)
            try:
                # Ready: the new fusion_node reports (configured), both nodes subscribed.
                ready = (camera.wait_for(lambda: bool(camera.status), 180)
                         and camera.wait_for_subscribers('/visible/image_raw', 1, 60)
                         and camera.wait_for_subscribers('/fused/image', 1 + over_dds, 180)
                         and (not detecting or camera.wait_for(
                             lambda: camera.node.count_publishers('/detections') > 0, 180)))
                if not ready:
                    print(f'\n== {phase} ==\n  the graph did not start: see {folder}')
                    continue
                time.sleep(1.0)
                sent, start = camera.run(options.rate, options.seconds)
                time.sleep(max(options.diagnostics_wait, 0))
            finally:
                for graph in graphs:
                    stop_graph(graph)
            results[index + 1] = report(phase, camera, sent, start, options, detecting)
    finally:
        camera.close()
    print_bars(alone, results)


def print_bars(alone: dict[str, float], results: dict[int, dict[str, float]]) -> None:
    """Print the real-time bars of the graph against the models timed alone (ratios)."""
    budget_ms = alone['fusion_ms'] + alone['yolo_ms']
    ideal_fps = 1e3 / budget_ms
    print(f'\n== bars (1 / (fusion + YOLO) = {ideal_fps:.2f} FPS) ==')
    rows = []
    if 4 in results:
        fps = results[4].get('detections_fps', 0.0)
        rows.append(('ivf-graph detections FPS', f'{fps:.2f}', f'>= {0.9 * ideal_fps:.2f}',
                     fps >= 0.9 * ideal_fps))
        p50 = results[4].get('detections_p50_ms', float('nan'))
        limit = 1.3 * (budget_ms + alone['decode_ms'])
        rows.append(('ivf-graph camera->detections p50 [ms]', f'{p50:.1f}', f'<= {limit:.1f}',
                     p50 <= limit))
    if 3 in results:
        fps = results[3].get('detections_fps', 0.0)
        rows.append(('two processes detections FPS', f'{fps:.2f}', f'>= {0.75 * ideal_fps:.2f}',
                     fps >= 0.75 * ideal_fps))
    if 1 in results:
        overhead = results[1].get('overhead_p50_ms', float('nan'))
        rows.append(('node overhead p50 [ms]', f'{overhead:.2f}', '<= 5', overhead <= 5.0))
    for name, value, bar, met in rows:
        print(f'  {name:40s} {value:>9s}  bar {bar:>10s}  {"met" if met else "NOT met"}')


def report(phase: str, camera: Camera, sent: list[int], start: float,
           options: argparse.Namespace, detecting: bool) -> dict[str, float]:
    """Print one phase's numbers; return the ones the bars use."""
    warmup = options.warmup
    kept = [s for s in sent if s / 1e9 > start + warmup]
    span = max(options.seconds - warmup, 1e-9)
    fused = latencies(camera, 'fused', warmup, start)
    status = camera.status
    print(f'\n== {phase} ==')
    print(f'  sent pairs          : {len(kept)} ({len(kept) / span:.1f} Hz after {warmup} s '
          'warm-up)')
    print(f'  fused delivered     : {len(fused)} ({len(fused) / span:.2f} FPS), '
          f'stamp->fused p50/p95 {percentiles(fused)}')
    numbers = {'fused_fps': len(fused) / span}
    if detecting:
        detected = latencies(camera, 'detections', warmup, start)
        print(f'  detections delivered: {len(detected)} ({len(detected) / span:.2f} FPS), '
              f'stamp->detections p50/p95 {percentiles(detected)}')
        numbers['detections_fps'] = len(detected) / span
        if detected:
            numbers['detections_p50_ms'] = float(np.percentile(detected, 50) * 1e3)
    if status:
        print(f'  fusion_node model   : p50 {status.get("model p50 [ms]")} ms on '
              f'{status.get("device")}')
        print(f'  fusion_node overhead: p50 {status.get("overhead p50 [ms]")} ms, '
              f'p95 {status.get("overhead p95 [ms]")} ms (decode, sync, register, encode, '
              'publish)')
        print(f'  ... in CPU time     : p50 {status.get("overhead CPU p50 [ms]")} ms, '
              f'p95 {status.get("overhead CPU p95 [ms]")} ms (not counting waits for a core)')
        print(f'  dropped stale pairs : {status.get("dropped stale pairs")}, unmatched '
              f'{status.get("unmatched visible")}/{status.get("unmatched infrared")}, '
              f'publish errors {status.get("publish errors")}')
        numbers['overhead_p50_ms'] = float(status.get('overhead p50 [ms]', 'nan'))
        if fused:
            model_ms = float(status.get('model p50 [ms]', 'nan'))
            print(f'  stamp->fused minus model p50: '
                  f'{np.percentile(fused, 50) * 1e3 - model_ms:.1f} ms (adds DDS both ways)')
    return numbers


def count_objects(options: argparse.Namespace) -> None:
    """Count people and cars YOLO finds on the night pairs: visible, infrared and fused."""
    from tqdm import tqdm

    from ivf_ros.fusion.inference import FusionModel
    from ivf_ros.io.datasets import load_pair, night_pairs
    from ivf_ros.io.paths import datasets_dir
    from ivf_ros.pipeline.detector import YoloDetector

    root = datasets_dir()
    if not REBUILT_YOLO.is_file() or not root.is_dir():
        print(f'--counts needs {REBUILT_YOLO} and {root}')
        return
    from ivf_ros.evaluation.baselines import BASELINES

    pairs = night_pairs(root)
    resolve_fusion_model(options, Path(tempfile.mkdtemp(prefix='ivf_counts_')))
    detector = YoloDetector(REBUILT_YOLO, conf=options.conf, imgsz=640, classes=list(COUNTED),
                            device=options.device)
    fusion = FusionModel.load(options.fusion_model or None, device=options.device)
    sources = ['visible', 'infrared', 'fused (ivf_ros network)',
               *(f'fused ({name} baseline)' for name in options.baselines)]
    counts = {source: dict.fromkeys(COUNTED, 0) for source in sources}
    images_with = {source: 0 for source in counts}
    for pair in tqdm(pairs, desc='night pairs', unit='pair'):
        visible, infrared = load_pair(pair)
        inputs = {'visible': visible,
                  'infrared': np.repeat(infrared[:, :, None], 3, axis=2),
                  'fused (ivf_ros network)': fusion.run(visible, infrared).fused}
        for name in options.baselines:
            inputs[f'fused ({name} baseline)'] = BASELINES[name](visible, infrared)
        for source, rgb in inputs.items():
            detections = detector.detect(rgb)
            images_with[source] += bool(detections)
            for detection in detections:
                counts[source][detection.class_name] += 1
    print(f'\nYOLO11n (COCO, conf {options.conf}) on {len(pairs)} night pairs of {root}, '
          f'fusion weights {fusion.source}:')
    print(f'| input | {" | ".join(COUNTED)} | images with any |')
    print('|---|' + '---|' * (len(COUNTED) + 1))
    for source, per_class in counts.items():
        print(f'| {source} | {" | ".join(str(per_class[c]) for c in COUNTED)} | '
              f'{images_with[source]}/{len(pairs)} |')


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the graph benchmark or the counts."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--device', default='auto')
    parser.add_argument('--rate', type=float, default=10.0, help='camera rate [Hz]')
    parser.add_argument('--seconds', type=float, default=20.0, help='per phase')
    parser.add_argument('--warmup', type=float, default=3.0, help='seconds not measured')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=512)
    parser.add_argument('--detector', help='YOLO weights (default: ../shared COCO yolo11n, '
                        'else yolo11n.yaml random weights)')
    parser.add_argument('--fusion-model', default='',
                        help="fusion weights ('' = shipped; 'fresh' = untrained, same cost)")
    parser.add_argument('--diagnostics-wait', type=float, default=1.5)
    parser.add_argument('--phases', type=int, nargs='+', choices=(1, 2, 3, 4),
                        help='1 null-model overhead, 2 fusion only, 3 both nodes in two '
                             'processes, 4 both in one ivf-graph (default: all)')
    parser.add_argument('--threads', type=int,
                        help="both nodes' threads parameter (default: the nodes' own, 0 = half "
                             'the cores each)')
    parser.add_argument('--half', action='store_true',
                        help='both networks in float16 (CUDA only; the GPU check)')
    parser.add_argument('--no-fast-path', action='store_true',
                        help='ivf-graph: detection over DDS instead of in-process')
    parser.add_argument('--counts', action='store_true',
                        help='count people/cars on the night pairs instead')
    parser.add_argument('--conf', type=float, default=0.25, help='--counts confidence')
    parser.add_argument('--baselines', nargs='*', default=['clahe_laplacian'],
                        help='--counts: classical fusions (evaluation.baselines) to compare')
    options = parser.parse_args(argv)
    # A warm-up as long as the phase leaves nothing measured: 0 FPS and "NOT met" bars.
    if not options.counts and not 0 <= options.warmup < options.seconds:
        parser.error(f'--warmup ({options.warmup} s) must be at least 0 and shorter than '
                     f'--seconds ({options.seconds} s)')
    if not options.rate > 0:
        parser.error('--rate must be positive')
    if options.counts:
        count_objects(options)
    else:
        bench_graph(options)
    return 0


if __name__ == '__main__':
    sys.exit(main())
