"""The one declaration of every ivf_ros node parameter: type, default, description, range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import enum
import math
from pathlib import Path
import re
from typing import Any, Union

import yaml

from ivf_ros.io.image_codec import DEFAULT_MAX_PIXELS, THERMAL_MODES

ParamValue = Union[bool, int, float, str, list[str], list[float]]

FUSION_NODE = 'fusion_node'
DETECTION_NODE = 'detection_node'

# Device strings accepted by the fusion network and Ultralytics: auto, cpu, cuda, cuda:N.
DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')
IDENTITY_HOMOGRAPHY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


class ParameterValueError(ValueError):
    """A parameter value that has the wrong type, is out of range or is unknown."""


class ParamKind(enum.Enum):
    """Parameter types, named as rcl_interfaces/ParameterType names them."""

    BOOL = 'bool'
    INTEGER = 'integer'
    DOUBLE = 'double'
    STRING = 'string'
    STRING_ARRAY = 'string_array'
    DOUBLE_ARRAY = 'double_array'


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: what ROS declares (descriptor) and what a YAML value must satisfy."""

    name: str
    kind: ParamKind
    default: ParamValue
    description: str
    min_value: float | None = None
    max_value: float | None = None
    step: int = 0
    choices: tuple[str, ...] = ()
    pattern: str = ''
    array_length: int = 0
    read_only: bool = False

    @property
    def constraints(self) -> str:
        """Return the human-readable constraints (ParameterDescriptor.additional_constraints)."""
        parts = []
        if self.min_value is not None:
            parts.append(f'range [{self.min_value}, {self.max_value}]')
        if self.choices:
            parts.append('one of ' + '|'.join(self.choices))
        if self.pattern:
            parts.append(f'matches {self.pattern}')
        if self.array_length:
            parts.append(f'exactly {self.array_length} values')
        return '; '.join(parts)

    def check(self, value: Any) -> ParamValue:
        """Return value converted to this parameter's type, or raise ParameterValueError."""
        value = self._coerce(value)
        where = f'parameter {self.name!r}'
        if self.min_value is not None and isinstance(value, (int, float)):
            if not self.min_value <= value <= self.max_value:
                raise ParameterValueError(
                    f'{where}: {value} is outside [{self.min_value}, {self.max_value}]')
        if self.step and isinstance(value, int) and (value - int(self.min_value)) % self.step:
            raise ParameterValueError(f'{where}: {value} is not a multiple of {self.step}')
        if self.choices and value not in self.choices:
            raise ParameterValueError(
                f'{where}: {value!r} is not one of {", ".join(self.choices)}')
        if self.pattern and not re.fullmatch(self.pattern, str(value)):
            raise ParameterValueError(f'{where}: {value!r} does not match {self.pattern}')
        if self.array_length and len(value) != self.array_length:
            raise ParameterValueError(
                f'{where}: needs {self.array_length} values, got {len(value)}')
        return value

    def _coerce(self, value: Any) -> ParamValue:
        """Return value as this kind (ints widen to double), or raise ParameterValueError."""
        where = f'parameter {self.name!r}'
        kind = self.kind
        if kind is ParamKind.BOOL and isinstance(value, bool):
            return value
        if kind is ParamKind.INTEGER and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is ParamKind.DOUBLE and _is_number(value):
            if not math.isfinite(value):
                raise ParameterValueError(f'{where}: {value} is not finite')
            return float(value)
        if kind is ParamKind.STRING and isinstance(value, str):
            return value
        if kind is ParamKind.STRING_ARRAY and _is_sequence(value):
            if all(isinstance(item, str) for item in value):
                return list(value)
        if kind is ParamKind.DOUBLE_ARRAY and _is_sequence(value):
            if all(_is_number(item) and math.isfinite(item) for item in value):
                return [float(item) for item in value]
        raise ParameterValueError(f'{where}: expected {kind.value}, got {value!r}')


def _is_number(value: Any) -> bool:
    """Return whether value is an int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    """Return whether value is a list-like sequence (not a string)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


_AUTOSTART = ParamSpec(
    'autostart', ParamKind.BOOL, True,
    'Configure and activate on start; false waits for a lifecycle manager.', read_only=True)
_DEVICE = ParamSpec(
    'device', ParamKind.STRING, 'auto', 'Inference device: auto (CUDA when present), cpu, cuda:N.',
    pattern=DEVICE_PATTERN.pattern, read_only=True)
_HALF = ParamSpec(
    'half', ParamKind.BOOL, False, 'Run the network in float16 (CUDA only; ignored on CPU).',
    read_only=True)

_THREADS = ParamSpec(
    'threads', ParamKind.INTEGER, 0,
    "CPU threads of this node's network, set in its worker thread after the model is loaded "
    '(Ultralytics would otherwise leave 1); 0 = half the cores, so fusion and detection '
    'overlap without fighting for them.', min_value=0, max_value=256, read_only=True)
_MAX_PIXELS = ParamSpec(
    'max_pixels', ParamKind.INTEGER, DEFAULT_MAX_PIXELS,
    'Largest input image (width x height) accepted; bigger frames are rejected and counted '
    'before decoding (a compressed frame by its header).', min_value=1, max_value=2**31 - 1,
    read_only=True)

_DIAGNOSTICS_PERIOD = ParamSpec(
    'diagnostics_period', ParamKind.DOUBLE, 1.0, 'Seconds between /diagnostics messages.',
    min_value=0.1, max_value=60.0, read_only=True)

FUSION_PARAMS: tuple[ParamSpec, ...] = (
    _AUTOSTART,
    ParamSpec('model_path', ParamKind.STRING, '',
              "Fusion network weights; '' = the package's shipped models/ivf_fusion.pt.",
              read_only=True),
    _DEVICE,
    _HALF,
    _THREADS,
    ParamSpec('image_transport', ParamKind.STRING, 'raw',
              "Input transport: 'raw' (sensor_msgs/Image on visible/image_raw) or 'compressed' "
              '(sensor_msgs/CompressedImage on visible/image_raw/compressed).',
              choices=('raw', 'compressed'), read_only=True),
    ParamSpec('slop', ParamKind.DOUBLE, 0.02,
              'Largest visible/infrared stamp difference paired as one frame [s].',
              min_value=0.0, max_value=1.0),
    ParamSpec('queue_size', ParamKind.INTEGER, 10,
              'Frames per stream kept while waiting for a partner.', min_value=1, max_value=100),
    ParamSpec('camera_rate', ParamKind.DOUBLE, 0.0,
              'Frame rate of the faster camera [Hz]: a pair is released as soon as no later '
              "frame can be nearer, instead of one frame later (a rate above a camera's real "
              'one can pair a frame that is not the nearest); 0 = learn it from the stamps.',
              min_value=0.0, max_value=1000.0, read_only=True),
    ParamSpec('idle_flush', ParamKind.DOUBLE, 1.0,
              'When no frame has arrived for this long [s, wall clock], pair what is still '
              'waiting for a later frame (the last pair of a bag or before a camera stops); '
              '0 = never.', min_value=0.0, max_value=60.0),
    ParamSpec('thermal_range', ParamKind.STRING, 'auto',
              "How 16-bit and 32FC1 thermal frames become grey: 'auto' (1-99 % stretch of "
              "each frame, smoothed over frames) or 'fixed' (thermal_min..thermal_max in the "
              "frame's units: raw counts, centi-Kelvin, degrees). 8-bit frames pass unchanged.",
              choices=THERMAL_MODES, read_only=True),
    ParamSpec('thermal_min', ParamKind.DOUBLE, 0.0,
              'With thermal_range fixed: the value shown black.', min_value=-1e9, max_value=1e9,
              read_only=True),
    ParamSpec('thermal_max', ParamKind.DOUBLE, 65535.0,
              'With thermal_range fixed: the value shown white (above thermal_min).',
              min_value=-1e9, max_value=1e9, read_only=True),
    ParamSpec('thermal_smoothing', ParamKind.DOUBLE, 0.9,
              'With thermal_range auto: weight of the past range in each frame (0 = no '
              'smoothing; 0.9 at 10 Hz settles in about 2 s).', min_value=0.0, max_value=0.99,
              read_only=True),
    _MAX_PIXELS,
    ParamSpec('homography', ParamKind.DOUBLE_ARRAY, IDENTITY_HOMOGRAPHY,
              'Row-major 3x3 map from the infrared image (already resized to the visible size) to '
              'visible pixels; identity = resize only.', array_length=9),
    ParamSpec('cast_correction', ParamKind.DOUBLE, -1.0,
              "Share of the visible frame's mean colour cast removed from the fused image: 0 "
              'keeps the scene colours (a sodium-lit street stays yellow), 1 = grey-world; '
              'negative (-1) = the value stored with the weights (0 for the shipped ones).',
              min_value=-1.0, max_value=1.0, read_only=True),
    ParamSpec('output_encoding', ParamKind.STRING, 'rgb8', 'Encoding of fused/image.',
              choices=('rgb8', 'bgr8')),
    ParamSpec('publish_enhanced', ParamKind.BOOL, False,
              'Also publish the enhanced visible image on enhanced/image.', read_only=True),
    ParamSpec('publish_weights', ParamKind.BOOL, False,
              'Also publish the fusion gate (mono8; 255 = the infrared alone: its detail and no '
              'visible light added) on fusion/weights.', read_only=True),
    _DIAGNOSTICS_PERIOD,
)

DETECTION_PARAMS: tuple[ParamSpec, ...] = (
    _AUTOSTART,
    ParamSpec('model', ParamKind.STRING, 'yolo11n.pt',
              'Ultralytics weights (.pt, .onnx, or a model .yaml for random weights): a path, '
              'or a name Ultralytics downloads when online.',
              read_only=True),
    ParamSpec('allow_unsafe_checkpoint', ParamKind.BOOL, False,
              'Load a `model` that needs full pickle (it can run code in the file); false '
              'refuses such a file before anything in it runs.', read_only=True),
    ParamSpec('conf', ParamKind.DOUBLE, 0.25, 'Minimum detection confidence.',
              min_value=0.0, max_value=1.0),
    ParamSpec('iou', ParamKind.DOUBLE, 0.45, 'IoU threshold of non-maximum suppression.',
              min_value=0.0, max_value=1.0),
    ParamSpec('imgsz', ParamKind.INTEGER, 640, 'Network input size [px], a multiple of 32.',
              min_value=32, max_value=4096, step=32),
    ParamSpec('classes', ParamKind.STRING_ARRAY, [],
              'Class names to keep (e.g. [person, car]); empty = all classes.'),
    ParamSpec('max_det', ParamKind.INTEGER, 100, 'Most detections per image.',
              min_value=1, max_value=1000),
    _DEVICE,
    _HALF,
    _THREADS,
    ParamSpec('publish_annotated', ParamKind.BOOL, True,
              'Also publish the image with boxes drawn on detections/image.', read_only=True),
    _MAX_PIXELS,
    _DIAGNOSTICS_PERIOD,
)

NODE_PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    FUSION_NODE: FUSION_PARAMS,
    DETECTION_NODE: DETECTION_PARAMS,
}


def spec_by_name(node_name: str) -> dict[str, ParamSpec]:
    """Return the parameter specs of a node, keyed by parameter name."""
    if node_name not in NODE_PARAMS:
        raise ParameterValueError(
            f'unknown node {node_name!r}; known: {", ".join(sorted(NODE_PARAMS))}')
    return {spec.name: spec for spec in NODE_PARAMS[node_name]}


def defaults(node_name: str) -> dict[str, ParamValue]:
    """Return the declared default of every parameter of a node."""
    return {name: spec.default for name, spec in spec_by_name(node_name).items()}


def fully_qualified_name(node_name: str, namespace: str = '/') -> str:
    """Return a node's fully qualified name, e.g. ('fusion_node', 'car1') -> /car1/fusion_node."""
    return '/' + '/'.join(part for part in (namespace.strip('/'), node_name) if part)


def yaml_key_matches(key: str, node_name: str, namespace: str = '/') -> bool:
    """Return whether a params-file key applies to node_name in namespace, as rcl decides.

    A key names a fully qualified node; a missing leading '/' is implied, '*' stands for one
    name and '/**' for any number (so '/**/fusion_node' matches in every namespace, '/**' every
    node, and 'fusion_node' only the root namespace's).
    """
    parts = str(key).strip().strip('/').split('/')
    pattern = ''.join('(/[^/]+)*' if part == '**' else '/[^/]+' if part == '*'
                      else '/' + re.escape(part) for part in parts)
    return re.fullmatch(pattern, fully_qualified_name(node_name, namespace)) is not None


# Parameters rclpy declares itself; a params file may set them but params.py does not own them.
# qos_overrides is the mapping `ros2 param dump` writes for rclpy's QoS-overridable publishers.
ROS_BUILTIN_PARAMS = frozenset({'use_sim_time', 'start_type_description_service',
                                'qos_overrides'})


def load_params_file(path: str | Path, node_name: str,
                     namespace: str = '/') -> dict[str, ParamValue]:
    """Return a node's validated values from a ROS params file (keys checked against specs).

    Accepts what `ros2 param dump` writes: rclpy's own parameters (use_sim_time, qos_overrides,
    ...) and node keys with their namespace. Sections for other nodes are ignored, like rcl does.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ParameterValueError(f'cannot read params file {path}: {error}') from error
    if not isinstance(document, Mapping):
        raise ParameterValueError(f'params file {path}: expected a mapping of node names')
    specs = spec_by_name(node_name)
    values: dict[str, ParamValue] = {}
    for key, section in document.items():
        partial = [part for part in str(key).strip().strip('/').split('/')
                   if '*' in part and part not in ('*', '**')]
        if partial:
            # rcl refuses the whole file for such a key (a traceback in every node): say so
            # here, in one line, before anything starts.
            raise ParameterValueError(f'params file {path}: {key}: a wildcard is a whole name '
                                      "('*' or '**'), not part of one")
        if not yaml_key_matches(str(key), node_name, namespace):
            continue
        params = (section or {}).get('ros__parameters') if isinstance(section, Mapping) else None
        if not isinstance(params, Mapping):
            raise ParameterValueError(f'params file {path}: {key}: needs ros__parameters')
        for name, value in params.items():
            if name in ROS_BUILTIN_PARAMS:
                values[name] = value
                continue
            if name not in specs:
                if '*' in str(key).rsplit('/', 1)[-1]:
                    # A section for many nodes ('/**', '/*', '/car1/*') carries other nodes'
                    # parameters too: rcl leaves them to those nodes, and a name no node takes is
                    # warned about when the nodes start (nodes.base.warn_unused_overrides). A
                    # wildcard namespace with this node's name ('/**/fusion_node', the package
                    # YAML's form) is this node's section in every namespace: a typo is an error.
                    continue
                raise ParameterValueError(
                    f'params file {path}: {key}: unknown parameter {name!r} '
                    f'(declared: {", ".join(sorted(specs))})')
            spec = specs[name]
            if spec.kind in (ParamKind.DOUBLE, ParamKind.DOUBLE_ARRAY) and _holds_an_integer(
                    value):
                # rcl types a YAML 1 as an integer, and a double parameter refuses it when the
                # node declares it: say so here, before a node (or ivf-bag process) starts.
                raise ParameterValueError(
                    f'params file {path}: {key}: parameter {name!r} is a double, got the '
                    f'integer {value!r}: write it with a decimal point '
                    f'(e.g. {_as_doubles(value)})')
            values[name] = spec.check(value)
    return values


def _holds_an_integer(value: Any) -> bool:
    """Return whether value is an int, or a sequence holding one (bools are not numbers)."""
    items = value if _is_sequence(value) else [value]
    return any(isinstance(item, int) and not isinstance(item, bool) for item in items)


def _as_doubles(value: Any) -> str:
    """Return value written with decimal points, as a params file should hold it."""
    if _is_sequence(value):
        return '[' + ', '.join(_as_doubles(item) for item in value) + ']'
    return f'{float(value)!r}' if _is_number(value) else repr(value)
