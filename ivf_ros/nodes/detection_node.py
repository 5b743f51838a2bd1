"""
detection_node: Ultralytics YOLO on the fused image, published as vision_msgs/Detection2DArray.

Subscribes fused/image (sensor_msgs/Image). Publishes detections (reliable QoS; header copied
from the image; one Detection2D per box, bbox centre/size in pixels of the incoming image,
results[0].hypothesis.class_id = class name, .score = confidence) and detections/image
(the annotated image, when publish_annotated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    ObjectHypothesisWithPose,
)

from ivf_ros.io.image_codec import ImageFormatError, to_rgb8
from ivf_ros.nodes.base import (
    IvfLifecycleNode,
    logged_transition,
    node_help,
    spin_nodes,
    wants_help,
)
from ivf_ros.nodes.param_specs import DETECTION_NODE, DETECTION_PARAMS, ParamValue
from ivf_ros.nodes.ros_image import array_to_image_msg
from ivf_ros.pipeline.detector import Detection, DetectorLoadError, YoloDetector
from ivf_ros.pipeline.frames import arrived_frame
from ivf_ros.pipeline.runtime import (
    LatencyStats,
    LatestWorker,
    RateMeter,
)


def detections_to_msg(detections: Sequence[Detection], header: Header) -> Detection2DArray:
    """Return a Detection2DArray (one Detection2D per box, pixels) with header copied."""
    array = Detection2DArray(header=header)
    for detection in detections:
        box = BoundingBox2D(size_x=detection.width, size_y=detection.height)
        box.center.position.x = detection.cx
        box.center.position.y = detection.cy
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = detection.class_name
        hypothesis.hypothesis.score = detection.score
        array.detections.append(Detection2D(header=header, bbox=box, results=[hypothesis]))
    return array


@dataclass(frozen=True)
class DetectionInput:
    """One image to detect on: a message from fused/image, or an array handed over in-process."""

    header: Header
    msg: Image | None = None
    rgb: np.ndarray | None = None  # (h, w, 3) uint8 RGB (ivf-graph's fast path)


class DetectionNode(IvfLifecycleNode):
    """Run YOLO on each (newest) fused image and publish the boxes."""

    worker_task = 'detection'

    def __init__(self, node_name: str = DETECTION_NODE, **kwargs: Any) -> None:
        super().__init__(node_name, DETECTION_PARAMS, **kwargs)
        self.detector: YoloDetector | None = None
        self.worker: LatestWorker[DetectionInput] | None = None
        # ivf-graph's fast path: fusion_node hands the fused array over (submit_array) and this
        # node does not subscribe to fused/image, which fusion_node still publishes for others.
        self.direct_input = False
        self._image_sub = None
        self._detections_pub = None
        self._annotated_pub = None
        self.rate = RateMeter()
        self.input_rate = RateMeter()
        self.latency = LatencyStats()  # image taken by the worker -> detections published

    @logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load YOLO (never downloading offline), warm it up, create the publishers."""
        model = str(self.params['model'])
        try:
            self.detector = YoloDetector(
                model, conf=float(self.params['conf']), iou=float(self.params['iou']),
                imgsz=int(self.params['imgsz']), classes=list(self.params['classes']),
                max_det=int(self.params['max_det']), device=str(self.params['device']),
                half=bool(self.params['half']),
                allow_unsafe_checkpoint=bool(self.params['allow_unsafe_checkpoint']))
            self.detector.warmup(width=int(self.params['imgsz']),
                                 height=int(self.params['imgsz']))
        except (DetectorLoadError, ValueError) as error:
            self.detector = None
            return self.fail_configure(f'cannot load the detector: {error}')
        self.configure_error = ''
        self._detections_pub = self.output_publisher(Detection2DArray, 'detections', depth=10)
        if self.params['publish_annotated']:
            self._annotated_pub = self.output_publisher(Image, 'detections/image', depth=5)
        used = self.detector.input_size
        if self.detector.fixed_size not in (None, int(self.params['imgsz'])):
            self.get_logger().warning(
                f'{self.detector.weights} runs at {used} px (its export size), not at imgsz '
                f'{self.params["imgsz"]}')
        self.get_logger().info(
            f'YOLO {self.detector.weights} on {self.detector.device} at {used} px '
            f'({len(self.detector.names)} classes, keeping {self.detector.classes or "all"})')
        return super().on_configure(state)

    @logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker and subscribe to fused/image."""
        self.worker = self.start_worker('detection_worker', self._process)
        if not self.direct_input:
            self._image_sub = self.camera_subscription(
                Image, 'fused/image', self.guarded('image callback', self._on_image))
        return super().on_activate(state)

    def stop_inputs(self) -> None:
        """Destroy the subscription and stop the worker."""
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        if self.worker is not None:
            self.worker.stop()

    def release_resources(self) -> None:
        """Destroy publishers, drop the model."""
        for publisher in (self._detections_pub, self._annotated_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._detections_pub = self._annotated_pub = None
        self.detector = None
        self.free_gpu_memory()

    def check_parameter(self, name: str, value: ParamValue) -> None:
        """Reject class names the loaded model does not know, and sizes an export ignores."""
        detector = self.detector
        if name == 'classes' and detector is not None:
            unknown = [n for n in value if n not in detector.names.values()]
            if unknown:
                raise ValueError(f'unknown class names {unknown} for {detector.weights}')
        fixed = detector.fixed_size if detector is not None else None
        if name == 'imgsz' and fixed not in (None, value):
            # Ultralytics runs a static export at its own size whatever imgsz says.
            raise ValueError(f'{detector.weights} is a static export that runs at {fixed} px; '
                             'imgsz cannot change it')

    def on_parameters_changed(self, changed: dict[str, ParamValue]) -> None:
        """Apply conf, iou, imgsz, max_det and classes to the running detector."""
        detector = self.detector
        if detector is None:
            return
        for name in ('conf', 'iou', 'imgsz', 'max_det'):
            if name in changed:
                setattr(detector, name, changed[name])
        if 'classes' in changed:
            detector.classes = list(changed['classes'])

    def _on_image(self, msg: Image) -> None:
        """Queue the newest image for the worker."""
        self.input_rate.tick()
        if self.worker is not None:
            self.worker.submit(DetectionInput(msg.header, msg=msg))

    def submit_array(self, rgb: np.ndarray, header: Header) -> None:
        """Queue an (h, w, 3) uint8 RGB image handed over in-process (ivf-graph's fast path)."""
        self.input_rate.tick()
        if self.worker is not None:
            self.worker.submit(DetectionInput(header, rgb=rgb))

    def _process(self, item: DetectionInput) -> None:
        """Detect on one image and publish (worker thread)."""
        detector = self.detector
        if detector is None:
            return
        started = time.perf_counter()
        rgb = item.rgb
        if rgb is None:
            try:
                # The fusion pipeline's checks on arrival: stamp, max_pixels, layout.
                frame = arrived_frame(item.msg, int(self.params['max_pixels']))
                rgb = to_rgb8(*frame.decode())
            except (ImageFormatError, ValueError) as error:
                self.report_bad_input('input', f'image dropped: {error}')
                return
        detections = detector.detect(rgb)
        self.publish_counted(
            self._detections_pub, detections_to_msg(detections, item.header), 'detections')
        # Drawing costs a copy of the image: only for someone watching.
        if self._annotated_pub is not None and self._annotated_pub.get_subscription_count():
            annotated = detector.annotate(rgb, detections)
            self.publish_counted(self._annotated_pub,
                                 array_to_image_msg(annotated, 'rgb8', item.header),
                                 'detections/image')
        self.rate.tick()
        self.latency.add(time.perf_counter() - started)

    def diagnostic_status(self) -> DiagnosticStatus:
        """Return the node's health: rates, latency, drops, bad input, device."""
        p50, p95 = self.latency.percentiles(50, 95)
        device = self.detector.device if self.detector is not None else 'none'
        values = {
            'input rate [Hz]': f'{self.input_rate.rate():.2f}',
            'detection rate [Hz]': f'{self.rate.rate():.2f}',
            'latency p50 [ms]': f'{p50:.2f}', 'latency p95 [ms]': f'{p95:.2f}',
            'images detected': str(self.rate.count),
            'dropped stale images': str(self.worker.dropped if self.worker else 0),
            'bad images': str(self.problems.count('bad input')),
            'last bad input': self.last_bad_input,
            'detection errors': str(self.problems.count('detection')),
            'publish errors': str(self.publish_errors), 'device': device,
            'model': self.detector.weights if self.detector is not None else 'none',
        }
        return self.make_status('detection', 'detecting', [], device, values)


def main(args: list[str] | None = None) -> int:
    """Run detection_node on its own (ROS arguments: --ros-args -r ... -p ...)."""
    if wants_help(args):
        print(node_help('detection_node', __doc__, DETECTION_PARAMS), end='')
        return 0
    return spin_nodes([DetectionNode], args=args)


if __name__ == '__main__':
    sys.exit(main())
