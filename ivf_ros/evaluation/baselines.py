"""Classical visible-infrared fusion baselines (numpy/OpenCV) that every model is compared with.

Each baseline maps (visible (h, w, 3) uint8 RGB, infrared (h, w) uint8) to a fused (h, w, 3)
uint8 RGB image. Colour is handled the usual way for grey/colour fusion: only the luminance
(Y of YCrCb, BT.601 weights) is fused, and the visible chroma (Cr, Cb) is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

FusionFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Smallest image side kept at the coarsest pyramid level: smaller bases only blur the average.
MIN_BASE_SIDE = 16
MAX_PYRAMID_LEVELS = 5
# CLAHE settings of the two-stage baseline (OpenCV's common defaults for 8-bit images).
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)
# Gamma lifts the visible mean luminance towards this level before CLAHE (night images sit near
# 10-40 of 255; CLAHE alone cannot brighten globally).
TARGET_MEAN_LUMINANCE = 0.35
MIN_GAMMA = 0.35


class FusionInputError(ValueError):
    """The visible/infrared inputs of a baseline have the wrong shape or type."""


def check_inputs(visible_rgb: np.ndarray, infrared: np.ndarray) -> None:
    """Raise FusionInputError unless visible is (h, w, 3) uint8 and infrared (h, w) uint8."""
    if visible_rgb.dtype != np.uint8 or visible_rgb.ndim != 3 or visible_rgb.shape[2] != 3:
        raise FusionInputError(
            f'visible must be (h, w, 3) uint8 RGB, got {visible_rgb.shape} {visible_rgb.dtype}')
    if infrared.dtype != np.uint8 or infrared.ndim != 2:
        raise FusionInputError(
            f'infrared must be (h, w) uint8, got {infrared.shape} {infrared.dtype}')
    if infrared.shape != visible_rgb.shape[:2]:
        raise FusionInputError(
            f'visible {visible_rgb.shape[:2]} and infrared {infrared.shape} sizes differ')


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Return Y = 0.299 R + 0.587 G + 0.114 B as (h, w) uint8 (OpenCV's rounding)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def with_luminance(visible_rgb: np.ndarray, fused_y: np.ndarray) -> np.ndarray:
    """Return RGB whose Y is fused_y (float or uint8, (h, w)) and whose CrCb is the visible's."""
    ycrcb = cv2.cvtColor(visible_rgb, cv2.COLOR_RGB2YCrCb)
    ycrcb[..., 0] = np.clip(np.rint(fused_y), 0, 255).astype(np.uint8)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


def pyramid_levels(height: int, width: int) -> int:
    """Return how many times an image can be halved keeping its base side >= MIN_BASE_SIDE."""
    levels = int(np.floor(np.log2(max(min(height, width), 1) / MIN_BASE_SIDE)))
    return int(np.clip(levels, 0, MAX_PYRAMID_LEVELS))


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Return [detail_0, ..., detail_{levels-1}, base] of a float32 (h, w) image."""
    pyramid = []
    current = image
    for _ in range(levels):
        smaller = cv2.pyrDown(current)
        expanded = cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0]))
        pyramid.append(current - expanded)
        current = smaller
    pyramid.append(current)
    return pyramid


def collapse_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Invert laplacian_pyramid: upsample the base and add each detail level back."""
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = cv2.pyrUp(image, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return image


def laplacian_fuse(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Fuse two (h, w) grey images: per level D = argmax(|D1|, |D2|), base = mean; float32."""
    first_f, second_f = first.astype(np.float32), second.astype(np.float32)
    levels = pyramid_levels(*first.shape[:2])
    fused = []
    pyramids = zip(laplacian_pyramid(first_f, levels), laplacian_pyramid(second_f, levels),
                   strict=True)
    for level, (a, b) in enumerate(pyramids):
        if level == levels:  # the base: both sources contribute their brightness
            fused.append(0.5 * (a + b))
        else:  # detail: keep the stronger edge of the two
            fused.append(np.where(np.abs(a) >= np.abs(b), a, b))
    return collapse_pyramid(fused)


def enhance_luminance(y: np.ndarray) -> np.ndarray:
    """Brighten a dark (h, w) uint8 Y: gamma so that mean ** gamma = target, then CLAHE."""
    mean = float(y.mean()) / 255.0
    # gamma such that mean ** gamma == target; never darken (gamma <= 1), never over-stretch.
    gamma = 1.0 if mean <= 0.0 or mean >= TARGET_MEAN_LUMINANCE else float(
        np.clip(np.log(TARGET_MEAN_LUMINANCE) / np.log(mean), MIN_GAMMA, 1.0))
    lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILES)
    return clahe.apply(cv2.LUT(y, lut))


def fuse_visible(visible_rgb: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    """Return the visible image unchanged (the 'no fusion' reference)."""
    check_inputs(visible_rgb, infrared)
    return visible_rgb.copy()


def fuse_infrared(visible_rgb: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    """Return the infrared image as grey RGB (no visible content, so no chroma either)."""
    check_inputs(visible_rgb, infrared)
    return cv2.cvtColor(infrared, cv2.COLOR_GRAY2RGB)


def fuse_average(visible_rgb: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    """Y_F = (Y_vi + IR) / 2, visible chroma."""
    check_inputs(visible_rgb, infrared)
    y = luminance(visible_rgb).astype(np.float32)
    return with_luminance(visible_rgb, 0.5 * (y + infrared))


def fuse_max(visible_rgb: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    """Y_F = max(Y_vi, IR) per pixel, visible chroma."""
    check_inputs(visible_rgb, infrared)
    return with_luminance(visible_rgb, np.maximum(luminance(visible_rgb), infrared))


def fuse_laplacian(visible_rgb: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    """Laplacian-pyramid fusion of Y_vi and IR (max-abs detail, mean base), visible chroma."""
    check_inputs(visible_rgb, infrared)
    return with_luminance(visible_rgb, laplacian_fuse(luminance(visible_rgb), infrared))


def fuse_clahe_laplacian(visible_rgb: np.ndarray, infrared: np.ndarray) -> np.ndarray:
    """Two-stage classic: enhance Y_vi (gamma + CLAHE), then Laplacian-pyramid fusion with IR."""
    check_inputs(visible_rgb, infrared)
    enhanced = enhance_luminance(luminance(visible_rgb))
    return with_luminance(visible_rgb, laplacian_fuse(enhanced, infrared))


BASELINES: dict[str, FusionFunction] = {
    'visible': fuse_visible,
    'infrared': fuse_infrared,
    'average': fuse_average,
    'max': fuse_max,
    'laplacian': fuse_laplacian,
    'clahe_laplacian': fuse_clahe_laplacian,
}
