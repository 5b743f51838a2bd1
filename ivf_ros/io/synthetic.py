"""
Deterministic synthetic night driving scenes: a visible/infrared pair with ground-truth boxes.

For tests, benchmarks and the offline demo where real data (../shared/datasets) is absent. The
scene is a road at night seen from a car: an orange sodium-lamp cast, street lamps and headlight
glare, sensor noise, and pedestrians and cars that are nearly invisible in the visible image but
warm (bright) in the infrared one, at the same pixels (the two cameras are registered).

Determinism: the layout (road, lamps, objects) depends only on ``seed``; ``frame`` moves the
objects along smooth bounded paths and scrolls the lane marks (a drive), and seeds the noise.
The same arguments always give bit-identical images on any machine (numpy's PCG64 and OpenCV's
integer drawing only; noise comes from raw random bytes through a Gaussian lookup table, which
is ~20x faster than numpy's normal sampler).

Infrared values model raw counts of an uncooled microbolometer: background ~7000-7700 counts,
people ~8700-8900, engines up to ~8900 (``thermal_bits=16``), so a percentile stretch matters;
``thermal_bits=8`` maps counts 6800-9200 linearly to 0-255.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
import math
from statistics import NormalDist

import cv2
import numpy as np

LABELS = ('person', 'car')  # COCO class names, so detectors' labels compare directly
# Raw-count window that the 8-bit infrared output spans.
_COUNTS_LOW, _COUNTS_HIGH = 6800.0, 9200.0
# Colour cast of low-pressure sodium street lighting (RGB gains): orange, little blue.
_SODIUM_RGB = (1.0, 0.62, 0.28)


@dataclass(frozen=True)
class GroundTruthBox:
    """An object's box in pixels (x2, y2 exclusive), the same in both images."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class NightPair:
    """A registered visible (h, w, 3) uint8 RGB and infrared (h, w) uint8/uint16 night frame."""

    visible: np.ndarray
    infrared: np.ndarray
    boxes: list[GroundTruthBox]


@dataclass(frozen=True)
class _Object:
    label: str
    depth: float      # 0 at the horizon .. 1 at the bottom of the image
    lateral: float    # -1 left edge of the road .. 1 right edge (beyond: pavement)
    phase: float
    period: float     # frames per oscillation of the path
    facing: bool      # cars: headlights towards us (oncoming) or tail lights


@dataclass(frozen=True)
class _Layout:
    horizon: float            # fraction of the image height
    vanish_x: float           # fraction of the image width
    lamps: tuple[tuple[float, float], ...]  # (side -1/1, depth)
    objects: tuple[_Object, ...]


@lru_cache(maxsize=64)
def _layout(seed: int) -> _Layout:
    """Return the scene layout of a seed (cached: a sequence renders many frames of one seed)."""
    rng = np.random.default_rng(seed)
    horizon = float(rng.uniform(0.38, 0.46))
    vanish_x = float(rng.uniform(0.44, 0.56))
    lamps = tuple((float(side), float(depth)) for side, depth in zip(
        rng.choice([-1.0, 1.0], size=5), np.sort(rng.uniform(0.05, 0.7, size=5)), strict=True))
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        objects.append(_Object('car', float(rng.uniform(0.15, 0.75)),
                               float(rng.uniform(-0.6, 0.6)), float(rng.uniform(0, 2 * math.pi)),
                               float(rng.uniform(80, 160)), bool(rng.integers(0, 2))))
    for _ in range(int(rng.integers(1, 5))):
        side = float(rng.choice([-1.0, 1.0]))
        objects.append(_Object('person', float(rng.uniform(0.2, 0.85)),
                               side * float(rng.uniform(1.1, 1.5)),
                               float(rng.uniform(0, 2 * math.pi)),
                               float(rng.uniform(60, 120)), False))
    # Painter's order: far objects first, so nearer ones occlude them.
    objects.sort(key=lambda obj: obj.depth)
    return _Layout(horizon, vanish_x, lamps, tuple(objects))


@lru_cache(maxsize=4)
def _gaussian_lut(sigma: float) -> np.ndarray:
    """Return a 256-entry int8 table mapping a uniform byte to a Gaussian sample (as uint8)."""
    normal = NormalDist(0.0, sigma)
    values = [round(normal.inv_cdf((k + 0.5) / 256.0)) for k in range(256)]
    return np.clip(values, -127, 127).astype(np.int8).view(np.uint8)


def _uniform_bytes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Return uniform random bytes of a shape (raw PCG64 words: ~3x faster than rng.bytes)."""
    count = math.prod(shape)
    words = rng.bit_generator.random_raw((count + 7) // 8)
    # Little-endian bytes of the words, so every machine draws the same image.
    return words.astype('<u8', copy=False).view(np.uint8)[:count].reshape(shape)


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Return int8 Gaussian noise (quantised to 256 levels) of a shape."""
    return cv2.LUT(_uniform_bytes(rng, shape), _gaussian_lut(sigma)).view(np.int8)


def _add_gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Return a uint8 image plus Gaussian noise, saturated, in uint8 arithmetic only."""
    noise = _gaussian_lut(sigma).view(np.int8).astype(np.int16)
    # One uniform byte per sample, split into its positive and negative parts: two uint8 LUTs
    # and two saturating uint8 passes, ~4x less memory traffic than float noise.
    uniform = _uniform_bytes(rng, image.shape)
    positive = cv2.LUT(uniform, np.clip(noise, 0, 127).astype(np.uint8))
    negative = cv2.LUT(uniform, np.clip(-noise, 0, 127).astype(np.uint8))
    return cv2.subtract(cv2.add(image, positive), negative)


class _Projection:
    """Map (lateral, depth) road coordinates to pixels with a simple pinhole-like model."""

    def __init__(self, layout: _Layout, width: int, height: int) -> None:
        self.layout = layout
        self.width, self.height = width, height
        self.horizon_y = layout.horizon * height
        self.vanish_x = layout.vanish_x * width

    def scaled(self, factor: int) -> _Projection:
        """Return the same projection for an image `factor` times smaller."""
        return _Projection(self.layout, max(2, self.width // factor),
                           max(2, self.height // factor))

    def point(self, lateral: float, depth: float) -> tuple[float, float]:
        """Return the pixel of a ground point; depth 0 is the horizon, 1 the image bottom."""
        y = self.horizon_y + depth * (self.height - self.horizon_y)
        # The road is 0.9 image widths wide at the bottom and a point at the horizon.
        x = self.vanish_x + lateral * 0.45 * self.width * depth
        return x, y

    def scale(self, depth: float) -> float:
        """Return the size of one 'metre' at a depth, in pixels (grows towards the bottom)."""
        return depth * 0.12 * self.width


def _object_boxes(layout: _Layout, projection: _Projection,
                  frame: int) -> list[tuple[_Object, tuple[float, float, float, float]]]:
    """Return each object with its unclipped (x1, y1, x2, y2) box at a frame."""
    placed = []
    for obj in layout.objects:
        angle = 2 * math.pi * frame / obj.period + obj.phase
        # Smooth bounded paths: cars drift in depth and lane, people walk along the pavement.
        depth = min(0.95, max(0.08, obj.depth + 0.06 * math.sin(angle)))
        lateral = obj.lateral + (0.15 if obj.label == 'car' else 0.1) * math.sin(0.5 * angle)
        foot_x, foot_y = projection.point(lateral, depth)
        metre = projection.scale(depth)
        if obj.label == 'car':
            box_w, box_h = 1.9 * metre, 1.5 * metre
        else:
            box_w, box_h = 0.55 * metre, 1.75 * metre
        placed.append((obj, (foot_x - box_w / 2, foot_y - box_h, foot_x + box_w / 2, foot_y)))
    return placed


def _draw_road(canvas: np.ndarray, projection: _Projection, frame: int,
               sky: float, pavement: float, road: float, marks: float) -> None:
    """Paint sky, pavement, road and scrolling lane marks into a (h, w) or (h, w, c) canvas."""
    horizon = int(round(projection.horizon_y))
    canvas[:horizon] = sky
    canvas[horizon:] = pavement
    road_poly = np.array([projection.point(-1, 0), projection.point(1, 0),
                          projection.point(1, 1), projection.point(-1, 1)])
    cv2.fillPoly(canvas, [np.round(road_poly).astype(np.int32)], _colour(canvas, road))
    # Dashes every 0.12 depth units, scrolling towards the camera as the car drives.
    offset = (frame * 0.015) % 0.12
    for start in np.arange(offset, 1.0, 0.12):
        end = min(1.0, start + 0.05)
        left_a, left_b = projection.point(-0.03, start), projection.point(-0.03, end)
        right_a, right_b = projection.point(0.03, start), projection.point(0.03, end)
        dash = np.array([left_a, right_a, right_b, left_b])
        cv2.fillPoly(canvas, [np.round(dash).astype(np.int32)], _colour(canvas, marks))


def _colour(canvas: np.ndarray, value: float) -> tuple[float, ...]:
    return (value,) * (canvas.shape[2] if canvas.ndim == 3 else 1)


def _draw_objects(canvas: np.ndarray, placed: list, person: float, car: float,
                  hot: float | None) -> None:
    """Paint people and cars (and, for infrared, hot engines, wheels and heads)."""
    for obj, (x1, y1, x2, y2) in placed:
        w, h = x2 - x1, y2 - y1
        if obj.label == 'person':
            head_r = max(1, int(round(w * 0.32)))
            centre = (int(round((x1 + x2) / 2)), int(round(y1 + head_r)))
            body = np.round([(x1 + 0.1 * w, y1 + 2 * head_r), (x2 - 0.1 * w, y1 + 2 * head_r),
                             (x2 - 0.2 * w, y2), (x1 + 0.2 * w, y2)]).astype(np.int32)
            cv2.fillPoly(canvas, [body], _colour(canvas, person))
            cv2.circle(canvas, centre, head_r, _colour(canvas, hot or person), -1)
        else:
            body = np.round([(x1, y1 + 0.35 * h), (x2, y1 + 0.35 * h), (x2, y2 - 0.1 * h),
                             (x1, y2 - 0.1 * h)]).astype(np.int32)
            cabin = np.round([(x1 + 0.18 * w, y1), (x2 - 0.18 * w, y1),
                              (x2 - 0.08 * w, y1 + 0.36 * h),
                              (x1 + 0.08 * w, y1 + 0.36 * h)]).astype(np.int32)
            cv2.fillPoly(canvas, [body, cabin], _colour(canvas, car))
            if hot is not None:
                # Engine (oncoming) or exhaust and rear (leaving), and the four warm tyres.
                band = (y1 + 0.4 * h, y1 + 0.75 * h) if obj.facing else (y1 + 0.6 * h, y2)
                pts = np.round([(x1 + 0.12 * w, band[0]), (x2 - 0.12 * w, band[0]),
                                (x2 - 0.12 * w, band[1]), (x1 + 0.12 * w, band[1])])
                cv2.fillPoly(canvas, [pts.astype(np.int32)], _colour(canvas, hot))
            for wheel_x in (x1 + 0.18 * w, x2 - 0.18 * w):
                radius = max(1, int(round(0.12 * h)))
                cv2.circle(canvas, (int(round(wheel_x)), int(round(y2 - 0.1 * h))), radius,
                           _colour(canvas, hot if hot is not None else car * 0.5), -1)


def _render_visible(layout: _Layout, projection: _Projection, placed: list, frame: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Return the dark, noisy, sodium-cast visible image (h, w, 3) uint8 RGB."""
    height, width = projection.height, projection.width
    grey = np.empty((height, width), np.uint8)
    _draw_road(grey, projection, frame, sky=6, pavement=14, road=20, marks=34)
    # People and cars are nearly background-dark: the reason to fuse with infrared.
    _draw_objects(grey, placed, person=12, car=9, hot=None)
    # Grey scene lit by sodium lamps, (h, w) -> (h, w, 3).
    visible = cv2.merge([cv2.convertScaleAbs(grey, alpha=gain) for gain in _SODIUM_RGB])
    # Light sources on a canvas ~160 px wide, blurred and scaled up: glare and light pools are
    # smooth, and their cost (~1 ms) does not grow with the image as full-resolution blurs do.
    light_view = projection.scaled(max(1, round(width / 160)))
    small_w, small_h = light_view.width, light_view.height
    light = np.zeros((small_h, small_w, 3), np.float32)
    # Blown-out cores of the light sources, drawn at full resolution after the glare:
    # (centre, radius, RGB) in full-resolution pixels.
    cores: list[tuple[tuple[int, int], int, tuple[int, int, int]]] = []
    for side, depth in layout.lamps:
        base_x, base_y = light_view.point(side * 1.25, depth)
        top_y = base_y - 4.5 * light_view.scale(depth)
        pool = (int(round(base_x - side * light_view.scale(depth))), int(round(base_y)))
        cv2.ellipse(light, pool, (max(1, int(2.2 * light_view.scale(depth))),
                                  max(1, int(0.5 * light_view.scale(depth)))), 0, 0, 360,
                    tuple(40 * g for g in _SODIUM_RGB), -1)
        cv2.circle(light, (int(round(base_x)), int(round(top_y))),
                   max(1, int(round(0.25 * light_view.scale(depth)))),
                   tuple(255 * g for g in _SODIUM_RGB), -1)
        cores.append(((int(round(base_x * width / small_w)), int(round(top_y * height / small_h))),
                      max(1, int(round(0.12 * projection.scale(depth)))), (255, 225, 150)))
    for obj, (x1, y1, x2, y2) in placed:
        if obj.label != 'car':
            continue
        colour = (255.0, 245.0, 225.0) if obj.facing else (200.0, 10.0, 10.0)
        size = max(1, int(round((x2 - x1) * small_w / width * 0.09)))
        for lamp_x in (x1 + 0.15 * (x2 - x1), x2 - 0.15 * (x2 - x1)):
            lamp_y = y1 + 0.55 * (y2 - y1)
            cv2.circle(light, (int(round(lamp_x * small_w / width)),
                               int(round(lamp_y * small_h / height))), size, colour, -1)
            cores.append(((int(round(lamp_x)), int(round(lamp_y))),
                          max(1, int(round((x2 - x1) * 0.04))),
                          (255, 255, 245) if obj.facing else (255, 60, 40)))
    sigma = max(1.0, small_w / 60)
    # A tight halo plus a wide veil, as scattered light in a lens looks. The veil is blurred
    # at half the canvas size (same look, a quarter of the pixels and half the taps).
    half_size = (max(1, small_w // 2), max(1, small_h // 2))
    veil = cv2.resize(cv2.GaussianBlur(cv2.resize(light, half_size, interpolation=cv2.INTER_AREA),
                                       (0, 0), sigma * 2), (small_w, small_h),
                      interpolation=cv2.INTER_LINEAR)
    glare = cv2.addWeighted(cv2.GaussianBlur(light, (0, 0), sigma), 1.5, veil, 2.5, 0.0)
    # Saturate to uint8 before scaling up: a quarter of the bytes to interpolate.
    glare = cv2.resize(cv2.convertScaleAbs(glare), (width, height),
                       interpolation=cv2.INTER_LINEAR)
    # Sensor noise per channel: chroma noise is what dark colour images show.
    visible = _add_gaussian_noise(cv2.add(visible, glare), rng, 3.0)
    for centre, radius, colour in cores:
        cv2.circle(visible, centre, radius, colour, -1)
    return visible


@lru_cache(maxsize=16)
def _column_pattern(seed: int, width: int) -> np.ndarray:
    """Return the fixed column offsets of a microbolometer (counts), fixed per camera (seed)."""
    rng = np.random.default_rng((seed, 7))
    return rng.normal(0.0, 12.0, size=width).astype(np.float32)


def _render_infrared(projection: _Projection, placed: list, frame: int, seed: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Return infrared raw counts (h, w) float32: cool background, warm people and cars."""
    height, width = projection.height, projection.width
    # Thermal optics are soft: draw at half resolution and scale up (cheaper than a blur).
    half = projection.scaled(2)
    counts = np.empty((half.height, half.width), np.float32)
    _draw_road(counts, half, frame, sky=7000, pavement=7450, road=7650, marks=7600)
    half_placed = [(obj, (box[0] * half.width / width, box[1] * half.height / height,
                          box[2] * half.width / width, box[3] * half.height / height))
                   for obj, box in placed]
    _draw_objects(counts, half_placed, person=8700, car=8050, hot=8900)
    counts = cv2.resize(counts, (width, height), interpolation=cv2.INTER_LINEAR)
    counts += _column_pattern(seed, width)
    # Temporal noise of ~18 counts (NETD-like), drawn with sigma 3 and scaled for resolution.
    counts += _gaussian_noise(rng, (height, width), 3.0) * np.float32(6.0)
    return counts


def make_night_pair(seed: int = 0, width: int = 640, height: int = 512, frame: int = 0,
                    thermal_bits: int = 8) -> NightPair:
    """Return a deterministic synthetic night scene: visible, infrared and ground-truth boxes."""
    if thermal_bits not in (8, 16):
        raise ValueError(f'thermal_bits must be 8 or 16, got {thermal_bits!r}')
    if width < 16 or height < 16:
        raise ValueError(f'image size must be at least 16x16, got {width}x{height}')
    if frame < 0 or seed < 0:
        raise ValueError(f'seed and frame must be >= 0, got seed={seed}, frame={frame}')
    layout = _layout(int(seed))
    projection = _Projection(layout, width, height)
    placed = _object_boxes(layout, projection, frame)
    rng = np.random.default_rng((seed, frame))
    visible = _render_visible(layout, projection, placed, frame, rng)
    counts = _render_infrared(projection, placed, frame, seed, rng)
    if thermal_bits == 16:
        infrared = np.clip(counts, 0, 65535).astype(np.uint16)
    else:
        # Clip below the window first: convertScaleAbs would mirror negative values.
        infrared = cv2.convertScaleAbs(
            cv2.max(counts, _COUNTS_LOW), alpha=255.0 / (_COUNTS_HIGH - _COUNTS_LOW),
            beta=-_COUNTS_LOW * 255.0 / (_COUNTS_HIGH - _COUNTS_LOW))
    boxes = []
    for obj, (x1, y1, x2, y2) in placed:
        clipped = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
        # Keep boxes with at least half their area in view, as a labeller would.
        area = (x2 - x1) * (y2 - y1)
        if clipped[2] > clipped[0] and clipped[3] > clipped[1] and (
                (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) >= 0.5 * area):
            boxes.append(GroundTruthBox(obj.label, *(round(v, 2) for v in clipped)))
    return NightPair(visible=visible, infrared=infrared, boxes=boxes)
