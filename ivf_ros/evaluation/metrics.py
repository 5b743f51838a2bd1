"""Image-fusion quality metrics, following the conventions of MMIF-CDDFuse's utils/Evaluator.py.

All reference metrics work on grey images with values 0-255 (float64): the visible and fused
colour images are converted with the BT.601 luma weights (Y = 0.299 R + 0.587 G + 0.114 B) and
rounded, as CDDFuse's ``image_read_cv2(path, 'GRAY')`` does; the public grey-image functions take
integer images too (converted to float64 first). Notation: A = visible, B = infrared,
F = fused. Where CDDFuse deviates from the textbook definition the docstring says which one we use.
Everything is vectorised with numpy/OpenCV: one 640x480 triple takes well under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import functools
import math
from typing import TypeVar

import cv2
import numpy as np

# 20 log10(255): the offset of the PSNR of Tang's MATLAB toolbox (used by DFVO), which divides
# the images by 255 for the MSE but keeps 255 as the peak.
TANG_PSNR_OFFSET_DB = 20.0 * math.log10(255.0)

# Qabf constants of Xydeas & Petrovic (2000), as in every public implementation.
QABF_GAMMA_G, QABF_KAPPA_G, QABF_SIGMA_G = 0.9994, -15.0, 0.5
QABF_GAMMA_A, QABF_KAPPA_A, QABF_SIGMA_A = 0.9879, -22.0, 0.8
# The reference code convolves with [[-1, 0, 1], ...] and [[1, 2, 1], ...]; filter2D correlates,
# so these are those kernels rotated by 180 degrees. The signs matter: alpha = pi/2 where sx = 0
# is not odd in sx, so flipping one sign changes Qabf in the 4th decimal.
SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
SOBEL_Y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64)

# VIF (Sheikh & Bovik, pixel domain): model noise variance and the per-scale window sizes.
VIF_NOISE_VARIANCE = 2.0
VIF_EPS = 1e-10
VIF_SCALES = 4

# SSIM as skimage.metrics.structural_similarity's defaults: 7x7 uniform window, sample covariance.
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_DATA_RANGE = 255.0
# CDDFuse passes float64 0-255 images to skimage 0.19 without data_range, which then takes the
# float dtype range [-1, 1]: L = 2. Published tables (CDDFuse, RefineFuse, ...) carry this, so the
# reported SSIM uses it too; with L = 255 the sum is ~0.5 higher on dark MSRS images.
SSIM_DATA_RANGE_CDDFUSE = 2.0

# Immerkaer (1996) noise mask: the difference of two Laplacians, blind to linear ramps.
IMMERKAER_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
# The share of pixels (lowest gradient first) counted as flat for the noise estimate.
FLAT_FRACTION = 0.5
# LOE is O(n^2) in pixels: like the common LOE code, compare on an image shrunk to ~50 pixels.
LOE_SIDE = 50


class MetricInputError(ValueError):
    """The images given to a metric have the wrong shape, type or size."""


# ---------------------------------------------------------------------------------------------
# Conversion


def to_grey(image: np.ndarray) -> np.ndarray:
    """Return a (h, w) float64 0-255 grey image; RGB input uses Y = 0.299 R + 0.587 G + 0.114 B."""
    if image.ndim == 3 and image.shape[2] == 3:
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # rounds like CDDFuse's np.round
    elif image.ndim != 2:
        raise MetricInputError(f'expected a (h, w) or (h, w, 3) image, got shape {image.shape}')
    return image.astype(np.float64)


_Metric = TypeVar('_Metric', bound=Callable[..., float])


def _on_float_images(metric: _Metric) -> _Metric:
    """Give a grey-image metric float64 copies of integer images (uint8 arithmetic wraps)."""
    @functools.wraps(metric)
    def wrapped(*images: np.ndarray | float, **options: float) -> float:
        return metric(*(np.asarray(image, np.float64) if isinstance(image, np.ndarray)
                        else image for image in images), **options)
    return wrapped  # type: ignore[return-value]


def _check_same_shape(*images: np.ndarray) -> None:
    """Raise MetricInputError unless all grey images have one shape."""
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise MetricInputError(f'images differ in size: {sorted(shapes)}')
    if min(images[0].shape) < SSIM_WINDOW:
        # SSIM's 7x7 window (and the noise estimate's) needs that much: smaller gives NaN.
        raise MetricInputError(f'images of size {images[0].shape} are too small to evaluate '
                               f'(at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels)')


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r = sum(dx dy) / sqrt(sum dx^2 sum dy^2); 0 when either image is constant."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    return float(np.sum(dx * dy)) / denominator if denominator > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Metrics of the fused image alone


@_on_float_images
def entropy(image: np.ndarray) -> float:
    """EN = -sum_k p_k log2 p_k over the 256-bin histogram of the rounded image (bits)."""
    values = np.clip(np.rint(image), 0, 255).astype(np.uint8).ravel()
    p = np.bincount(values, minlength=256) / values.size
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


@_on_float_images
def standard_deviation(image: np.ndarray) -> float:
    """SD = sqrt(mean((F - mean F)^2)) (population standard deviation)."""
    return float(np.std(image))


@_on_float_images
def spatial_frequency(image: np.ndarray) -> float:
    """SF = sqrt(mean(F[i, j+1] - F[i, j])^2 + mean(F[i+1, j] - F[i, j])^2)."""
    row_frequency = np.mean(np.diff(image, axis=1) ** 2)
    column_frequency = np.mean(np.diff(image, axis=0) ** 2)
    return float(np.sqrt(row_frequency + column_frequency))


@_on_float_images
def average_gradient(image: np.ndarray) -> float:
    """AG = mean(sqrt((Gx^2 + Gy^2) / 2)), central differences inside, one-sided at borders."""
    gradient_rows, gradient_columns = np.gradient(image)  # same stencil as CDDFuse
    return float(np.mean(np.sqrt((gradient_columns ** 2 + gradient_rows ** 2) / 2.0)))


# ---------------------------------------------------------------------------------------------
# Metrics of the fused image against the sources


@_on_float_images
def mutual_information_pair(x: np.ndarray, y: np.ndarray) -> float:
    """MI(X, Y) = sum p(x, y) log2(p(x, y) / (p(x) p(y))) on 256 x 256 bins, in bits."""
    a = np.clip(np.rint(x), 0, 255).astype(np.intp).ravel()
    b = np.clip(np.rint(y), 0, 255).astype(np.intp).ravel()
    joint = np.bincount(a * 256 + b, minlength=256 * 256).reshape(256, 256) / a.size
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    nonzero = joint > 0
    ratio = joint[nonzero] / np.outer(px, py)[nonzero]
    return float(np.sum(joint[nonzero] * np.log2(ratio)))


@_on_float_images
def mutual_information(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    """
    MI = MI(A, F) + MI(B, F), in bits.

    CDDFuse calls sklearn's mutual_info_score, which uses the natural log (nats):
    MI_bits = MI_nats / ln 2 (multiply our value by 0.693 to compare with its tables).
    """
    return mutual_information_pair(visible, fused) + mutual_information_pair(infrared, fused)


@_on_float_images
def correlation_coefficient(fused: np.ndarray, visible: np.ndarray,
                            infrared: np.ndarray) -> float:
    """CC = (r(A, F) + r(B, F)) / 2, r the Pearson correlation."""
    return 0.5 * (_correlation(visible, fused) + _correlation(infrared, fused))


@_on_float_images
def sum_of_correlation_differences(fused: np.ndarray, visible: np.ndarray,
                                   infrared: np.ndarray) -> float:
    """SCD = r(F - B, A) + r(F - A, B) (Aslantas & Bendes 2015)."""
    return (_correlation(fused - infrared, visible)
            + _correlation(fused - visible, infrared))


@_on_float_images
def mean_squared_error(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    """MSE = (mean((A - F)^2) + mean((B - F)^2)) / 2 on the 0-255 scale."""
    return 0.5 * float(np.mean((visible - fused) ** 2) + np.mean((infrared - fused) ** 2))


@_on_float_images
def psnr(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    """PSNR = 10 log10(255^2 / MSE) dB, MSE the mean of the two source MSEs (inf when 0).

    The peak is 255, the textbook and VIFB definition. CDDFuse's Evaluator takes max(F) as
    the peak instead, which gives a dark fused image a lower PSNR: 20 log10(255 / max F) dB
    less (for example 2.2 dB at max F = 198).
    """
    mse = mean_squared_error(fused, visible, infrared)
    return 10.0 * math.log10(255.0 ** 2 / mse) if mse > 0 else math.inf


@_on_float_images
def psnr_tang(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    """
    PSNR of Tang's MATLAB toolbox (used by DFVO): 20 log10(255 / sqrt(MSE_01)) = PSNR + 48.13 dB.

    MSE_01 is computed on images divided by 255 while the peak stays 255, hence the offset.
    """
    return psnr(fused, visible, infrared) + TANG_PSNR_OFFSET_DB


def _box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Return the mean over size x size windows (same size; borders are cropped by callers)."""
    return cv2.boxFilter(image, cv2.CV_64F, (size, size), borderType=cv2.BORDER_REFLECT)


@_on_float_images
def ssim_pair(x: np.ndarray, y: np.ndarray, data_range: float = SSIM_DATA_RANGE) -> float:
    """
    SSIM(X, Y) = mean (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2)).

    7x7 uniform windows, sample covariances, C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = data_range,
    the mean taken away from a 3-pixel border: skimage's structural_similarity defaults.
    """
    window = SSIM_WINDOW
    covariance_norm = window * window / (window * window - 1.0)  # sample, not population
    mx, my = _box_mean(x, window), _box_mean(y, window)
    vx = covariance_norm * (_box_mean(x * x, window) - mx * mx)
    vy = covariance_norm * (_box_mean(y * y, window) - my * my)
    vxy = covariance_norm * (_box_mean(x * y, window) - mx * my)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (window - 1) // 2
    return float(ssim_map[pad:-pad, pad:-pad].mean())


@_on_float_images
def ssim(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    """SSIM = SSIM(A, F) + SSIM(B, F) (max 2) with CDDFuse's effective L = 2 (see the constant)."""
    return (ssim_pair(visible, fused, SSIM_DATA_RANGE_CDDFUSE)
            + ssim_pair(infrared, fused, SSIM_DATA_RANGE_CDDFUSE))


def _vif_window(scale: int) -> np.ndarray:
    """Return the 1-D Gaussian of scale s: N = 2^(5-s) + 1 taps, sigma = N / 5, sum 1."""
    taps = 2 ** (VIF_SCALES - scale + 1) + 1
    sigma = taps / 5.0
    offsets = np.arange(taps) - (taps - 1) / 2.0
    window = np.exp(-offsets ** 2 / (2.0 * sigma * sigma))
    return window / window.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable filtering keeping only the 'valid' part (no border effects), like convolve2d."""
    radius = (window.size - 1) // 2
    filtered = cv2.sepFilter2D(image, cv2.CV_64F, window, window,
                               borderType=cv2.BORDER_REFLECT)
    return filtered[radius:image.shape[0] - radius, radius:image.shape[1] - radius]


@_on_float_images
def vif_sources(distorted: np.ndarray, *references: np.ndarray) -> list[float]:
    """
    VIF(R, D) = sum_s sum log10(1 + g^2 sR^2 / (sv^2 + sn^2)) / sum_s sum log10(1 + sR^2 / sn^2).

    Pixel-domain VIF (Sheikh & Bovik 2006) over 4 scales, g = sRD / sR^2, sv^2 = sD^2 - g sRD,
    sn^2 = 2, with the guard rules of the reference code (vifvec / CDDFuse's compare_viff).
    Returns one value per reference; the statistics of D are computed once for all of them.
    """
    references = list(references)
    numerators, denominators = [0.0] * len(references), [0.0] * len(references)
    for scale in range(1, VIF_SCALES + 1):
        window = _vif_window(scale)
        if scale > 1:  # low-pass, then halve: the next scale
            if min(distorted.shape) < window.size:
                break  # the image is too small for coarser scales
            distorted = _filter_valid(distorted, window)[::2, ::2]
            references = [_filter_valid(ref, window)[::2, ::2] for ref in references]
        if min(distorted.shape) < window.size:
            break
        mu_d = _filter_valid(distorted, window)
        var_d = np.maximum(_filter_valid(distorted * distorted, window) - mu_d * mu_d, 0.0)
        flat_distorted = var_d < VIF_EPS
        for index, reference in enumerate(references):
            mu_r = _filter_valid(reference, window)
            var_r = np.maximum(_filter_valid(reference * reference, window) - mu_r * mu_r, 0.0)
            cov = _filter_valid(reference * distorted, window) - mu_r * mu_d
            gain = cov / (var_r + VIF_EPS)
            noise_var = var_d - gain * cov
            flat_reference = var_r < VIF_EPS
            gain[flat_reference] = 0.0
            noise_var[flat_reference] = var_d[flat_reference]
            var_r[flat_reference] = 0.0
            gain[flat_distorted] = 0.0
            noise_var[flat_distorted] = 0.0
            negative = gain < 0
            noise_var[negative] = var_d[negative]
            gain[negative] = 0.0
            noise_var = np.maximum(noise_var, VIF_EPS)
            numerators[index] += float(np.sum(np.log10(
                1.0 + gain * gain * var_r / (noise_var + VIF_NOISE_VARIANCE))))
            denominators[index] += float(np.sum(np.log10(1.0 + var_r / VIF_NOISE_VARIANCE)))
    # A flat reference carries no information: the reference code returns 1 (its NaN rule).
    return [num / den if den > 0 else 1.0 for num, den in zip(numerators, denominators,
                                                             strict=True)]


@_on_float_images
def vif_pair(reference: np.ndarray, distorted: np.ndarray) -> float:
    """VIF(R, D) of one reference (see vif_sources)."""
    return vif_sources(distorted, reference)[0]


@_on_float_images
def vif(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    """VIF = VIF(A, F) + VIF(B, F) (pixel domain, 4 scales)."""
    return sum(vif_sources(fused, visible, infrared))


def _sobel_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return g = sqrt(sx^2 + sy^2) and alpha = atan(sy / sx) (pi/2 where sx = 0), zero padding."""
    # float32 is exact for Sobel sums of 0-255 integers (|s| <= 1020) and halves the cost of
    # arctan/exp; Qabf sums are accumulated in float64 (error < 1e-6).
    image32 = image.astype(np.float32)
    sx = cv2.filter2D(image32, cv2.CV_32F, SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(image32, cv2.CV_32F, SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sx * sx + sy * sy)
    with np.errstate(divide='ignore', invalid='ignore'):
        orientation = np.where(sx == 0, np.float32(np.pi / 2), np.arctan(sy / sx))
    return strength, orientation


def _edge_preservation(strength_source: np.ndarray, orientation_source: np.ndarray,
                       strength_fused: np.ndarray, orientation_fused: np.ndarray) -> np.ndarray:
    """Q^SF = Qg Qa: sigmoids of the strength ratio G and the orientation agreement A."""
    high = np.maximum(strength_source, strength_fused)
    low = np.minimum(strength_source, strength_fused)
    with np.errstate(divide='ignore', invalid='ignore'):
        strength_ratio = np.where(high > 0, low / high, np.float32(1.0))
    orientation_agreement = 1 - np.abs(orientation_source - orientation_fused) / np.float32(
        np.pi / 2)
    q_strength = np.float32(QABF_GAMMA_G) / (
        1 + np.exp(np.float32(QABF_KAPPA_G) * (strength_ratio - np.float32(QABF_SIGMA_G))))
    q_orientation = np.float32(QABF_GAMMA_A) / (
        1 + np.exp(np.float32(QABF_KAPPA_A) * (orientation_agreement - np.float32(QABF_SIGMA_A))))
    return q_strength * q_orientation


@_on_float_images
def qabf(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    """
    Qabf = sum(Q^AF gA + Q^BF gB) / sum(gA + gB) (Xydeas & Petrovic), Sobel edges, L = 1.

    G = min(gS, gF) / max(gS, gF) (1 where both are 0). CDDFuse sets G = gF where gS = gF,
    a typo that only changes pixels of equal non-unit strength; we use the published ratio, so
    Qabf(F = A = B) = Qg(1) Qa(1) = 0.9748 (the maximum).
    """
    strength_a, orientation_a = _sobel_strength_orientation(visible)
    strength_b, orientation_b = _sobel_strength_orientation(infrared)
    strength_f, orientation_f = _sobel_strength_orientation(fused)
    q_af = _edge_preservation(strength_a, orientation_a, strength_f, orientation_f)
    q_bf = _edge_preservation(strength_b, orientation_b, strength_f, orientation_f)
    weight = float(np.sum(strength_a + strength_b, dtype=np.float64))
    if weight == 0:
        return 0.0  # no edges in either source: nothing to preserve
    return float(np.sum(q_af * strength_a + q_bf * strength_b, dtype=np.float64)) / weight


QABF_MAX = (QABF_GAMMA_G / (1.0 + math.exp(QABF_KAPPA_G * (1.0 - QABF_SIGMA_G)))
            * QABF_GAMMA_A / (1.0 + math.exp(QABF_KAPPA_A * (1.0 - QABF_SIGMA_A))))


# ---------------------------------------------------------------------------------------------
# No-reference metrics (read SF and AG beside the noise: both reward amplified noise)


@_on_float_images
def mean_brightness(image: np.ndarray) -> float:
    """Brightness = mean(F) on the 0-255 scale."""
    return float(np.mean(image))


@_on_float_images
def clipped_fraction(image: np.ndarray) -> float:
    """Clipped = share of pixels at 0 or 255 (lost shadows and highlights)."""
    return float(np.mean((image <= 0) | (image >= 255)))


def clipped_channels_fraction(rgb: np.ndarray) -> float:
    """Share of (h, w, 3) colour pixels with any channel at 0 or 255 (stricter than on luma)."""
    return float(np.mean(((rgb <= 0) | (rgb >= 255)).any(axis=2)))


def colour_cast(rgb: np.ndarray) -> float:
    """
    Grey-world colour cast = |(Cb, Cr)| / Y of the image's mean colour (BT.601, scale-free).

    A scene's mean colour is grey under the grey-world assumption, so its chroma relative to its
    luma measures the cast: 0 is neutral; an MSRS night frame's green tint is about 0.15. Being
    a ratio, brightening an image does not change it.
    """
    mean = rgb.reshape(-1, 3).astype(np.float64).mean(axis=0)
    luma = float(mean @ np.array([0.299, 0.587, 0.114]))
    if luma <= 0:
        return 0.0
    return float(math.hypot(0.564 * (mean[2] - luma), 0.713 * (mean[0] - luma)) / luma)


def _cbcr(rgb: np.ndarray) -> np.ndarray:
    """Return the BT.601 (Cb, Cr) chroma of (h, w, 3) RGB as (h, w, 2) float, no offset."""
    rgb = rgb.astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    return np.stack([0.564 * (rgb[..., 2] - luma), 0.713 * (rgb[..., 0] - luma)], axis=-1)


def _check_colour_pair(name: str, visible_rgb: np.ndarray, fused_rgb: np.ndarray) -> None:
    """Raise MetricInputError unless both are (h, w, 3) images of one size."""
    if visible_rgb.ndim != 3 or fused_rgb.shape != visible_rgb.shape:
        raise MetricInputError(f'{name} needs two (h, w, 3) images of one size, got '
                               f'{visible_rgb.shape} and {fused_rgb.shape}')


def hue_shift(visible_rgb: np.ndarray, fused_rgb: np.ndarray) -> float:
    """
    Hue shift = chroma-weighted mean |angle of CbCr(F) - angle of CbCr(vi)|, in degrees.

    Each pixel's weight is the smaller of the two chroma magnitudes less one grey level (8-bit
    rounding): a hue exists only where both images are coloured, so a pixel that is grey in
    either one has no angle to compare (its lost colour is what ``chroma_ratio`` reports), and
    coloured ones (a sodium-lit road, a red car) count by how coloured they are.
    Brightening or desaturating keeps the angle (0 degrees); grey-world balancing turns it (a
    sodium-lit orange street balanced to grey-blue: 90 degrees and more); 180 is the opposite
    hue. Identical images give 0, and so do images without a pixel coloured in both.
    """
    _check_colour_pair('hue_shift', visible_rgb, fused_rgb)
    source, fused = _cbcr(visible_rgb), _cbcr(fused_rgb)
    weight = np.maximum(np.minimum(np.hypot(source[..., 0], source[..., 1]),
                                   np.hypot(fused[..., 0], fused[..., 1])) - 1.0, 0.0)
    if weight.sum() <= 0:
        return 0.0
    difference = (np.arctan2(fused[..., 1], fused[..., 0])
                  - np.arctan2(source[..., 1], source[..., 0]))
    difference = np.abs((difference + np.pi) % (2 * np.pi) - np.pi)      # in [0, pi]
    return float(np.degrees((difference * weight).sum() / weight.sum()))


def chroma_ratio(visible_rgb: np.ndarray, fused_rgb: np.ndarray) -> float:
    """
    Chroma ratio = sum |CbCr(F)| / sum |CbCr(vi)| over the pixels where vi is coloured.

    Coloured: the visible chroma magnitude above one grey level (8-bit rounding). 1 keeps the
    visible's colour strength, 0 is a grey image, above 1 is stronger colour (brightening can
    raise chroma with luma). A grey visible image gives 1: there is no colour to keep.
    """
    _check_colour_pair('chroma_ratio', visible_rgb, fused_rgb)
    source, fused = _cbcr(visible_rgb), _cbcr(fused_rgb)
    source_magnitude = np.hypot(source[..., 0], source[..., 1])
    coloured = source_magnitude > 1.0
    total = float(source_magnitude[coloured].sum())
    if total <= 0:
        return 1.0
    return float(np.hypot(fused[..., 0], fused[..., 1])[coloured].sum()) / total


@_on_float_images
def noise_sigma(image: np.ndarray) -> float:
    """
    Noise sigma = sqrt(pi / 2) / 6 * mean|F * M| over flat pixels (Immerkaer 1996).

    M = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] cancels edges and ramps; only the flattest half of
    the pixels (Sobel strength below the median) are used, so texture does not count as noise.
    """
    response = cv2.filter2D(image, cv2.CV_64F, IMMERKAER_MASK, borderType=cv2.BORDER_REFLECT)
    strength = cv2.magnitude(*(cv2.filter2D(image, cv2.CV_64F, kernel,
                                            borderType=cv2.BORDER_CONSTANT)
                               for kernel in (SOBEL_X, SOBEL_Y)))
    inner = (slice(1, -1), slice(1, -1))  # borders see zero padding in the Sobel filter
    response, strength = np.abs(response[inner]).ravel(), strength[inner].ravel()
    flat = strength <= np.quantile(strength, FLAT_FRACTION)
    return float(math.sqrt(math.pi / 2.0) / 6.0 * response[flat].mean())


def lightness_order_error(reference_rgb: np.ndarray, enhanced_rgb: np.ndarray) -> float:
    """
    LOE = mean_x sum_y [L(x) >= L(y)] xor [Le(x) >= Le(y)], L = max(R, G, B) (Wang et al. 2013).

    Both lightness maps are shrunk so the short side has LOE_SIDE pixels, as the common MATLAB
    code does; it resizes with imresize's antialiased bicubic, this with area averaging, so the
    values are close to, not the same as, published ones. 0 means the fused image keeps the
    visible image's lightness order everywhere.
    """
    def lightness(rgb: np.ndarray) -> np.ndarray:
        light = rgb.max(axis=2) if rgb.ndim == 3 else rgb
        factor = LOE_SIDE / min(light.shape[:2])
        size = (max(1, round(light.shape[1] * factor)), max(1, round(light.shape[0] * factor)))
        return cv2.resize(light.astype(np.float32), size, interpolation=cv2.INTER_AREA).ravel()

    reference, enhanced = lightness(reference_rgb), lightness(enhanced_rgb)
    # (n, n) order matrices; n ~ 50 x 67 = 3350, so 11 M booleans each: fine in memory.
    order_reference = reference[:, None] >= reference[None, :]
    order_enhanced = enhanced[:, None] >= enhanced[None, :]
    return float(np.count_nonzero(order_reference != order_enhanced) / reference.size)


# ---------------------------------------------------------------------------------------------
# The registry and the one-call evaluation


@dataclass(frozen=True)
class MetricInfo:
    """How to read a metric: higher_is_better is None where neither direction is better."""

    name: str
    higher_is_better: bool | None
    description: str


METRICS: dict[str, MetricInfo] = {info.name: info for info in (
    MetricInfo('EN', True, 'entropy of F (bits)'),
    MetricInfo('SD', True, 'standard deviation of F (contrast)'),
    MetricInfo('SF', True, 'spatial frequency of F'),
    MetricInfo('AG', True, 'average gradient of F'),
    MetricInfo('MI', True, 'MI(vi, F) + MI(ir, F), bits (CDDFuse: nats = bits x 0.693)'),
    MetricInfo('SCD', True, 'sum of correlations of differences'),
    MetricInfo('VIF', True, 'VIF(vi, F) + VIF(ir, F), pixel domain, 4 scales'),
    MetricInfo('Qabf', True, 'edge preservation (Xydeas-Petrovic), max 0.975'),
    MetricInfo('SSIM', True, 'SSIM(vi, F) + SSIM(ir, F), max 2, CDDFuse constants (L = 2)'),
    MetricInfo('PSNR', True, 'dB, peak 255, mean of the two MSEs'),
    MetricInfo('PSNR_tang', True, 'dB, Tang MATLAB toolbox / DFVO convention (PSNR + 48.13)'),
    MetricInfo('CC', True, '(r(vi, F) + r(ir, F)) / 2'),
    MetricInfo('brightness', None, 'mean grey level of F (0-255)'),
    MetricInfo('clipped', False, 'share of F pixels at 0 or 255'),
    MetricInfo('noise', False, 'noise sigma of F in flat regions (Immerkaer)'),
    MetricInfo('LOE', False, 'lightness order error of F against vi (Wang et al.)'),
    MetricInfo('hue_shift', False, 'chroma-weighted CbCr angle of F against vi (degrees)'),
    MetricInfo('chroma_ratio', None, 'colour strength of F against vi where vi is coloured'),
    MetricInfo('clipped_rgb', False, 'share of F pixels with any of R, G, B at 0 or 255'),
)}

FUSION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    'MI': mutual_information,
    'SCD': sum_of_correlation_differences,
    'VIF': vif,
    'Qabf': qabf,
    'SSIM': ssim,
    'PSNR': psnr,
    'PSNR_tang': psnr_tang,
    'CC': correlation_coefficient,
}
IMAGE_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    'EN': entropy,
    'SD': standard_deviation,
    'SF': spatial_frequency,
    'AG': average_gradient,
    'brightness': mean_brightness,
    'clipped': clipped_fraction,
    'noise': noise_sigma,
}

# Metrics of the colour images themselves (visible RGB, fused RGB).
COLOUR_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    'hue_shift': hue_shift,
    'chroma_ratio': chroma_ratio,
    'clipped_rgb': lambda visible_rgb, fused_rgb: clipped_channels_fraction(fused_rgb),
}


def evaluate(visible_rgb: np.ndarray, infrared: np.ndarray, fused_rgb: np.ndarray,
             names: list[str] | None = None) -> dict[str, float]:
    """Return every metric of METRICS (or those in names) for one visible/infrared/fused triple."""
    wanted = list(METRICS) if names is None else names
    unknown = [name for name in wanted if name not in METRICS]
    if unknown:
        raise MetricInputError(f'unknown metrics {unknown}; known: {list(METRICS)}')
    visible, infrared_grey, fused = to_grey(visible_rgb), to_grey(infrared), to_grey(fused_rgb)
    _check_same_shape(visible, infrared_grey, fused)
    results: dict[str, float] = {}
    for name in wanted:
        if name in IMAGE_METRICS:
            results[name] = IMAGE_METRICS[name](fused)
        elif name in FUSION_METRICS:
            results[name] = FUSION_METRICS[name](fused, visible, infrared_grey)
        elif name in COLOUR_METRICS:
            results[name] = COLOUR_METRICS[name](visible_rgb, fused_rgb)
        else:  # LOE needs colour: lightness is max(R, G, B), not luma
            results[name] = lightness_order_error(visible_rgb, fused_rgb)
    return results
