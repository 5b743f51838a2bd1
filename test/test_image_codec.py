"""Tests of ivf_ros.io.image_codec: Image fields <-> numpy, thermal stretch, compression."""

from __future__ import annotations

import array as pyarray
from types import SimpleNamespace

import cv2
from hypothesis import given, HealthCheck, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from ivf_ros.io.image_codec import (
    array_to_image_fields,
    compressed_size,
    decode_compressed,
    DEFAULT_MAX_PIXELS,
    encode_compressed,
    ENCODINGS,
    image_to_array,
    ImageFormatError,
    message_to_array,
    thermal_to_uint8,
    ThermalNormalizer,
    to_mono8,
    to_rgb8,
)

ALL_ENCODINGS = sorted(ENCODINGS)


def random_image(encoding: str, height: int = 6, width: int = 5, seed: int = 0) -> np.ndarray:
    """Return a random array in the layout of an encoding (full value range)."""
    info = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype.kind == 'f':
        return rng.normal(0.0, 1000.0, size=shape).astype(info.dtype)
    return rng.integers(0, np.iinfo(info.dtype).max, size=shape, endpoint=True,
                        dtype=info.dtype)


def pack_rows(array: np.ndarray, padding: int, big_endian: bool) -> tuple[int, bytes]:
    """Return (step, data) of an array written row by row with padding (a reference encoder)."""
    order = '>' if big_endian else '<'
    rows = []
    for row in array:
        rows.append(row.astype(array.dtype.newbyteorder(order)).tobytes() + b'\xab' * padding)
    return len(rows[0]), b''.join(rows)


@pytest.mark.parametrize('encoding', ALL_ENCODINGS)
def test_every_encoding_round_trips_bit_exactly(encoding: str) -> None:
    original = random_image(encoding)
    fields = array_to_image_fields(original, encoding)
    info = ENCODINGS[encoding]
    assert (fields.height, fields.width, fields.encoding) == (6, 5, encoding)
    assert fields.step == 5 * info.channels * info.dtype.itemsize
    assert fields.is_bigendian is False
    assert isinstance(fields.data, bytes) and len(fields.data) == fields.step * fields.height
    decoded = image_to_array(fields.encoding, fields.height, fields.width, fields.step,
                             fields.data, fields.is_bigendian)
    assert decoded.dtype == info.dtype and decoded.shape == original.shape
    assert decoded.tobytes() == original.tobytes()


@pytest.mark.parametrize('encoding', ALL_ENCODINGS)
def test_decoding_is_a_zero_copy_view_of_every_buffer_type(encoding: str) -> None:
    original = random_image(encoding)
    data = array_to_image_fields(original, encoding).data
    step = len(data) // 6
    for buffer in (data, bytearray(data), memoryview(data), pyarray.array('B', data),
                   np.frombuffer(data, np.uint8)):
        view = image_to_array(encoding, 6, 5, step, buffer)
        assert np.shares_memory(view, np.frombuffer(buffer, np.uint8))
        np.testing.assert_array_equal(view, original)


@pytest.mark.parametrize('encoding', ALL_ENCODINGS)
@pytest.mark.parametrize('padding', [1, 3, 8])
def test_step_padding_is_skipped_without_copy_where_samples_stay_aligned(encoding: str,
                                                                         padding: int) -> None:
    original = random_image(encoding, height=4, width=7)
    step, data = pack_rows(original, padding, big_endian=False)
    view = image_to_array(encoding, 4, 7, step, data)
    if padding % ENCODINGS[encoding].dtype.itemsize == 0:
        assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    else:   # unaligned samples: packed once, since OpenCV misreads unaligned views
        assert view.flags.c_contiguous and view.flags.aligned
    assert view.tobytes() == original.tobytes()
    # Padded rows survive a re-encode as tightly packed rows.
    fields = array_to_image_fields(view, encoding)
    assert fields.step == step - padding
    assert fields.data == original.tobytes()


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', '32FC1'])
def test_big_endian_data_is_decoded_to_native_values(encoding: str) -> None:
    original = random_image(encoding)
    step, data = pack_rows(original, padding=2, big_endian=True)
    decoded = image_to_array(encoding, 6, 5, step, data, is_bigendian=True)
    assert decoded.dtype.isnative
    assert decoded.tobytes() == original.tobytes()
    # The same bytes read as little endian are different values: the flag matters.
    assert image_to_array(encoding, 6, 5, step, data).tobytes() != original.tobytes()


def test_big_endian_flag_is_irrelevant_for_8_bit_data() -> None:
    original = random_image('rgb8')
    data = original.tobytes()
    view = image_to_array('rgb8', 6, 5, 15, data, is_bigendian=True)
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    np.testing.assert_array_equal(view, original)


def test_message_to_array_reads_any_message_like_object() -> None:
    original = random_image('mono16')
    fields = array_to_image_fields(original, 'mono16')
    message = SimpleNamespace(**vars(fields))
    np.testing.assert_array_equal(message_to_array(message), original)


def test_real_sensor_msgs_image_is_viewed_without_copy() -> None:
    image_module = pytest.importorskip('sensor_msgs.msg', reason='needs the ROS wheels (setup)')
    original = random_image('rgb8', 8, 9)
    fields = array_to_image_fields(original, 'rgb8')
    message = image_module.Image(height=fields.height, width=fields.width,
                                 encoding=fields.encoding, is_bigendian=fields.is_bigendian,
                                 step=fields.step, data=fields.data)
    view = message_to_array(message)
    # rclpy stores uint8[] as array.array('B'): the array must view that buffer.
    assert np.shares_memory(view, np.frombuffer(message.data, np.uint8))
    np.testing.assert_array_equal(view, original)


@pytest.mark.parametrize('encoding, height, width, step, size, message', [
    ('rgb16', 2, 2, 12, 24, "unknown image encoding 'rgb16'"),
    ('', 2, 2, 6, 12, "unknown image encoding ''"),
    ('RGB8', 2, 2, 6, 12, "unknown image encoding 'RGB8'"),
    ('rgb8', 2, 2, 6, 11, 'data has 11 bytes but step \\* height = 6 \\* 2 = 12'),
    ('rgb8', 2, 2, 6, 13, 'data has 13 bytes'),
    ('rgb8', 2, 2, 6, 0, 'data has 0 bytes'),
    ('rgb8', 2, 2, 5, 10, 'step 5 is smaller than width \\* channels \\* bytes = 2 \\* 3'),
    ('mono16', 2, 3, 5, 10, 'step 5 is smaller than .* = 6 for mono16'),
    ('32FC1', 1, 2, 7, 7, 'step 7 is smaller than .* = 8'),
    ('mono8', 0, 4, 4, 0, 'height is 0'),
    ('mono8', 4, 0, 4, 16, 'width is 0'),
    ('mono8', -1, 4, 4, 4, 'height is -1'),
    ('mono8', 2, 2.0, 2, 4, 'width must be an integer'),
    ('mono8', 2, 2, '2', 4, 'step must be an integer'),
])
def test_malformed_messages_raise_a_clear_error(encoding: str, height: int, width: int,
                                                 step: int, size: int, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        image_to_array(encoding, height, width, step, bytes(size))


def test_non_buffer_data_raises_image_format_error() -> None:
    with pytest.raises(ImageFormatError, match='not a Python list'):
        image_to_array('mono8', 1, 2, 2, [1, 2])
    with pytest.raises(ImageFormatError, match='not a byte buffer'):
        image_to_array('mono8', 1, 2, 2, 12)
    assert issubclass(ImageFormatError, ValueError)


@pytest.mark.parametrize('array, encoding, message', [
    (np.zeros((2, 2, 3), np.uint16), 'rgb8', 'rgb8 needs dtype uint8, got uint16'),
    (np.zeros((2, 2, 3), np.float64), 'rgb8', 'needs dtype uint8'),
    (np.zeros((2, 2), np.float64), '32FC1', 'needs dtype float32'),
    (np.zeros((2, 2), np.int16), 'mono16', 'needs dtype uint16'),
    (np.zeros((2, 2), np.uint8), 'rgb8', r'shape \(h, w, 3\), got \(2, 2\)'),
    (np.zeros((2, 2, 4), np.uint8), 'rgb8', r'\(h, w, 3\), got \(2, 2, 4\)'),
    (np.zeros((2, 2, 3), np.uint8), 'mono8', r'\(h, w\), got \(2, 2, 3\)'),
    (np.zeros((0, 2, 3), np.uint8), 'rgb8', 'zero-size image'),
    (np.zeros((2, 2), np.uint8), 'nv21', 'unknown image encoding'),
])
def test_arrays_that_do_not_fit_the_encoding_are_rejected(array: np.ndarray, encoding: str,
                                                          message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        array_to_image_fields(array, encoding)


def test_encoding_accepts_single_channel_stack_and_non_contiguous_arrays() -> None:
    grey = random_image('mono8', 4, 6)
    assert array_to_image_fields(grey[:, :, None], 'mono8').data == grey.tobytes()
    rgb = random_image('rgb8', 8, 10)
    strided = rgb[::2, 1::3]
    fields = array_to_image_fields(strided, 'rgb8')
    assert (fields.height, fields.width, fields.step) == (4, 3, 9)
    assert fields.data == np.ascontiguousarray(strided).tobytes()
    # A big-endian array is written little endian, as ROS publishers do.
    big = random_image('mono16').astype('>u2')
    assert array_to_image_fields(big, 'mono16').data == big.astype('<u2').tobytes()


def test_to_rgb8_for_every_encoding() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)  # red, green, blue
    assert to_rgb8(rgb, 'rgb8') is rgb
    np.testing.assert_array_equal(to_rgb8(rgb[..., ::-1].copy(), 'bgr8'), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb[..., ::-1].copy(), '8UC3'), rgb)
    alpha = np.full((1, 3, 1), 7, np.uint8)
    np.testing.assert_array_equal(to_rgb8(np.concatenate([rgb, alpha], 2), 'rgba8'), rgb)
    np.testing.assert_array_equal(
        to_rgb8(np.concatenate([rgb[..., ::-1], alpha], 2), 'bgra8'), rgb)
    for encoding in ALL_ENCODINGS:
        if ENCODINGS[encoding].channels == 2:
            continue  # 4:2:2 YUV needs an even width (tested below)
        out = to_rgb8(random_image(encoding), encoding)
        assert out.shape == (6, 5, 3) and out.dtype == np.uint8
        if not ENCODINGS[encoding].order:
            # Grey sources become grey RGB (Bayer mosaics carry colour in their order).
            assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_to_mono8_for_every_encoding() -> None:
    grey = random_image('mono8')
    assert to_mono8(grey, 'mono8') is grey
    assert to_mono8(grey, '8UC1') is grey
    rgb = np.stack([grey] * 3, axis=2)
    for encoding, colour in [('rgb8', rgb), ('bgr8', rgb), ('8UC3', rgb),
                             ('rgba8', np.dstack([rgb, grey])), ('bgra8', np.dstack([rgb, grey]))]:
        # Equal channels: the luma of grey is the grey itself (alpha ignored).
        np.testing.assert_array_equal(to_mono8(colour, encoding), grey)
    for encoding in ('mono16', '16UC1', '32FC1'):
        out = to_mono8(random_image(encoding), encoding)
        assert out.dtype == np.uint8 and out.shape == (6, 5) and out.max() == 255


def reference_stretch(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Return the stretch computed with numpy's exact percentiles (a slow reference)."""
    lo, hi = np.percentile(image, [low, high])
    return np.clip(np.round((image.astype(np.float64) - lo) * 255 / (hi - lo)), 0, 255)


def test_thermal_stretch_matches_exact_percentiles() -> None:
    rng = np.random.default_rng(1)
    counts = rng.normal(7800, 250, size=(128, 160)).astype(np.uint16)
    out = thermal_to_uint8(counts)
    assert out.dtype == np.uint8 and out.shape == counts.shape
    assert np.abs(out.astype(int) - reference_stretch(counts, 1, 99)).max() <= 1
    # Only ~1 % of pixels saturate at each end.
    assert 0.005 < np.mean(out == 0) < 0.02 and 0.005 < np.mean(out == 255) < 0.02


def test_thermal_stretch_of_a_large_frame_uses_a_subsample_that_still_agrees() -> None:
    rng = np.random.default_rng(2)
    counts = (rng.normal(7800, 250, size=(512, 640)) + np.linspace(0, 600, 640)).astype(
        np.uint16)
    out = thermal_to_uint8(counts, 2.0, 98.0)
    assert np.abs(out.astype(int) - reference_stretch(counts, 2, 98)).mean() < 1.0


def test_thermal_stretch_ignores_hot_and_dead_pixels() -> None:
    ramp = np.tile(np.linspace(7000, 9000, 200).astype(np.uint16), (50, 1))
    clean = thermal_to_uint8(ramp)
    spoiled = ramp.copy()
    spoiled[0, :20] = 65535  # 0.2 % hot pixels: a min-max or bit shift would flatten the scene
    spoiled[1, :20] = 0
    out = thermal_to_uint8(spoiled)
    assert np.abs(out[2:].astype(int) - clean[2:].astype(int)).max() <= 2
    assert out.min() == 0 and out.max() == 255
    # Order preserving: a monotonic ramp stays monotonic.
    assert (np.diff(clean[0].astype(int)) >= 0).all()


def test_thermal_stretch_edge_cases() -> None:
    flat = np.full((4, 4), 7777, np.uint16)
    # A flat frame shows its level on the 16-bit scale: saturated is white, not 'cold' black.
    np.testing.assert_array_equal(thermal_to_uint8(flat), round(255 * 7777 / 65535))
    np.testing.assert_array_equal(thermal_to_uint8(np.full((4, 4), 65535, np.uint16)), 255)
    np.testing.assert_array_equal(thermal_to_uint8(np.full((4, 4), 36.6, np.float32)), 128)
    flat[0, 0] = 8000
    assert thermal_to_uint8(flat, 0, 100)[0, 0] == 255
    floats = np.linspace(-1.0, 1.0, 100, dtype=np.float32).reshape(10, 10)
    floats[0, 0], floats[0, 1] = np.nan, np.inf
    out = thermal_to_uint8(floats, 0, 100)
    # Non-finite pixels are no reading: black, and left out of the percentiles.
    assert out[0, 0] == out[0, 1] == 0 and out[9, 9] == 255 and out[0, 2] == 0
    assert out[5, 0] == round((floats[5, 0] - floats[0, 2]) * 255 / (1 - floats[0, 2]))
    np.testing.assert_array_equal(thermal_to_uint8(np.full((3, 3), np.nan, np.float32)), 0)
    for dtype in (np.uint8, np.int16, np.int32, np.float64, '>u2'):
        ramp = np.arange(100).reshape(10, 10).astype(dtype)
        stretched = thermal_to_uint8(ramp, 0, 100)
        assert stretched[0, 0] == 0 and stretched[9, 9] == 255, dtype
    np.testing.assert_array_equal(thermal_to_uint8(ramp[:, :, None]), thermal_to_uint8(ramp))


@pytest.mark.parametrize('low, high', [(-1, 99), (50, 50), (60, 40), (1, 101)])
def test_thermal_stretch_rejects_bad_percentiles(low: float, high: float) -> None:
    with pytest.raises(ValueError, match='percentiles'):
        thermal_to_uint8(np.zeros((2, 2), np.uint16), low, high)


@pytest.mark.parametrize('array', [np.zeros((2, 2, 3), np.uint16), np.zeros((0, 3), np.uint16),
                                   np.zeros((2, 2), np.uint64), np.zeros((2, 2), bool)])
def test_thermal_stretch_rejects_bad_arrays(array: np.ndarray) -> None:
    with pytest.raises(ImageFormatError):
        thermal_to_uint8(array)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', '8UC3', 'mono8', '8UC1', 'mono16', '16UC1'])
def test_png_round_trip_is_lossless(encoding: str) -> None:
    original = random_image(encoding, 16, 24)
    fmt, data = encode_compressed(original, encoding, 'png')
    colour = ENCODINGS[encoding].channels == 3
    assert fmt == f'{encoding}; png compressed ' + ('bgr8' if colour else '')
    decoded, decoded_encoding = decode_compressed(fmt, data)
    assert decoded_encoding == encoding
    np.testing.assert_array_equal(decoded, original)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8'])
def test_jpeg_round_trip_is_close(encoding: str) -> None:
    # A smooth image: JPEG keeps it within a few grey levels.
    ramp = np.linspace(0, 255, 64 * 48).reshape(48, 64).astype(np.uint8)
    original = ramp if encoding == 'mono8' else np.dstack([ramp, ramp[::-1], ramp[:, ::-1]])
    fmt, data = encode_compressed(original, encoding)
    assert fmt.startswith(f'{encoding}; jpeg compressed ')
    decoded, decoded_encoding = decode_compressed(fmt, data)
    assert decoded_encoding == encoding and decoded.shape == original.shape
    assert np.abs(decoded.astype(int) - original.astype(int)).mean() < 3


def test_compressed_data_is_read_from_any_buffer_type() -> None:
    original = random_image('mono8', 8, 8)
    fmt, data = encode_compressed(original, 'mono8', 'png')
    # rclpy stores CompressedImage.data as array.array('B'): no bytes() copy needed.
    for buffer in (data, bytearray(data), memoryview(data), pyarray.array('B', data),
                   np.frombuffer(data, np.uint8)):
        decoded, encoding = decode_compressed(fmt, buffer)
        assert encoding == 'mono8'
        np.testing.assert_array_equal(decoded, original)


def test_compressed_colour_order_follows_the_format_string() -> None:
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    _, data = encode_compressed(red, 'rgb8', 'png')
    rgb, encoding = decode_compressed('rgb8; png compressed bgr8', data)
    assert encoding == 'rgb8' and rgb[0, 0].tolist() == [255, 0, 0]
    bgr, encoding = decode_compressed('png', data)  # bare format: OpenCV's BGR order
    assert encoding == 'bgr8' and bgr[0, 0].tolist() == [0, 0, 255]
    bgr, encoding = decode_compressed('bgr8; jpeg compressed bgr8', data)
    assert encoding == 'bgr8' and bgr[0, 0].tolist() == [0, 0, 255]
    # Payload declared as RGB (older publishers): channels are taken as they are.
    as_rgb, encoding = decode_compressed('rgb8; png compressed rgb8', data)
    assert encoding == 'rgb8' and as_rgb[0, 0].tolist() == [0, 0, 255]
    # rgba8 through JPEG/PNG loses alpha (image_transport converts to bgr8): RGB comes back.
    rgba = np.dstack([red, np.full((16, 16), 9, np.uint8)])
    fmt, data = encode_compressed(rgba, 'rgba8', 'png')
    out, encoding = decode_compressed(fmt, data)
    assert encoding == 'rgb8' and out[0, 0].tolist() == [255, 0, 0]


def test_four_channel_png_keeps_alpha_in_the_asked_order() -> None:
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 17  # blue, alpha
    ok, png = cv2.imencode('.png', bgra)
    assert ok
    out, encoding = decode_compressed('rgba8; png compressed', png.tobytes())
    assert encoding == 'rgba8' and out[0, 0].tolist() == [0, 0, 200, 17]
    out, encoding = decode_compressed('png', png.tobytes())
    assert encoding == 'bgra8' and out[0, 0].tolist() == [200, 0, 0, 17]


def test_compressed_depth_png_with_config_header() -> None:
    depth = random_image('16UC1', 8, 8)
    _, png = encode_compressed(depth, '16UC1', 'png')
    header = bytes(12)  # compressed_depth_image_transport's ConfigHeader (format, 2 floats)
    out, encoding = decode_compressed('16UC1; compressedDepth png', header + png)
    assert encoding == '16UC1'
    np.testing.assert_array_equal(out, depth)
    with pytest.raises(ImageFormatError, match='compressedDepth is supported for 16UC1 only'):
        decode_compressed('32FC1; compressedDepth png', header + png)


def test_malformed_compressed_images_raise_a_clear_error() -> None:
    _, data = encode_compressed(random_image('mono8'), 'mono8', 'png')
    with pytest.raises(ImageFormatError, match="unknown CompressedImage format 'tiff'"):
        decode_compressed('tiff', data)
    with pytest.raises(ImageFormatError, match='empty CompressedImage data'):
        decode_compressed('png', b'')
    with pytest.raises(ImageFormatError, match='cannot decode 20 bytes as png'):
        decode_compressed('png', data[:20])
    with pytest.raises(ImageFormatError, match='neither PNG nor JPEG'):
        decode_compressed('mono8; jpeg compressed ', b'not a jpeg at all')
    with pytest.raises(ImageFormatError, match='jpeg needs 8-bit images, got mono16'):
        encode_compressed(random_image('mono16'), 'mono16', 'jpeg')
    with pytest.raises(ImageFormatError, match='png cannot hold 32FC1'):
        encode_compressed(random_image('32FC1'), '32FC1', 'png')
    with pytest.raises(ImageFormatError, match="unknown compression 'webp'"):
        encode_compressed(random_image('mono8'), 'mono8', 'webp')


# Property: any supported encoding, shape, row padding and byte order decodes bit-exactly,
# and re-encodes to the tightly packed little-endian bytes of the same pixels.
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoding=st.sampled_from(ALL_ENCODINGS), height=st.integers(1, 9),
       width=st.integers(1, 9), padding=st.integers(0, 9), big_endian=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_property_any_layout_round_trips_bit_exactly(encoding: str, height: int, width: int,
                                                     padding: int, big_endian: bool,
                                                     seed: int) -> None:
    info = ENCODINGS[encoding]
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    # Random bytes, so float images include NaNs, infinities and denormals: compare bits.
    raw = np.random.default_rng(seed).bytes(int(np.prod(shape)) * info.dtype.itemsize)
    original = np.frombuffer(raw, info.dtype).reshape(shape)
    step, data = pack_rows(original, padding, big_endian)
    decoded = image_to_array(encoding, height, width, step, data, big_endian)
    assert decoded.shape == shape and decoded.dtype.isnative
    assert decoded.tobytes() == original.tobytes()
    if not (big_endian and info.dtype.itemsize > 1) and padding % info.dtype.itemsize == 0:
        assert np.shares_memory(decoded, np.frombuffer(data, np.uint8))
    assert decoded.flags.aligned
    fields = array_to_image_fields(decoded, encoding)
    assert fields.data == original.astype(info.dtype.newbyteorder('<')).tobytes()
    assert fields.step * fields.height == len(fields.data)
    # Display conversions accept every layout the decoder gives (padded, unaligned views),
    # except driver formats too small to convert: a Bayer cell is 2x2, a YUV pair 2 wide.
    if info.order.startswith('bayer'):
        convertible = min(height, width) >= 2
    else:
        convertible = info.channels != 2 or width % 2 == 0
    if convertible:
        assert to_rgb8(decoded, encoding).shape == (height, width, 3)
        assert to_mono8(decoded, encoding).shape == (height, width)
    else:
        with pytest.raises(ImageFormatError, match='2x2|even'):
            to_rgb8(decoded, encoding)


# Property: the stretch preserves the order of pixel values (a brighter count never maps to a
# darker grey), uses the full range, and saturates about the requested share of pixels.
@settings(max_examples=500, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(1, 24), width=st.integers(2, 24),
       spread=st.integers(1, 20000), low=st.floats(0, 10), high=st.floats(90, 100))
def test_property_thermal_stretch_is_monotonic_and_full_range(
        seed: int, height: int, width: int, spread: int, low: float, high: float) -> None:
    rng = np.random.default_rng(seed)
    counts = (7000 + rng.integers(0, spread, size=(height, width), endpoint=True)).astype(
        np.uint16)
    out = thermal_to_uint8(counts, low, high)
    order = np.argsort(counts, axis=None, kind='stable')
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()
    if counts.min() < counts.max():
        assert out.max() == 255
        assert out.min() == 0
    # Pixels strictly below the low percentile are clipped to 0: no more than low % of them.
    assert np.mean(counts < np.percentile(counts, low, method='inverted_cdf')) <= low / 100


@pytest.mark.parametrize('encoding, pattern', [
    ('bayer_rggb8', 'RGGB'), ('bayer_bggr8', 'BGGR'), ('bayer_gbrg8', 'GBRG'),
    ('bayer_grbg8', 'GRBG')])
def test_bayer_mosaics_demosaic_to_their_colour(encoding: str, pattern: str) -> None:
    # A uniform orange scene seen through each colour filter array: the pattern names the
    # filters of the 2x2 cell row by row.
    colour = {'R': 200, 'G': 120, 'B': 40}
    cell = np.array([[colour[pattern[0]], colour[pattern[1]]],
                     [colour[pattern[2]], colour[pattern[3]]]], np.uint8)
    mosaic = np.tile(cell, (8, 8))
    rgb = to_rgb8(mosaic, encoding)
    assert rgb.shape == (16, 16, 3)
    np.testing.assert_allclose(rgb[4:-4, 4:-4].reshape(-1, 3).mean(0), [200, 120, 40], atol=2)
    assert abs(int(to_mono8(mosaic, encoding)[8, 8]) - round(0.299 * 200 + 0.587 * 120
                                                             + 0.114 * 40)) <= 2


@pytest.mark.parametrize('encoding', ['yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'])
def test_yuv422_driver_frames_convert_to_rgb(encoding: str) -> None:
    # Orange in BT.601 YUV, packed as the driver does: UYVY (ROS yuv422) or YUYV (yuy2).
    y, u, v = 136, 78, 173
    pair = [u, y, v, y] if ENCODINGS[encoding].order == 'uyvy' else [y, u, y, v]
    packed = np.tile(np.array(pair, np.uint8).reshape(1, 2, 2), (4, 3, 1))  # (4, 6, 2)
    data = array_to_image_fields(packed, encoding)
    decoded = image_to_array(encoding, 4, 6, data.step, data.data)
    rgb = to_rgb8(decoded, encoding)
    assert rgb.shape == (4, 6, 3)
    red, green, blue = rgb.reshape(-1, 3).mean(0)
    assert red > green > blue and red > 180, (red, green, blue)
    assert (to_mono8(decoded, encoding) == y).all()
    with pytest.raises(ImageFormatError, match='even'):
        to_rgb8(packed[:, :5], encoding)


def test_compressed_headers_give_the_size_and_bombs_are_refused_before_decoding() -> None:
    grey = random_image('mono8')
    for fmt in ('jpeg', 'png'):
        _, data = encode_compressed(grey, 'mono8', fmt)
        assert compressed_size(data) == (5, 6)
    assert compressed_size(b'no image here') is None
    # A tiny JPEG whose frame header claims 60000 x 60000 pixels (3.6 GP): never decoded.
    _, data = encode_compressed(np.zeros((8, 8), np.uint8), 'mono8', 'jpeg')
    bomb = bytearray(data)
    index = next(i for i in range(2, len(bomb) - 9)
                 if bomb[i] == 0xFF and bomb[i + 1] in (0xC0, 0xC1, 0xC2))
    bomb[index + 5:index + 9] = (60000).to_bytes(2, 'big') * 2
    assert compressed_size(bytes(bomb)) == (60000, 60000)
    with pytest.raises(ImageFormatError, match='exceeds max_pixels'):
        decode_compressed('mono8; jpeg compressed ', bytes(bomb), max_pixels=DEFAULT_MAX_PIXELS)
    # Without a limit OpenCV's own (2^30 pixels) refuses it: still an ImageFormatError.
    with pytest.raises(ImageFormatError):
        decode_compressed('mono8; jpeg compressed ', bytes(bomb))
    with pytest.raises(ImageFormatError, match='exceeds max_pixels'):
        image_to_array('mono8', 5000, 5000, 5000, b'', max_pixels=DEFAULT_MAX_PIXELS)


def test_thermal_normalizer_smooths_auto_ranges_and_keeps_fixed_ones() -> None:
    scene = np.tile(np.arange(1000, 2000, 10, dtype=np.uint16), (100, 1))  # (100, 100) ramp
    auto = ThermalNormalizer('auto', smoothing=0.9)
    first = auto(scene, 'mono16')
    hot = scene.copy()
    hot[:10, :10] = 30000  # a hot exhaust enters the view for one frame
    hot[10:20, :10] = 25000
    # One frame later the scene's mean level moves less than a per-frame stretch moves it...
    jump = abs(float(auto(hot, 'mono16')[50:].mean()) - float(first[50:].mean()))
    unsmoothed = abs(float(thermal_to_uint8(hot)[50:].mean()) - float(first[50:].mean()))
    assert jump < 0.9 * unsmoothed, (jump, unsmoothed)
    # ... and once the exhaust stays, the stretch settles on the per-frame one.
    for _ in range(80):
        settled = auto(hot, 'mono16')
    assert np.abs(settled.astype(int) - thermal_to_uint8(hot).astype(int)).max() <= 2
    fixed = ThermalNormalizer('fixed', fixed_range=(1000.0, 2000.0))
    assert fixed(scene, 'mono16')[0, 0] == 0 and fixed(scene, 'mono16')[0, -1] == 252
    celsius = np.full((4, 4), 36.6, np.float32)
    assert (ThermalNormalizer('fixed', fixed_range=(20.0, 40.0))(celsius, '32FC1')
            == round(255 * 16.6 / 20)).all()
    grey = random_image('mono8')
    assert ThermalNormalizer()(grey, 'mono8') is grey
    with pytest.raises(ValueError, match='thermal mode'):
        ThermalNormalizer('percentile')


@pytest.mark.parametrize('original', ['yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv', 'bayer_rggb8'])
def test_compressed_frames_of_yuv_and_bayer_cameras_decode_in_the_decoded_order(
        original: str) -> None:
    # image_transport converts such frames to bgr8 before compressing them.
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 0] = 255                                              # blue
    ok, png = cv2.imencode('.png', bgr)
    assert ok
    out, encoding = decode_compressed(f'{original}; png compressed bgr8', png.tobytes())
    assert encoding == 'bgr8' and out[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize('extension', ['.tiff', '.webp', '.jp2', '.bmp'])
def test_other_image_formats_are_refused_whatever_the_format_string(extension: str) -> None:
    # cv2.imdecode reads them all, and a few hundred bytes of JPEG 2000 or WebP can unpack to
    # a 5000 x 5000 frame that no header check has seen.
    ok, data = cv2.imencode(extension, np.zeros((40, 40), np.uint8))
    assert ok
    for fmt in ('mono8; jpeg compressed ', 'png'):
        with pytest.raises(ImageFormatError, match='neither PNG nor JPEG'):
            decode_compressed(fmt, data.tobytes())


def test_a_jpeg_whose_size_cannot_be_read_first_is_refused_under_a_pixel_limit() -> None:
    _, data = encode_compressed(np.full((8, 8), 90, np.uint8), 'mono8', 'jpeg')
    # A junk byte after the APP0 segment: libjpeg skips it, the header walk stops there.
    app0_end = 4 + int.from_bytes(data[4:6], 'big')
    damaged = data[:app0_end] + b'\x00' + data[app0_end:]
    assert compressed_size(damaged) is None
    with pytest.raises(ImageFormatError, match='does not state its size'):
        decode_compressed('mono8; jpeg compressed ', damaged, max_pixels=DEFAULT_MAX_PIXELS)
    out, _ = decode_compressed('mono8; jpeg compressed ', damaged)      # no limit asked for
    assert out.shape == (8, 8)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
def test_16_bit_rows_padded_by_an_odd_byte_count_convert_like_packed_ones(encoding: str) -> None:
    # A step that is not a multiple of 2: a strided view would be unaligned, which OpenCV
    # misreads after the first row.
    packed = (np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 100).astype(np.uint16)
    step, data = pack_rows(packed, padding=1, big_endian=False)
    assert step == 17
    view = image_to_array(encoding, 6, 8, step, data)
    assert np.array_equal(view, packed)
    assert np.array_equal(to_mono8(view, encoding), to_mono8(packed, encoding))
    assert np.array_equal(thermal_to_uint8(view), thermal_to_uint8(packed))


@pytest.mark.parametrize('encoding', ['bayer_rggb8', 'yuv422', 'yuv422_yuy2'])
def test_mosaic_and_yuv_frames_compress_as_colour_like_image_transport(encoding: str) -> None:
    image = random_image(encoding, 8, 8)
    fmt, data = encode_compressed(image, encoding, 'png')
    assert fmt == f'{encoding}; png compressed bgr8'
    out, decoded = decode_compressed(fmt, data)
    assert decoded == 'bgr8'
    assert np.array_equal(out, cv2.cvtColor(to_rgb8(image, encoding), cv2.COLOR_RGB2BGR))
