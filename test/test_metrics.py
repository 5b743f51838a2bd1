"""Fusion metrics: closed-form values, agreement of conventions, and property tests."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
import numpy as np
import pytest

from ivf_ros.evaluation import metrics
from ivf_ros.evaluation.metrics import (
    evaluate,
    FUSION_METRICS,
    MetricInputError,
    METRICS,
    QABF_MAX,
    TANG_PSNR_OFFSET_DB,
)

# 18 x 20 is the smallest size at which every metric is active (VIF's first window has 17 taps).
SMALL = (18, 20)
grey_images = arrays(np.uint8, SMALL, elements=st.integers(0, 255)).map(
    lambda image: image.astype(np.float64))
SYMMETRIC_IN_SOURCES = ['MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'PSNR', 'PSNR_tang', 'CC']


def _texture(shape: tuple[int, int] = (48, 64), seed: int = 0) -> np.ndarray:
    """Return a smooth-plus-noise grey test image (float64, 0-255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = 120 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 8, shape)
    return np.clip(np.rint(image), 0, 255)


def test_entropy_closed_forms() -> None:
    assert metrics.entropy(np.full((16, 16), 77.0)) == 0.0
    ramp = np.arange(256, dtype=np.float64).reshape(16, 16)  # every level once: uniform
    assert metrics.entropy(ramp) == pytest.approx(8.0)
    two_levels = np.tile([0.0, 255.0], (8, 4))
    assert metrics.entropy(two_levels) == pytest.approx(1.0)


def test_constant_image_has_no_contrast_or_gradient() -> None:
    constant = np.full((20, 30), 128.0)
    assert metrics.standard_deviation(constant) == 0.0
    assert metrics.spatial_frequency(constant) == 0.0
    assert metrics.average_gradient(constant) == 0.0
    assert metrics.noise_sigma(constant) == 0.0


def test_ramp_gradients() -> None:
    ramp = np.tile(np.arange(30, dtype=np.float64), (20, 1))  # +1 per column
    assert metrics.spatial_frequency(ramp) == pytest.approx(1.0)  # sqrt(1 + 0)
    assert metrics.average_gradient(ramp) == pytest.approx(math.sqrt(0.5))


def test_similarity_of_an_image_with_itself() -> None:
    image = _texture()
    assert metrics.ssim_pair(image, image) == pytest.approx(1.0)
    assert metrics.correlation_coefficient(image, image, image) == pytest.approx(1.0)
    assert metrics.vif_pair(image, image) == pytest.approx(1.0)
    assert metrics.qabf(image, image, image) == pytest.approx(QABF_MAX)
    assert QABF_MAX == pytest.approx(0.9748, abs=1e-4)
    assert metrics.psnr(image, image, image) == math.inf
    # MI of an image with itself is its entropy (both in bits).
    assert metrics.mutual_information_pair(image, image) == pytest.approx(
        metrics.entropy(image))


def test_qabf_penalises_lost_edges() -> None:
    image = _texture()
    blurred = np.full_like(image, image.mean())
    # Only the frame of zero padding (an edge in every image, as in the reference code) survives.
    assert metrics.qabf(blurred, image, image) < 0.3
    assert metrics.qabf(image + 20, image, image) > 0.9  # a brightness shift keeps edges


def test_scd_and_cc_closed_forms() -> None:
    visible, infrared = _texture(seed=1), _texture(seed=2)[:, ::-1]
    # F = A + B: F - B = A and F - A = B, so both correlations are 1.
    assert metrics.sum_of_correlation_differences(
        visible + infrared, visible, infrared) == pytest.approx(2.0)
    assert metrics.correlation_coefficient(
        np.full_like(visible, 9.0), visible, infrared) == 0.0  # constant F: defined as 0


def test_psnr_conventions() -> None:
    visible = _texture()
    fused = visible + 10.0  # MSE 100 to both sources
    expected = 10 * math.log10(255.0 ** 2 / 100.0)
    assert metrics.psnr(fused, visible, visible) == pytest.approx(expected)
    assert TANG_PSNR_OFFSET_DB == pytest.approx(48.1308, abs=1e-4)
    # Tang's toolbox: sources and F divided by 255, peak kept at 255.
    mse_01 = 100.0 / 255.0 ** 2
    tang = 20 * math.log10(255.0 / math.sqrt(mse_01))
    assert metrics.psnr_tang(fused, visible, visible) == pytest.approx(tang)


def test_ssim_reported_with_cddfuse_constants() -> None:
    visible, infrared = _texture(seed=1), _texture(seed=2)
    fused = 0.5 * (visible + infrared)
    expected = (metrics.ssim_pair(visible, fused, 2.0) + metrics.ssim_pair(infrared, fused, 2.0))
    assert metrics.ssim(fused, visible, infrared) == pytest.approx(expected)
    assert metrics.ssim(visible, visible, visible) == pytest.approx(2.0)


def test_no_reference_metrics() -> None:
    image = np.full((40, 40), 100.0)
    image[:10] = 255.0
    image[10:20] = 0.0
    assert metrics.clipped_fraction(image) == pytest.approx(0.5)
    assert metrics.mean_brightness(image) == pytest.approx((255 * 10 + 100 * 20) / 40)
    noisy = 128 + np.random.default_rng(3).normal(0, 10, (200, 200))
    assert metrics.noise_sigma(noisy) == pytest.approx(10.0, rel=0.25)


def test_lightness_order_error() -> None:
    rgb = np.dstack([_texture(seed=seed) for seed in range(3)]).astype(np.uint8)
    assert metrics.lightness_order_error(rgb, rgb) == 0.0
    assert metrics.lightness_order_error(rgb, 255 - rgb) > 0.5 * 48 * 64 * (50 / 48)


def test_evaluate_returns_every_metric_and_checks_inputs() -> None:
    rng = np.random.default_rng(0)
    visible = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    infrared = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    results = evaluate(visible, infrared, visible)
    assert list(results) == list(METRICS)
    assert all(isinstance(value, float) for value in results.values())
    assert evaluate(visible, infrared, visible, ['EN']).keys() == {'EN'}
    with pytest.raises(MetricInputError, match='differ in size'):
        evaluate(visible, infrared[:-1], visible)
    with pytest.raises(MetricInputError, match='unknown metrics'):
        evaluate(visible, infrared, visible, ['BRISQUE'])
    with pytest.raises(MetricInputError, match='shape'):
        evaluate(visible, infrared[None], visible)
    with pytest.raises(MetricInputError, match=r'too small .*at least 7 x 7'):
        evaluate(visible[:6, :6], infrared[:6, :6], visible[:6, :6])   # SSIM would be NaN


@settings(max_examples=100, deadline=None)
@given(fused=grey_images, visible=grey_images, infrared=grey_images)
def test_source_symmetric_metrics_ignore_the_order_of_sources(
        fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> None:
    for name in SYMMETRIC_IN_SOURCES:
        forward = FUSION_METRICS[name](fused, visible, infrared)
        swapped = FUSION_METRICS[name](fused, infrared, visible)
        assert forward == pytest.approx(swapped, rel=1e-9, abs=1e-9), name


@settings(max_examples=100, deadline=None)
@given(x=grey_images, y=grey_images)
def test_pairwise_properties(x: np.ndarray, y: np.ndarray) -> None:
    mi = metrics.mutual_information_pair(x, y)
    assert mi == pytest.approx(metrics.mutual_information_pair(y, x))
    assert -1e-9 <= mi <= min(metrics.entropy(x), metrics.entropy(y)) + 1e-9
    similarity = metrics.ssim_pair(x, y)
    assert similarity == pytest.approx(metrics.ssim_pair(y, x))
    assert -1.0 <= similarity <= 1.0 + 1e-12
    assert 0.0 <= metrics.qabf(x, y, y) <= QABF_MAX + 1e-6  # float32 sigmoids
    assert 0.0 <= metrics.entropy(x) <= 8.0


def test_colour_cast_is_zero_for_grey_and_scale_free() -> None:
    grey = np.full((4, 5, 3), 80, np.uint8)
    assert metrics.colour_cast(grey) == pytest.approx(0.0)
    green = np.zeros((4, 5, 3), np.uint8)
    green[..., 1] = 60
    green[..., 0] = green[..., 2] = 30
    assert metrics.colour_cast(green) > 0.1
    assert metrics.colour_cast(green * 2) == pytest.approx(metrics.colour_cast(green))
    assert metrics.colour_cast(np.zeros((2, 2, 3), np.uint8)) == 0.0


def test_clipped_channels_counts_a_pixel_once() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    image[0, 0] = (0, 255, 100)     # two clipped channels, one pixel
    image[1, 1, 2] = 0
    assert metrics.clipped_channels_fraction(image) == pytest.approx(0.5)


def test_integer_images_give_the_float_images_values() -> None:
    # uint8 arithmetic wraps (a - b, x * x): every public grey metric converts first.
    fused, visible, infrared = (_texture(seed=seed) for seed in range(3))
    as_bytes = [image.astype(np.uint8) for image in (fused, visible, infrared)]
    for name, metric in FUSION_METRICS.items():
        assert metric(*as_bytes) == metric(fused, visible, infrared), name
    for name, metric in metrics.IMAGE_METRICS.items():
        assert metric(as_bytes[0]) == metric(fused), name
    assert metrics.ssim_pair(as_bytes[0], as_bytes[1]) == metrics.ssim_pair(fused, visible)
    assert metrics.vif_pair(as_bytes[1], as_bytes[0]) == metrics.vif_pair(visible, fused)
