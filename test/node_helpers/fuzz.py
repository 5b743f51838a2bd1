"""Seeded random and adversarial camera messages for fuzzing a live fusion_node."""

from __future__ import annotations

from collections.abc import Iterator
import random

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ivf_ros.io.image_codec import array_to_image_fields, encode_compressed, ENCODINGS

UINT32_MAX = 2**32 - 1
INT32 = (-(2**31), 2**31 - 1)
GOOD_ENCODINGS = sorted(ENCODINGS)
BAD_ENCODINGS = ['', 'rgb', 'RGB8', 'yuv_weird', 'nv21', 'bayer_rggb16', '16UC3', 'x' * 300,
                 'mono8\x00', '32FC3', 'jpeg']


def random_header(rng: random.Random) -> Header:
    """Return a header whose stamp is normal, zero, negative, huge or random."""
    header = Header(frame_id=rng.choice(['cam', '', 'x' * 100]))
    kind = rng.random()
    if kind < 0.5:
        header.stamp.sec, header.stamp.nanosec = 1_000 + rng.randrange(100), rng.randrange(10**9)
    elif kind < 0.6:
        header.stamp.sec, header.stamp.nanosec = 0, 0
    elif kind < 0.75:
        header.stamp.sec = rng.randint(INT32[0], -1)
        header.stamp.nanosec = rng.randrange(10**9)
    elif kind < 0.9:
        header.stamp.sec, header.stamp.nanosec = INT32[1], UINT32_MAX  # nanosec out of range
    else:
        header.stamp.sec, header.stamp.nanosec = rng.randint(*INT32), rng.randint(0, UINT32_MAX)
    return header


def random_image(rng: random.Random) -> Image:
    """Return a raw Image that is valid, mis-sized, truncated, oversized or wrongly encoded."""
    encoding = rng.choice(GOOD_ENCODINGS)
    info = ENCODINGS[encoding]
    width, height = rng.randint(1, 48), rng.randint(1, 40)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    pixels = np.frombuffer(rng.randbytes(int(np.prod(shape)) * info.dtype.itemsize),
                           info.dtype).reshape(shape)
    fields = array_to_image_fields(pixels, encoding)
    msg = Image(header=random_header(rng), height=fields.height, width=fields.width,
                encoding=encoding, is_bigendian=rng.random() < 0.1, step=fields.step,
                data=fields.data)
    attack = rng.randrange(9)
    data = fields.data
    if attack == 1:
        msg.encoding = rng.choice(BAD_ENCODINGS)
    elif attack == 2:
        data = data[:rng.randrange(len(data) + 1)]  # truncated
    elif attack == 3:
        msg.width, msg.height = rng.choice([(0, 0), (UINT32_MAX, 1), (50_000, 50_000),
                                            (rng.randint(0, 5000), rng.randint(0, 5000))])
    elif attack == 4:
        msg.step = rng.choice([0, 1, UINT32_MAX, msg.step - 1, msg.step * 2])
    elif attack == 5:
        data = data + rng.randbytes(rng.randint(1, 64))  # oversized
    msg.data = data
    return msg


def random_compressed(rng: random.Random) -> CompressedImage:
    """Return a CompressedImage: valid, truncated, garbage, mislabelled or a bomb header."""
    width, height = rng.randint(1, 48), rng.randint(1, 40)
    grey = rng.random() < 0.5
    shape = (height, width) if grey else (height, width, 3)
    array = np.frombuffer(rng.randbytes(int(np.prod(shape))), np.uint8).reshape(shape)
    fmt, data = encode_compressed(array, 'mono8' if grey else 'rgb8',
                                  rng.choice(['jpeg', 'png']))
    data = bytearray(data)
    attack = rng.randrange(7)
    if attack == 1:
        data = data[:rng.randrange(len(data) + 1)]
    elif attack == 2:
        data = bytearray(rng.randbytes(rng.randint(0, 700)))
    elif attack == 3:
        fmt = rng.choice(['', 'webp', 'rgb8; bmp compressed', '16UC1; compressedDepth png',
                          '32FC1; compressedDepth', 'x' * 200])
    elif attack == 4:
        data = bytearray(bomb(rng.choice(['jpeg', 'png'])))
    return CompressedImage(header=random_header(rng), format=fmt, data=bytes(data))


def bomb(kind: str) -> bytes:
    """Return a small JPEG or PNG whose header claims 60000 x 60000 pixels (3.6 GP)."""
    fmt, data = encode_compressed(np.zeros((8, 8), np.uint8), 'mono8', kind)
    data = bytearray(data)
    if kind == 'png':
        data[16:24] = (60000).to_bytes(4, 'big') * 2
        return bytes(data)
    index = next(i for i in range(2, len(data) - 9)
                 if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    data[index + 5:index + 9] = (60000).to_bytes(2, 'big') * 2
    return bytes(data)


def fuzz_messages(seed: int, count: int, compressed: bool) -> Iterator[tuple[str, object]]:
    """Yield (stream, message) pairs: seeded, mixed over the visible and infrared streams."""
    rng = random.Random(seed)
    for _ in range(count):
        stream = rng.choice(['visible', 'infrared'])
        yield stream, random_compressed(rng) if compressed else random_image(rng)

