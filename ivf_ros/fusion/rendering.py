"""The fixed rendering maths of the fusion network: luma, tone curve, blur, chroma limits.

Per-pixel and separable operations with no learned parameters; :mod:`ivf_ros.fusion.model`
feeds them the maps its learned part predicts. Every function exports to ONNX for any size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

# ITU-R BT.601 luma weights, the ones YCbCr fusion methods use.
LUMA = (0.299, 0.587, 0.114)
EPS = 1e-3


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Return the BT.601 luma of (n, 3, h, w) RGB as (n, 1, h, w)."""
    return LUMA[0] * rgb[:, 0:1] + LUMA[1] * rgb[:, 1:2] + LUMA[2] * rgb[:, 2:3]


def tone_curve(image: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Return g x / (1 + (g - 1) x) for x in [0, 1] and g > 0 (broadcast).

    Monotonic, 0 -> 0 and 1 -> 1 for every gain: slope g at black and 1/g at white, so a
    brightening curve lifts the shadows and compresses the highlights instead of clipping them.
    Four per-pixel operations: cheap enough for full resolution (Zero-DCE's eight quadratic
    iterations cost 24).
    """
    return gain * image / (1.0 + (gain - 1.0) * image)


def tone_slope(image: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Return the derivative of tone_curve at x: g / (1 + (g - 1) x)^2."""
    return gain / (1.0 + (gain - 1.0) * image).square()


def tent_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Return (n, c, h, w) low-passed at 1/4 size by a tent of ``radius`` (h, w multiples of 4).

    Area 4x down, two separable box passes (a tent) of ``2 * radius + 1`` taps, bilinear 4x up:
    a wide blur for the cost of a narrow one, and every step exports to ONNX for any size.
    """
    size = image.shape[-2:]
    small = F.avg_pool2d(image, 4)                                  # (n, c, h / 4, w / 4)
    taps = 2 * radius + 1
    for _ in range(2):
        # count_include_pad=False: the borders average what is there (no darkening).
        small = F.avg_pool2d(small, (1, taps), stride=1, padding=(0, radius),
                             count_include_pad=False)
        small = F.avg_pool2d(small, (taps, 1), stride=1, padding=(radius, 0),
                             count_include_pad=False)
    return F.interpolate(small, size=size, mode='bilinear', align_corners=False)


def local_contrast_lift(base: torch.Tensor, gain: float, radius: int) -> torch.Tensor:
    """Return the CLAHE-like lift (n, 1, h, w) of a base image: gain x (base - its tent blur)."""
    # Night scenes are flat at the scale of objects (a dim facade, a dark road): amplifying the
    # band between the working grid and the tent (about two CLAHE tiles of a 640-px frame)
    # spreads the histogram as CLAHE does, without touching the full-resolution band where the
    # sensor noise lives. Bounded half-way to black or white: a dark road beside a lamp is
    # darkened, not crushed to 0 (unbounded, 1 % of the fused pixels clipped; bounded, 0.1 %).
    lift = torch.minimum(gain * (base - tent_blur(base, radius)), (1.0 - base) / 2)
    return torch.maximum(lift, -base / 2)


def limit_chroma(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Scale (n, 3, h, w) chroma offsets so that luma + chroma stays inside [0, 1]."""
    # Desaturating (not clipping) keeps the hue: a dark green sky stays green, never black.
    below = (-chroma.amin(dim=1, keepdim=True)).clamp_min(EPS)   # (n, 1, h, w)
    above = chroma.amax(dim=1, keepdim=True).clamp_min(EPS)
    scale = torch.minimum(luma / below, (1.0 - luma) / above).clamp(0.0, 1.0)
    return chroma * scale
