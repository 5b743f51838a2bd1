"""YOLO object detection over Ultralytics: offline-safe loading, class filtering, drawing."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
import re
import threading

import cv2
import numpy as np

from ivf_ros.io.errors import first_line

# Ultralytics must never pip-install from inside a robot: set before it is imported. Downloads of
# named weights stay Ultralytics' normal way; YOLO_OFFLINE=1 (tests, CI) forbids them.
os.environ.setdefault('YOLO_AUTOINSTALL', '0')
# Model files are untrusted input: Ultralytics' opt-in safe mode unpickles checkpoints with
# torch's weights_only loader against an allow-list of model classes and builds models from yaml
# without eval(). Read once, when ultralytics is first imported: set it before that.
os.environ.setdefault('ULTRALYTICS_SAFE_LOAD', '1')

# The one form of a yaml `activation:` value that safe mode accepts, checked here too in case
# ultralytics was imported before this module (then the environment flag came too late).
_SAFE_ACTIVATION = re.compile(r'^(torch\.)?nn\.[A-Za-z][A-Za-z0-9_]*\([\w.,= +-]*\)$')
_UNSAFE_LOAD_LOCK = threading.Lock()

_TRUTHY = ('1', 'true', 'yes', 'on', 'y', 't')


class DetectorLoadError(RuntimeError):
    """YOLO weights that are missing, unreadable or would need a download while offline."""


class UnsafeCheckpointError(DetectorLoadError):
    """A model file refused before anything in it ran: it would need code execution to load."""


@dataclass(frozen=True)
class Detection:
    """One detected box, centre and size in pixels of the input image."""

    class_id: int
    class_name: str
    score: float
    cx: float
    cy: float
    width: float
    height: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """Return the box corners (x1, y1, x2, y2) in pixels."""
        half_w, half_h = self.width / 2, self.height / 2
        return self.cx - half_w, self.cy - half_h, self.cx + half_w, self.cy + half_h


def is_offline() -> bool:
    """Return whether Ultralytics must not download (YOLO_OFFLINE set truthy)."""
    return os.environ.get('YOLO_OFFLINE', '').strip().lower() in _TRUTHY


def resolve_weights(model: str | Path) -> str:
    """Return what Ultralytics should load for model, or raise DetectorLoadError naming it."""
    text = str(model).strip()
    path = Path(text).expanduser()
    if not text:
        raise DetectorLoadError('no YOLO weights given (empty model path)')
    if path.suffix in ('.yaml', '.yml'):
        return text  # an architecture: Ultralytics builds it with random weights, no download
    if path.is_file() or path.is_dir():  # a folder: an export format (see check_model_file)
        return str(path.resolve())
    if path.parent == Path('.'):
        from ultralytics.utils import SETTINGS

        cached = Path(SETTINGS['weights_dir']) / path.name
        if cached.is_file():
            return str(cached)
        if not is_offline():
            return text  # the normal Ultralytics way: it downloads a known name when online
        raise DetectorLoadError(
            f'YOLO weights {text!r} not found (looked in {Path.cwd()} and {cached.parent}) and '
            f'YOLO_OFFLINE=1 forbids a download: fetch {path.name} where the internet is '
            'reachable (https://github.com/ultralytics/assets/releases, or run once without '
            'YOLO_OFFLINE) and give its absolute path')
    raise DetectorLoadError(f'YOLO weights not found: {path}')


def check_model_file(weights: str) -> None:
    """Raise UnsafeCheckpointError if loading weights (.pt, .onnx or .yaml) could run code.

    A .pt is first read with Ultralytics' restricted loader (torch weights_only unpickling
    against its allow-list of model classes, whatever the environment says): a pickle that
    names any other callable is refused before it could run. A .yaml may only name its
    activation as ``nn.Name(args)`` (Ultralytics eval()s that value outside safe mode). An
    .onnx has no pickle (ONNX Runtime runs it; Ultralytics reads its metadata with
    ast.literal_eval). Other export formats (TensorRT files, OpenVINO and other export folders)
    are not checked here, so they are refused unless allow_unsafe_checkpoint opts in.
    """
    path = Path(weights)
    if path.suffix in ('.yaml', '.yml'):
        if path.is_file():
            _check_yaml_activation(path)
        return
    if path.is_dir():
        # An export folder (OpenVINO, TF SavedModel, ...): its contents are not checked here.
        raise UnsafeCheckpointError(
            f'refused to load YOLO weights {weights}: a folder (an export format) is not checked '
            'by ivf_ros, which checks .pt, .onnx and .yaml models. If you trust it, opt in with '
            'allow_unsafe_checkpoint (node parameter) or --allow-unsafe-checkpoint')
    if not path.is_file():
        return  # a known name Ultralytics downloads (online): its own safe mode loads it
    if path.suffix == '.onnx':
        return
    if path.suffix != '.pt':
        raise UnsafeCheckpointError(
            f'refused to load YOLO weights {weights}: ivf_ros checks .pt, .onnx and .yaml '
            f'models, not {path.suffix or "a file without a suffix"}. If you trust it, opt in '
            'with allow_unsafe_checkpoint (node parameter) or --allow-unsafe-checkpoint')
    from ultralytics.nn.tasks import torch_safe_load

    try:
        torch_safe_load(str(path), safe_only=True)
    except (TypeError, ModuleNotFoundError) as error:
        reason = first_line(error)
        if 'not a loadable checkpoint' in reason or 'TorchScript' in reason:
            raise DetectorLoadError(f'cannot load YOLO weights {weights}: {reason}') \
                from error
        raise UnsafeCheckpointError(
            f'refused to load YOLO weights {weights}: the file needs code outside the '
            'Ultralytics model classes to unpickle, so it was not run. If you trust it, opt in '
            'with allow_unsafe_checkpoint (node parameter) or --allow-unsafe-checkpoint') \
            from error
    except Exception as error:  # noqa: BLE001 - torch raises many types for corrupt files
        raise DetectorLoadError(f'cannot load YOLO weights {weights}: {error}') from error


def _check_yaml_activation(path: Path) -> None:
    """Refuse a model yaml whose activation is anything but a plain nn.Name(...) call."""
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DetectorLoadError(f'cannot read YOLO model yaml {path}: {error}') from error
    activation = spec.get('activation') if isinstance(spec, dict) else None
    if activation is not None and not _SAFE_ACTIVATION.match(str(activation)):
        raise UnsafeCheckpointError(
            f'refused YOLO model yaml {path}: activation {str(activation)[:80]!r} is not a plain '
            'nn.Name(...) call (Ultralytics would eval() it)')


def _load_unsafe(weights: str) -> object:
    """Load a YOLO checkpoint with full pickle (can run code): the explicit, logged opt-in."""
    import logging

    from ultralytics import YOLO
    import ultralytics.nn.tasks as tasks

    logging.getLogger('ivf_ros.detector').warning(
        'allow_unsafe_checkpoint: loading %s with full pickle; a crafted file can run code',
        weights)
    with _UNSAFE_LOAD_LOCK, _safe_load_off(tasks):
        try:
            return YOLO(weights, task='detect')
        except Exception as error:  # Ultralytics raises many types for corrupt/odd files
            raise DetectorLoadError(f'cannot load YOLO weights {weights}: {error}') from error


@contextlib.contextmanager
def _safe_load_off(tasks: object) -> Iterator[None]:
    """Turn Ultralytics' process-wide safe-load flag off for one load, then restore it."""
    # Ultralytics reads the flag as a module global of ultralytics.nn.tasks (no per-call switch
    # for YOLO()); held under a lock so no concurrent safe load runs meanwhile.
    previous = tasks.SAFE_LOAD
    tasks.SAFE_LOAD = False
    try:
        yield
    finally:
        tasks.SAFE_LOAD = previous


def _refuse_other_tasks(yolo: object, weights: str) -> None:
    """Raise DetectorLoadError for a segment, pose, OBB or classify model (boxes only here)."""
    import torch

    model = getattr(yolo, 'model', None)
    config = getattr(model, 'yaml', None) if isinstance(model, torch.nn.Module) else None
    if not isinstance(config, dict):
        return   # an export: its task is in its metadata, and warmup() catches a wrong one
    from ultralytics.nn.tasks import guess_model_task

    # task='detect' at load builds any head; the architecture's last layer says what it is.
    try:
        task = guess_model_task(config)
    except Exception:  # noqa: BLE001 - an unknown head: let the first inference decide
        return
    if task != 'detect':
        raise DetectorLoadError(f'{weights} is a YOLO {task} model; the detector needs a '
                                'detect model (for example yolo11n.pt)')


class YoloDetector:
    """Ultralytics YOLO on RGB images: detect() returns boxes in pixels of the input image."""

    def __init__(self, model: str | Path, conf: float = 0.25, iou: float = 0.45,
                 imgsz: int = 640, classes: Sequence[str] | None = None, max_det: int = 100,
                 device: str = 'auto', half: bool = False,
                 allow_unsafe_checkpoint: bool = False) -> None:
        self.weights = resolve_weights(model)
        # One device policy for both networks: the fusion inference API's.
        from ivf_ros.fusion.inference import resolve_device

        try:
            self.device = str(resolve_device(device))
        except ValueError as error:
            raise DetectorLoadError(f'YOLO {self.weights}: {error}') from error
        # float16 only helps (and only works reliably) on CUDA.
        self.half = bool(half) and self.device.startswith('cuda')
        if allow_unsafe_checkpoint:
            self._yolo = _load_unsafe(self.weights)
        else:
            check_model_file(self.weights)
            try:
                from ultralytics import YOLO

                self._yolo = YOLO(self.weights, task='detect')
            except Exception as error:  # Ultralytics raises many types for corrupt/odd files
                raise DetectorLoadError(
                    f'cannot load YOLO weights {self.weights}: {error}') from error
        _refuse_other_tasks(self._yolo, self.weights)
        self.names: dict[int, str] = {int(k): str(v) for k, v in self._yolo.names.items()}
        self._ids_by_name = {name: class_id for class_id, name in self.names.items()}
        self.conf = conf
        self.iou = iou
        self.imgsz = imgsz
        self.max_det = max_det
        self.classes = classes
        # Ultralytics' predictor keeps per-call state: one inference at a time.
        self._lock = threading.Lock()

    @property
    def classes(self) -> list[str] | None:
        """Return the class names kept (None = all)."""
        return self._classes

    @classes.setter
    def classes(self, names: Sequence[str] | None) -> None:
        """Keep only these class names; None or empty keeps all; unknown names raise ValueError."""
        names = [str(name) for name in names] if names else []
        unknown = [name for name in names if name not in self._ids_by_name]
        if unknown:
            raise ValueError(
                f'unknown class names {unknown} for {self.weights} '
                f'(it knows {len(self.names)}: {", ".join(list(self.names.values())[:12])}, ...)')
        self._classes = names or None
        self._class_ids = [self._ids_by_name[name] for name in names] or None

    @property
    def class_ids(self) -> list[int] | None:
        """Return the class ids kept (None = all)."""
        return self._class_ids

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Return the detections in an (h, w, 3) uint8 RGB image, in its pixels."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f'detect needs an (h, w, 3) uint8 RGB image, got {rgb.shape} '
                             f'{rgb.dtype}')
        # Ultralytics reads numpy images as BGR, (h, w, 3).
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        # Ultralytics 8.4 warns that `half` is deprecated: pass it only when it is wanted.
        precision = {'half': True} if self.half else {}
        with self._lock:
            results = self._yolo.predict(
                bgr, conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det,
                classes=self._class_ids, device=self.device, verbose=False, **precision)
        boxes = results[0].boxes
        xywh = boxes.xywh.cpu().numpy()  # (n, 4) centre x, centre y, width, height in pixels
        scores = boxes.conf.cpu().numpy()  # (n,)
        class_ids = boxes.cls.cpu().numpy().astype(int)  # (n,)
        return [
            Detection(int(class_id), self.names.get(int(class_id), str(class_id)), float(score),
                      float(cx), float(cy), float(width), float(height))
            for (cx, cy, width, height), score, class_id
            in zip(xywh, scores, class_ids, strict=True)
        ]

    @property
    def network(self):  # noqa: ANN201 (torch is imported lazily)
        """Return the loaded torch detection model (for frozen-teacher use in training)."""
        return self._yolo.model

    def warmup(self, width: int = 640, height: int = 512) -> None:
        """Run one inference on a black image so the first real frame is not slow.

        A model that loads but cannot run (an export for another task or input) raises
        DetectorLoadError here, naming the file, instead of failing on the first frame.
        """
        try:
            self.detect(np.zeros((height, width, 3), np.uint8))
        except Exception as error:  # noqa: BLE001 - Ultralytics and backends raise many types
            raise DetectorLoadError(f'YOLO {self.weights} failed its first inference '
                                    f'({type(error).__name__}: {first_line(error)})') from error

    @property
    def input_size(self) -> int | None:
        """Return the square input size the predictor last ran at (None before a run)."""
        predictor = getattr(self._yolo, 'predictor', None)
        size = getattr(predictor, 'imgsz', None) if predictor is not None else None
        if isinstance(size, (list, tuple)) and size:
            return int(max(size))
        return int(size) if isinstance(size, int) else None

    @property
    def exported(self) -> bool:
        """Return whether the model is an export (ONNX, TensorRT, ...), not a .pt or .yaml."""
        return Path(str(self.weights)).suffix.lower() not in ('.pt', '.yaml', '.yml')

    @property
    def fixed_size(self) -> int | None:
        """Return the size a static export always runs at, whatever imgsz says (else None)."""
        # Ultralytics' predictor keeps a static export's own size; a dynamic one takes imgsz.
        backend = getattr(getattr(self._yolo, 'predictor', None), 'model', None)
        if not self.exported or backend is None or getattr(backend, 'dynamic', False):
            return None
        return self.input_size

    def annotate(self, rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        """Return a copy of rgb with the boxes and 'name score' labels drawn."""
        return annotate(rgb, detections)


def _colour(class_id: int) -> tuple[int, int, int]:
    """Return a stable, saturated RGB colour for a class id."""
    hue = (class_id * 47) % 180  # OpenCV hue range is [0, 180)
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def annotate(rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """Return a copy of an (h, w, 3) RGB image with detection boxes and labels drawn."""
    canvas = np.ascontiguousarray(rgb).copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    scale = max(0.35, min(canvas.shape[:2]) / 1000)
    for detection in detections:
        colour = _colour(detection.class_id)
        x1, y1, x2, y2 = (int(round(v)) for v in detection.xyxy)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = f'{detection.class_name} {detection.score:.2f}'
        (text_w, text_h), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(y1 - text_h - baseline, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + text_w, top + text_h + baseline), colour, -1)
        cv2.putText(canvas, label, (x1, top + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
