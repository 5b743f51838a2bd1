"""Classical fusion baselines: shapes, colour handling and closed-form cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ivf_ros.evaluation.baselines import (
    BASELINES,
    collapse_pyramid,
    enhance_luminance,
    FusionInputError,
    laplacian_fuse,
    laplacian_pyramid,
    luminance,
    pyramid_levels,
)

EXPECTED_NAMES = {'visible', 'infrared', 'average', 'max', 'laplacian', 'clahe_laplacian'}


def _pair(height: int = 48, width: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return a dark colourful visible image and a smooth infrared image with a warm blob."""
    rng = np.random.default_rng(seed)
    visible = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    blob = 200 * np.exp(-((yy - height / 2) ** 2 + (xx - width / 3) ** 2) / 60.0)
    infrared = np.clip(30 + blob, 0, 255).astype(np.uint8)
    return visible, infrared


def test_names_and_output_format() -> None:
    assert set(BASELINES) == EXPECTED_NAMES
    visible, infrared = _pair()
    for name, fuse in BASELINES.items():
        fused = fuse(visible, infrared)
        assert fused.shape == visible.shape and fused.dtype == np.uint8, name


def test_visible_and_infrared_passthrough() -> None:
    visible, infrared = _pair()
    np.testing.assert_array_equal(BASELINES['visible'](visible, infrared), visible)
    fused = BASELINES['infrared'](visible, infrared)
    for channel in range(3):
        np.testing.assert_array_equal(fused[..., channel], infrared)


@pytest.mark.parametrize('name', ['average', 'max', 'laplacian'])
def test_identical_grey_inputs_give_the_input(name: str) -> None:
    # A grey visible image equal to the infrared image: every fusion rule returns it.
    _, infrared = _pair()
    visible = cv2.cvtColor(infrared, cv2.COLOR_GRAY2RGB)
    fused = BASELINES[name](visible, infrared)
    assert np.abs(fused.astype(int) - visible).max() <= 1


@pytest.mark.parametrize('name', ['average', 'max', 'laplacian', 'clahe_laplacian'])
def test_visible_chroma_is_kept(name: str) -> None:
    visible, infrared = _pair()
    visible[..., 0] = 120  # a strongly red image, so chroma is far from neutral
    fused = BASELINES[name](visible, infrared)
    chroma_in = cv2.cvtColor(visible, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(int)
    chroma_out = cv2.cvtColor(fused, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(int)
    # RGB rounding and gamut clipping of bright pixels move chroma a little, never much.
    assert np.median(np.abs(chroma_out - chroma_in)) <= 2


def test_max_is_the_pixelwise_maximum_of_luminance() -> None:
    visible, infrared = _pair()
    fused_y = luminance(BASELINES['max'](visible, infrared)).astype(int)
    expected = np.maximum(luminance(visible), infrared).astype(int)
    assert np.abs(fused_y - expected).max() <= 2


def test_pyramid_reconstructs_exactly() -> None:
    image = np.random.default_rng(1).uniform(0, 255, (37, 53)).astype(np.float32)
    pyramid = laplacian_pyramid(image, 2)
    assert len(pyramid) == 3
    np.testing.assert_allclose(collapse_pyramid(pyramid), image, atol=1e-3)
    np.testing.assert_allclose(laplacian_fuse(image, image), image, atol=1e-3)


def test_pyramid_levels_bounds() -> None:
    assert pyramid_levels(8, 8) == 0
    assert pyramid_levels(480, 640) == 4  # 480 / 2**4 = 30 >= 16
    assert pyramid_levels(4096, 4096) == 5


def test_laplacian_keeps_infrared_hot_spot() -> None:
    visible, infrared = _pair()
    fused_y = luminance(BASELINES['laplacian'](visible, infrared))
    peak = np.unravel_index(np.argmax(infrared), infrared.shape)
    assert fused_y[peak] > luminance(visible)[peak] + 50


def test_enhancement_brightens_dark_images_only() -> None:
    dark = np.random.default_rng(2).integers(0, 30, (64, 64), dtype=np.uint8)
    assert enhance_luminance(dark).mean() > 2 * dark.mean()


def test_bad_inputs_raise() -> None:
    visible, infrared = _pair()
    with pytest.raises(FusionInputError, match='sizes differ'):
        BASELINES['laplacian'](visible, infrared[:-1])
    with pytest.raises(FusionInputError, match='uint8'):
        BASELINES['average'](visible.astype(np.float32), infrared)
    with pytest.raises(FusionInputError, match='infrared'):
        BASELINES['max'](visible, visible)


@pytest.mark.parametrize('shape', [(1, 1), (1, 50), (17, 3), (31, 33), (65, 129)])
def test_odd_and_tiny_sizes_keep_shape_and_range(shape: tuple[int, int]) -> None:
    # pyrDown/pyrUp of odd sides and bright saturated pixels: same shape, no uint8 wrap-around.
    rng = np.random.default_rng(3)
    visible = rng.integers(200, 256, (*shape, 3), dtype=np.uint8)
    infrared = np.full(shape, 255, np.uint8)
    for name, fuse in BASELINES.items():
        fused = fuse(visible, infrared)
        assert fused.shape == visible.shape and fused.dtype == np.uint8, name
        if name in ('max', 'average'):   # bright + bright stays bright (a wrap would be dark)
            assert luminance(fused).min() >= luminance(visible).min() - 2, name
