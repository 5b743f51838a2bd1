"""Deterministic 640x512 test images (synthetic night scenes) and their content digests."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np

from ivf_ros.io.image_codec import array_to_image_fields
from ivf_ros.io.synthetic import make_night_pair

WIDTH = 640
HEIGHT = 512
ENCODINGS = ('rgb8', 'mono16')
# Frames cycle through a few rendered scenes: rendering costs ~35 ms, so long runs reuse them.
DISTINCT_FRAMES = 4
SEED = 7


@functools.lru_cache(maxsize=4 * DISTINCT_FRAMES)
def _scene(width: int, height: int, frame: int) -> Any:
    """Return the synthetic night pair of one frame (visible rgb8, 16-bit infrared)."""
    return make_night_pair(seed=SEED, width=width, height=height, frame=frame, thermal_bits=16)


def frame_array(encoding: str, index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Return frame index of a stream: visible (h, w, 3) uint8 or infrared (h, w) uint16."""
    pair = _scene(width, height, index % DISTINCT_FRAMES)
    if encoding == 'rgb8':
        return pair.visible
    if encoding == 'mono16':
        return pair.infrared
    raise ValueError(f'the DDS helpers send rgb8 or mono16, not {encoding!r}')


def frame_id(encoding: str, index: int) -> str:
    """Return the header.frame_id that names frame index of a stream."""
    return f'{encoding}/{index}'


def parse_frame_id(name: str) -> tuple[str, int]:
    """Return (encoding, index) from a frame_id written by frame_id()."""
    encoding, _, index = name.rpartition('/')
    return encoding, int(index)


def image_digest(encoding: str, height: int, width: int, step: int, is_bigendian: int,
                 data: Any) -> str:
    """Return a sha256 over every content field of a sensor_msgs/Image (header excluded)."""
    digest = hashlib.sha256(f'{encoding}:{width}x{height}:{step}:{int(is_bigendian)}:'.encode())
    digest.update(memoryview(data).cast('B'))
    return digest.hexdigest()


def message_digest(message: Any) -> str:
    """Return image_digest() of a received sensor_msgs/Image."""
    return image_digest(message.encoding, message.height, message.width, message.step,
                        message.is_bigendian, message.data)


def expected_digest(encoding: str, index: int, width: int = WIDTH, height: int = HEIGHT) -> str:
    """Return the digest that frame index must have after the trip through DDS."""
    fields = array_to_image_fields(frame_array(encoding, index, width, height), encoding)
    return image_digest(fields.encoding, fields.height, fields.width, fields.step,
                        fields.is_bigendian, fields.data)
