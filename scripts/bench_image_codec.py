#!/usr/bin/env python3
"""Benchmark ivf_ros.io.image_codec: print median, p90 and min milliseconds per operation."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import time

from benchlib import positive_int
import numpy as np

from ivf_ros.io.image_codec import (
    array_to_image_fields,
    decode_compressed,
    encode_compressed,
    image_to_array,
    thermal_to_uint8,
    to_rgb8,
)
from ivf_ros.io.synthetic import make_night_pair


def time_ms(function: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Return (median, p90, min) wall time of a call in milliseconds, after one warm-up."""
    function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    # min shows the uncontended cost on a shared machine; median is what to quote.
    return float(np.median(samples)), float(np.percentile(samples, 90)), float(min(samples))


def cases(width: int, height: int) -> list[tuple[str, Callable[[], object]]]:
    """Return the (name, call) pairs measured at one image size."""
    pair = make_night_pair(seed=0, width=width, height=height, thermal_bits=16)
    rgb, counts = pair.visible, pair.infrared
    rgb_fields = array_to_image_fields(rgb, 'rgb8')
    mono16_fields = array_to_image_fields(counts, 'mono16')
    bgr_fields = array_to_image_fields(rgb[..., ::-1], 'bgr8')
    jpeg_format, jpeg = encode_compressed(rgb, 'rgb8', 'jpeg')
    png16_format, png16 = encode_compressed(counts, 'mono16', 'png')

    def fields_to_array(fields: object) -> Callable[[], object]:
        return lambda: image_to_array(fields.encoding, fields.height, fields.width, fields.step,
                                      fields.data, fields.is_bigendian)

    return [
        ('mono16 -> uint8 stretch (thermal_to_uint8)', lambda: thermal_to_uint8(counts)),
        ('mono16 message -> uint8 (view + stretch)',
         lambda: thermal_to_uint8(fields_to_array(mono16_fields)())),
        ('rgb8 message fields -> array (view)', fields_to_array(rgb_fields)),
        ('bgr8 message fields -> rgb8 array (copy)',
         lambda: to_rgb8(fields_to_array(bgr_fields)(), 'bgr8')),
        ('rgb8 array -> message fields (bytes)', lambda: array_to_image_fields(rgb, 'rgb8')),
        ('mono16 array -> message fields (bytes)',
         lambda: array_to_image_fields(counts, 'mono16')),
        (f'jpeg decode ({len(jpeg) // 1024} KiB)', lambda: decode_compressed(jpeg_format, jpeg)),
        ('jpeg encode (quality 95)', lambda: encode_compressed(rgb, 'rgb8', 'jpeg')),
        (f'png mono16 decode ({len(png16) // 1024} KiB)',
         lambda: decode_compressed(png16_format, png16)),
        # Not a codec, but what tests and the offline demo feed through it.
        ('synthetic night pair (make_night_pair, 16-bit)',
         lambda: make_night_pair(seed=0, width=width, height=height, thermal_bits=16)),
    ]


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--repeats', type=positive_int, default=200, help='timed calls per case')
    args = parser.parse_args()
    print(f'{"size":<9}  {"operation":<48} {"median ms":>9} {"p90 ms":>7} {"min ms":>7}')
    for width, height in ((640, 512), (1280, 1024)):
        for name, function in cases(width, height):
            median, p90, fastest = time_ms(function, args.repeats)
            size = f'{width}x{height}'   # one column whatever the digits
            print(f'{size:<9}  {name:<48} {median:9.3f} {p90:7.3f} {fastest:7.3f}')


if __name__ == '__main__':
    main()
