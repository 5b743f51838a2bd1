"""Multi-scale visible-infrared enhancement and fusion network (after Xin et al., 2026).

The learned part runs on a working grid ``downscale`` times smaller than the input (1/4 by
default); the full resolution only sees cheap per-pixel operations, so a 640x512 pair costs
well under a GMAC (the Zero-DCE++ recipe: estimate curves small, apply them large):

* visible branch: encoder over the low-resolution RGB image plus an exposure mask, at scales
  1, 1/2, 1/4 and 1/8 of the working grid;
* infrared branch: the same encoder layout over the low-resolution infrared image;
* fusion block: at each of the four scales a small head reads both branches' features and
  refines the coarser scale's decision, coarse to fine like a Laplacian pyramid, into one
  spatially varying infrared share ``w`` on the working grid; at full resolution ``w``'s logit,
  upsampled plus a detail-energy term, mixes the high-frequency details of the two sources;
* one shared decoder turns visible features into a per-pixel tone-curve gain (and a rendered
  image, trained to match the enhancement), infrared features into the reconstructed infrared
  image: stage 2 trains the infrared branch through it, so both branches speak one language
  before the fusion heads compare them.

Enhancement: the visible luma, denoised (soft-thresholded detail), goes through the tone curve
``y = g x / (1 + (g - 1) x)`` with the decoder's gain ``g`` upsampled to full resolution. The
curve is monotonic and maps [0, 1] onto [0, 1]: dark pixels are lifted by up to ``g``,
highlights are compressed instead of clipped, and the exposure mask sets ``g = 1`` where the
input is already bright (lamps, headlights). Chroma comes from the low-resolution image toned
per channel (grey-world balanced only as far as ``white_balance`` asks), limited so that no
channel leaves [0, 1].

Fused image (``fusion_base: blend``, the default of older weights): the fusion block's gate
``w`` (the infrared share on the working grid) *blends* the two bases, ``(1 - w) V + w I`` with
``V`` the visible luma through a gentler curve of the same gain (``g ** fusion_tone``): the
network decides per region whether the infrared replaces the visible scene (a warm pedestrian
on a dark road keeps the infrared's contrast, the background is not lifted over it) or the
visible stays (lit signs, colours). No fixed max rule: the gate may also darken a glaring lamp
towards the infrared. With ``fusion_base: infrared`` (the shipped weights) the infrared is the
base and the gate keeps ``1 - w`` of the light the visible adds over it,
``I + (1 - w) max(0, V - I)``: a warm body is never darkened, and the network decides where
the visible's lit signs and headlit cars join it (``w = 0`` is the max rule). Full-resolution
details of both sources are mixed by the same gate sharpened by a learnt detail-energy term.
Chroma is the visible image's own (Cb, Cr) direction, scaled with the visible tone's
brightening (at most ``chroma_gain``), faded by the ratio of the visible's to the fused
brightness where they disagree (``chroma_agreement``: a warm body the visible does not see is
not painted with the road's colour), cored against the frame's own chroma noise
(``chroma_coring``: faint speckle becomes grey, real colours lose only the noise level) and
limited to stay inside [0, 1]: the hue is kept;
``cast_correction`` (0 by default) removes that share of the frame's mean chroma (grey-world)
when a user asks. An optional CLAHE-like
``local_contrast`` gain lifts the fused base's band between the working grid and a tent blur.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812

from ivf_ros.fusion.rendering import (
    EPS,
    limit_chroma,
    local_contrast_lift,
    LUMA,
    tone_curve,
    tone_slope,
)


@dataclass
class ModelConfig:
    """Architecture hyper-parameters, stored with the weights."""

    channels: list[int] = field(default_factory=lambda: [16, 24, 32, 48])
    downscale: int = 4                # full resolution -> working grid
    exposure_threshold: float = 0.8   # max-channel value where the exposure mask is 0.5
    exposure_softness: float = 0.05   # width of the mask's sigmoid ramp
    max_log_gain: float = 4.0         # tone-curve slope at black within e^-4 .. e^4 (x55)
    # Noise suppression: visible detail is soft-thresholded at this multiple of its own mean
    # absolute value (in a dark frame that mean is mostly sensor noise: a cheap noise level).
    noise_threshold: float = 1.0
    # The fused image's own shrinkage of the visible detail when it is rendered (None: the
    # enhanced output's noise_threshold). A rendering step, like local_contrast: stage 3 trains
    # without it (at noise_threshold), because trained through it the texture term loses the
    # visible's texture and the gate went to the infrared everywhere (models/README, round 6).
    fusion_noise_threshold: float | None = None
    fusion_tone: float = 0.5          # the fused image's curve gain is g ** fusion_tone
    white_balance: float = 1.0        # grey-world strength: 0 keeps the cast, 1 removes it
    detail_boost: float = 1.0         # gain on the fused image's full-resolution details
    # Which source's detail a full-resolution pixel takes is decided on the detail energies
    # averaged over this odd window (1 = per pixel): a per-pixel choice between two cameras
    # that are never perfectly registered puts isolated visible twigs on the infrared
    # (salt-and-pepper); a window decides per small patch, as pyramid fusion's activity
    # measures do.
    detail_window: int = 1
    # CLAHE-like local contrast of the fused image: its working-grid base minus a tent blur of
    # it, amplified by local_contrast (0 turns it off). The tent runs at 1/4 of the working
    # grid: radius 2 = 5 taps = 80 px at full resolution per box (one tile of the baseline's
    # 8x8-tile CLAHE at 640x512); the tent spans about two tiles.
    local_contrast: float = 0.0
    contrast_radius: int = 2
    multiscale: bool = True           # False: one fusion head, on the working grid (ablation)
    # 3x3 layers per fusion head: 1 = a 1x1 mix and one 3x3 output (the first weights); each
    # extra layer is a 3x3 convolution at the head's hidden width, so a head sees more of its
    # scale's neighbourhood before it decides (a car's lit body, a pedestrian's outline).
    fusion_depth: int = 1
    adaptive_weights: bool = True     # False: fixed 0.5 weights everywhere (ablation)
    enhance: bool = True              # False: no enhancement, the raw visible is used (ablation)
    # Who decides the infrared share: 'learned' (the fusion block), 'constant' (0.5 everywhere,
    # as adaptive_weights=False) or 'max' (1 where the infrared base is brighter, per pixel and
    # per detail: the classical max rule; ablations).
    gate: str = 'learned'
    # What the gate mixes on the working grid: 'blend' = (1 - w) V + w I; 'infrared' = the
    # infrared as the base plus (1 - w) of the visible's excess brightness, I + (1 - w)
    # max(0, V - I): w = 1 is the infrared, w = 0 the max rule, and warm targets are never
    # darkened.
    fusion_base: str = 'blend'
    cast_correction: float = 0.0      # share of the frame's mean chroma removed (1: grey-world)
    chroma_gain: float = 2.0          # most the fused chroma grows with the visible's brightening
    # Fade the visible colour where the fused brightness is not the visible's: a warm body that
    # the visible camera does not see is not coloured by the dark road behind it. Off by default
    # so that weights saved before it existed render as they were trained.
    chroma_agreement: bool = False
    # Chroma noise coring: the fused chroma's magnitude is soft-thresholded at this multiple of
    # the frame's chroma noise level (the mean magnitude of the working-grid chroma minus its
    # 3x3 mean), keeping its angle. A dark frame's colour is mostly sensor noise: faint green
    # and magenta speckle that a viewer reads as dirt and a COCO detector as texture on the
    # infrared's warm bodies. 0 (older weights) keeps every chroma.
    chroma_coring: float = 0.0

    def __post_init__(self) -> None:
        """Raise ValueError naming the field when a value is outside its range."""
        if not self.channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                                    for c in self.channels):
            raise ValueError(f'channels must be positive integers, got {self.channels!r}')
        for name in _LOWEST:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < _LOWEST[name]:
                raise ValueError(f'{name} must be an integer >= {_LOWEST[name]}, got {value!r}')
        if self.detail_window % 2 == 0:
            raise ValueError(f'detail_window must be odd, got {self.detail_window}')
        for name in _BOOLEANS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be true or false, got {getattr(self, name)!r}')
        for name, (low, high) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is None and name in _NULLABLE:
                continue
            # Finite too: an infinite multiple times a flat frame's zero level is NaN.
            if not _is_finite_number(value) or not low <= value <= high:
                null = 'null or ' if name in _NULLABLE else ''
                raise ValueError(f'{name} must be {null}a finite number in [{low}, {high}], '
                                 f'got {value!r}')
        if self.exposure_softness == 0:
            raise ValueError('exposure_softness must be above 0 (it divides)')
        if self.gate not in GATES:
            raise ValueError(f'gate must be one of {", ".join(GATES)}, got {self.gate!r}')
        if self.fusion_base not in FUSION_BASES:
            raise ValueError(f'fusion_base must be one of {", ".join(FUSION_BASES)}, '
                             f'got {self.fusion_base!r}')

    @property
    def learned_gate(self) -> bool:
        """Return whether the fusion block decides the gate (not a constant or the max rule)."""
        return self.gate == 'learned' and self.adaptive_weights

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = False) -> ModelConfig:
        """Build a config from a dict; unknown keys are skipped, or a ValueError if strict."""
        # Weights files may carry keys of newer versions (skipped); a hand-written config file
        # is read strictly, because there an unknown key is a typo.
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if strict and unknown:
            raise ValueError(f'unknown key(s) {", ".join(unknown)} '
                             f'(known: {", ".join(cls.__dataclass_fields__)})')
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain dict (safe to store with torch.save)."""
        return asdict(self)


def _is_finite_number(value: object) -> bool:
    """Return whether value is an int or float (not a bool) and finite."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


GATES = ('learned', 'constant', 'max')
FUSION_BASES = ('blend', 'infrared')
_LOWEST = {'downscale': 1, 'contrast_radius': 0, 'detail_window': 1, 'fusion_depth': 1}
_BOOLEANS = ('multiscale', 'adaptive_weights', 'enhance', 'chroma_agreement')
_NULLABLE = ('fusion_noise_threshold',)   # null: another field's value (see the field)
# Closed ranges of the float fields; inf where only the sign matters.
_FLOAT_RANGES = {
    'exposure_threshold': (0.0, 1.0),
    'exposure_softness': (0.0, math.inf),
    'max_log_gain': (0.0, math.inf),
    'noise_threshold': (0.0, math.inf),
    'fusion_noise_threshold': (0.0, math.inf),
    'fusion_tone': (0.0, math.inf),
    'white_balance': (0.0, 1.0),
    'detail_boost': (0.0, math.inf),
    'local_contrast': (0.0, math.inf),
    'cast_correction': (0.0, 1.0),
    'chroma_gain': (1.0, math.inf),
    'chroma_coring': (0.0, math.inf),
}


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Return a 3x3 convolution followed by LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
    )


class Encoder(nn.Module):
    """Four-scale convolutional encoder (scales 1, 1/2, 1/4, 1/8 of the working grid)."""

    def __init__(self, in_channels: int, channels: list[int]) -> None:
        super().__init__()
        stages = []
        previous = in_channels
        for index, width in enumerate(channels):
            stages.append(nn.Sequential(
                conv_block(previous, width, stride=1 if index == 0 else 2),
                conv_block(width, width),
            ))
            previous = width
        self.stages = nn.ModuleList(stages)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Return the features at each scale, finest first: [(n, c_k, h/2^k, w/2^k)]."""
        features = []
        x = image
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class FusionBlock(nn.Module):
    """Predict the spatially varying infrared share, coarse to fine over the encoder scales."""

    def __init__(self, channels: list[int], multiscale: bool = True,
                 adaptive: bool = True) -> None:
        super().__init__()
        self.multiscale = multiscale
        self.adaptive = adaptive
        # Input per scale: visible and infrared features plus the exposure mask.
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(2 * width + 1, width // 2, 1),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Conv2d(width // 2, 1, 3, padding=1),
            )
            for width in channels
        )
        # Full-resolution detail mixing: logit = working-grid logit + gain * energy gap.
        self.detail_gain = nn.Parameter(torch.tensor(20.0))

    def deepen(self, depth: int) -> None:
        """Insert depth - 1 hidden 3x3 layers before each head's 3x3 logit layer."""
        # Called after the decoder is built: the encoders and the decoder start from the same
        # random values whatever the depth, so stages 1 and 2 do not depend on it.
        for index, head in enumerate(self.heads):
            hidden = head[0].out_channels
            layers = list(head[:2])
            for _ in range(depth - 1):
                layers += [nn.Conv2d(hidden, hidden, 3, padding=1),
                           nn.LeakyReLU(0.1, inplace=True)]
            self.heads[index] = nn.Sequential(*layers, head[-1])

    def forward(self, visible: list[torch.Tensor], infrared: list[torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        """Return the infrared-share logit (n, 1, h, w) on the working grid (scale 1)."""
        if not self.adaptive:
            return torch.zeros_like(mask)                      # sigmoid(0) = 0.5 everywhere
        # Coarse to fine, like a Laplacian pyramid of decisions: the coarsest head decides per
        # region (a warm pedestrian, a lit facade), each finer head corrects at its own scale.
        scales = range(len(visible) - 1, -1, -1) if self.multiscale else [0]
        logit = None
        for index in scales:
            # Scale k is the working grid halved k times (the input is padded for it): a
            # fixed-kernel pool equals area resizing and exports to ONNX for any size.
            scaled_mask = F.avg_pool2d(mask, 2 ** index) if index else mask
            head_input = torch.cat([visible[index], infrared[index], scaled_mask], dim=1)
            scale_logit = self.heads[index](head_input)        # (n, 1, h / 2^k, w / 2^k)
            if logit is not None:
                scale_logit = scale_logit + F.interpolate(
                    logit, size=scale_logit.shape[-2:], mode='bilinear', align_corners=False)
            logit = scale_logit
        return logit


class Decoder(nn.Module):
    """Shared U-Net style decoder: multi-scale features -> working-grid trunk features.

    Two light 3x3 heads read the trunk: ``render`` draws an RGB image (the reconstructed
    infrared, and the visible image as the enhancement renders it), ``curve`` gives the
    per-pixel tone-curve strength that enhances the visible image.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        ups = []
        for index in range(len(channels) - 1, 0, -1):
            ups.append(conv_block(channels[index] + channels[index - 1], channels[index - 1]))
        self.ups = nn.ModuleList(ups)
        self.image_head = nn.Conv2d(channels[0], 3, 3, padding=1)
        self.curve_head = nn.Conv2d(channels[0], 1, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return the trunk features (n, c_0, h, w) on the working grid."""
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        return x

    def render(self, trunk: torch.Tensor) -> torch.Tensor:
        """Return the decoded image (n, 3, h, w) in [0, 1]."""
        return torch.sigmoid(self.image_head(trunk))

    def curve(self, trunk: torch.Tensor) -> torch.Tensor:
        """Return the tone-curve strength (n, 1, h, w) in [-1, 1] (log gain / max_log_gain)."""
        return torch.tanh(self.curve_head(trunk))


@dataclass
class Encoded:
    """Both sources padded, on the working grid, and encoded (infrared parts None if unused)."""

    visible_p: torch.Tensor                # (n, 3, Hp, Wp) padded full resolution
    visible_low: torch.Tensor              # (n, 3, h, w) working grid
    mask: torch.Tensor                     # (n, 1, h, w) exposure mask
    visible_features: list[torch.Tensor]   # [(n, c_k, h / 2^k, w / 2^k)]
    infrared_p: torch.Tensor | None = None
    infrared_low: torch.Tensor | None = None
    infrared_features: list[torch.Tensor] | None = None


def upsample_maps(maps: dict[str, torch.Tensor], size: tuple[int, int] | torch.Size
                  ) -> dict[str, torch.Tensor]:
    """Bilinearly upsample named (n, c_k, h, w) maps to ``size``; return them by name."""
    # One interpolate over the stacked channels costs less than one call per map, and bilinear
    # interpolation acts per channel, so the split results equal separate calls.
    stacked = F.interpolate(torch.cat(list(maps.values()), dim=1), size=tuple(size),
                            mode='bilinear', align_corners=False)  # (n, sum c_k, H, W)
    parts = torch.split(stacked, [tensor.shape[1] for tensor in maps.values()], dim=1)
    return dict(zip(maps, parts, strict=True))


class IVFNet(nn.Module):
    """Visible enhancement, infrared reconstruction and multi-scale fusion in one network."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        channels = list(self.config.channels)
        self.visible_encoder = Encoder(4, channels)   # RGB + exposure mask
        self.infrared_encoder = Encoder(1, channels)
        self.fusion = FusionBlock(channels, self.config.multiscale, self.config.adaptive_weights)
        self.decoder = Decoder(channels)
        self.fusion.deepen(self.config.fusion_depth)
        self.register_buffer('luma_weights', torch.tensor(LUMA).view(1, 3, 1, 1),
                             persistent=False)
        # Padding multiple: the working grid must halve cleanly len(channels) - 1 times, and
        # at least twice for the local-contrast blur.
        self.multiple = self.config.downscale * 2 ** max(len(channels) - 1, 2)

    # -- helpers -------------------------------------------------------------------------------
    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        """Replicate-pad (n, c, h, w) so h and w are multiples of the working-grid stride."""
        height, width = image.shape[-2:]
        pad_h = (-height) % self.multiple
        pad_w = (-width) % self.multiple
        if pad_h == 0 and pad_w == 0:
            return image
        return F.pad(image, (0, pad_w, 0, pad_h), mode='replicate')

    def _luma(self, rgb: torch.Tensor) -> torch.Tensor:
        """Return the BT.601 luma of (n, 3, h, w) as (n, 1, h, w) in one 1x1 convolution."""
        return F.conv2d(rgb, self.luma_weights.to(rgb.dtype))

    def white_balance(self, image_low: torch.Tensor) -> torch.Tensor:
        """Return per-image grey-world channel gains (n, 3, 1, 1) of config strength."""
        # Sodium lamps cast orange, MSRS frames green: grey-world moves the channel means
        # towards their common mean (strength 1: all the way).
        means = image_low.mean(dim=(2, 3), keepdim=True) + EPS   # (n, 3, 1, 1)
        grey = means.mean(dim=1, keepdim=True)
        return ((grey / means) ** self.config.white_balance).clamp(0.5, 2.0)

    def exposure_mask(self, visible_low: torch.Tensor) -> torch.Tensor:
        """Return (n, 1, h, w) in [0, 1]: 1 where the input is already bright (lamps, glare)."""
        # The max channel, not the mean: an orange sodium lamp clips in red first.
        brightest = visible_low.amax(dim=1, keepdim=True)
        return torch.sigmoid(
            (brightest - self.config.exposure_threshold) / self.config.exposure_softness)

    def _fused_noise_multiple(self, with_rendering_steps: bool) -> float:
        """Return the noise-threshold multiple of the fused image's visible detail."""
        if self.config.fusion_noise_threshold is None or not with_rendering_steps:
            return self.config.noise_threshold
        return self.config.fusion_noise_threshold

    @staticmethod
    def noise_shrink(detail: torch.Tensor, multiple: float) -> torch.Tensor:
        """Soft-threshold (n, 1, H, W) detail at multiple x its own mean magnitude."""
        if not multiple:
            return detail
        # A 1/4 subsample is plenty for a mean and costs 1/16 of a full pass.
        level = detail[..., ::4, ::4].abs().mean(dim=(2, 3), keepdim=True)  # (n, 1, 1, 1)
        threshold = multiple * level
        return detail - torch.maximum(torch.minimum(detail, threshold), -threshold)

    def chroma_core(self, chroma: torch.Tensor) -> torch.Tensor:
        """Soft-threshold the magnitude of chroma offsets (n, 3, h, w) at their noise level."""
        # Noise is what a 3x3 mean removes; real colour (a lit sign, a sodium-lit road, a car)
        # is smooth over a working-grid cell's neighbours, so its magnitude stands above it.
        local = F.avg_pool2d(chroma, 3, stride=1, padding=1, count_include_pad=False)
        high = chroma - local                                              # (n, 3, h, w)
        level = _magnitude(high).mean(dim=(2, 3), keepdim=True)           # (n, 1, 1, 1)
        magnitude = _magnitude(chroma)                                     # (n, 1, h, w)
        # The divisor's floor is EPS itself, a normal number in fp16 too (EPS ** 2 is not: a
        # runtime that flushes subnormals would divide 0 by 0 on exactly grey cells).
        kept = F.relu(magnitude - self.config.chroma_coring * level) / magnitude.clamp_min(EPS)
        return chroma * kept          # the same CbCr angle, a shorter vector (or grey)

    def _tone_low(self, visible_low: torch.Tensor, gain: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tone-map and balance the low-res image; return (image (n, 3), limited chroma (n, 3))."""
        # Per channel, as Zero-DCE: the curve compresses the strongest channel most, so dark
        # foliage brightens to green, not neon (a luma ratio would keep full saturation).
        toned = tone_curve(visible_low, gain)                       # (n, 3, h, w)
        # Grey-world on the toned image: its mean is what a viewer sees (dark regions, now
        # bright, weigh as much as lamps).
        balanced = (toned * self.white_balance(toned)).clamp(0.0, 1.0)
        luma = self._luma(balanced)
        return balanced, limit_chroma(luma, balanced - luma)

    # -- the steps of a forward pass ----------------------------------------------------------
    def _encode(self, visible: torch.Tensor, infrared: torch.Tensor | None) -> Encoded:
        """Pad, pool to the working grid and encode both sources (infrared when given)."""
        factor = self.config.downscale
        visible_p = self._pad(visible)                            # (n, 3, Hp, Wp)
        visible_low = F.avg_pool2d(visible_p, factor)             # (n, 3, h, w)
        mask = self.exposure_mask(visible_low)                    # (n, 1, h, w)
        encoded = Encoded(visible_p, visible_low, mask,
                          self.visible_encoder(torch.cat([visible_low, mask], dim=1)))
        if infrared is not None:
            encoded.infrared_p = self._pad(infrared)              # (n, 1, Hp, Wp)
            encoded.infrared_low = F.avg_pool2d(encoded.infrared_p, factor)  # (n, 1, h, w)
            encoded.infrared_features = self.infrared_encoder(encoded.infrared_low)
        return encoded

    def _decode(self, encoded: Encoded, with_infrared: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the decoder trunks (n, c_0, h, w) of the visible [and infrared] features."""
        # One decoder-trunk call over a stacked batch: visible [, infrared] features.
        stacks = [encoded.visible_features]
        if with_infrared:
            stacks.append(encoded.infrared_features)
        trunk = self.decoder([torch.cat(level, dim=0) for level in zip(*stacks, strict=True)])
        batch = encoded.visible_low.shape[0]
        return trunk[:batch], (trunk[batch:] if with_infrared else None)

    def _curve_strength(self, visible_trunk: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return the tone-curve strength (n, 1, h, w) in [-1, 1] (0 when enhance is off)."""
        if not self.config.enhance:
            return torch.zeros_like(mask)
        # Bright regions get gain 1 (the identity curve): lamps are never pushed to clip.
        return self.decoder.curve(visible_trunk) * (1.0 - mask)

    def _gate_logit(self, encoded: Encoded, toned_luma: torch.Tensor) -> torch.Tensor:
        """Return the infrared-share logit (n, 1, h, w) on the working grid."""
        if self.config.gate == 'max':
            # The max rule as a logit: +-30 saturates the sigmoid (w = 1 or 0, 0.5 on ties).
            return 30.0 * torch.sign(encoded.infrared_low - toned_luma)
        if self.config.gate == 'constant' or not self.config.adaptive_weights:
            return torch.zeros_like(toned_luma)                     # sigmoid(0) = 0.5
        return self.fusion(encoded.visible_features, encoded.infrared_features, encoded.mask)

    def _fused_chroma(self, visible_low: torch.Tensor, luma_low: torch.Tensor,
                      toned_luma: torch.Tensor, fused_luma: torch.Tensor) -> torch.Tensor:
        """Return the fused chroma offsets (n, 3, h, w): the visible hue, brightened, limited."""
        chroma = visible_low - luma_low                                   # (n, 3, h, w)
        if self.config.cast_correction:
            chroma = chroma - self.config.cast_correction * chroma.mean(dim=(2, 3), keepdim=True)
        if self.config.chroma_coring:
            chroma = self.chroma_core(chroma)
        # Brightening a colour keeps its saturation only if the chroma grows with the luma; the
        # growth is capped where the 4x4-averaged chroma of a dark frame is mostly noise.
        growth = (toned_luma / (luma_low + EPS)).clamp(1.0, self.config.chroma_gain)
        fused_luma = fused_luma.clamp(0.0, 1.0)
        if self.config.chroma_agreement:
            # The colour describes the surface the visible camera sees, as bright as the toned
            # visible: where the fused pixel is k times brighter (its light is heat) the chroma
            # keeps 1/k, where it is k times darker the chroma shrinks with it (the visible's
            # own saturation). No threshold: the two brightnesses' ratio, in [0, 1].
            agreement = ((torch.minimum(toned_luma, fused_luma) + EPS)
                         / (torch.maximum(toned_luma, fused_luma) + EPS))
            growth = growth * agreement
        return limit_chroma(fused_luma, chroma * growth)

    def _fusion_maps_low(self, encoded: Encoded, luma_low: torch.Tensor, log_gain: torch.Tensor,
                         with_rendering_steps: bool) -> dict[str, torch.Tensor]:
        """Return the fused image's working-grid maps, by name, ready to be upsampled."""
        # The fused image's visible part uses a gentler curve (gain ** fusion_tone): it stays
        # closer to both sources' contrast than the enhanced output.
        fusion_gain = (log_gain * self.config.fusion_tone).exp()          # (n, 1, h, w)
        toned_luma = tone_curve(luma_low, fusion_gain)                    # (n, 1, h, w)
        logit = self._gate_logit(encoded, toned_luma)                     # (n, 1, h, w)
        share = torch.sigmoid(logit)                                      # infrared share w
        gap = encoded.infrared_low - toned_luma                           # I - V
        if self.config.fusion_base == 'infrared':
            # I + (1 - w) max(0, V - I) as an addition to V: the visible only ever adds light
            # the infrared lacks (lit signs, headlit cars), so a warm body keeps its infrared
            # brightness, and the gate decides where that light would hide it.
            addition = gap + (1.0 - share) * F.relu(-gap)
        else:
            # The gate blends the bases: (1 - w) V + w I, i.e. V + w (I - V). Where the infrared
            # is darker than the toned visible the gate may still take it (glare, a lifted
            # background).
            addition = share * gap
        if with_rendering_steps and self.config.local_contrast:
            addition = addition + local_contrast_lift(
                toned_luma + addition, self.config.local_contrast, self.config.contrast_radius)
        base_chroma = self._fused_chroma(encoded.visible_low, luma_low, toned_luma,
                                         toned_luma + addition)
        return {
            'fusion_gain': fusion_gain,
            'slope': tone_slope(luma_low, fusion_gain),   # visible detail amplification
            'base_chroma': base_chroma,
            'addition': addition,    # what is added to the toned visible luma
            'logit': logit,
        }

    def _render_fused(self, denoised_luma: torch.Tensor, visible_detail: torch.Tensor,
                      infrared_detail: torch.Tensor, up: dict[str, torch.Tensor],
                      with_base: bool = False) -> dict[str, torch.Tensor]:
        """Return the fused image (n, 3, Hp, Wp) and its weight map [and base] at full size."""
        vis_detail = visible_detail * up['slope']                 # as the curve renders it
        if self.config.gate == 'max':
            weight = (infrared_detail.abs() > vis_detail.abs()).to(vis_detail.dtype)
        elif self.config.gate == 'learned' and self.config.adaptive_weights:
            # Full-resolution scale of the fusion: the upsampled working-grid logit, sharpened
            # by which source carries more detail at this pixel.
            energy_gap = infrared_detail.abs() - vis_detail.abs()   # (n, 1, Hp, Wp)
            window = self.config.detail_window
            if window > 1:
                # The mean of the gap is the gap of the windowed energies (one pool, not two).
                energy_gap = F.avg_pool2d(energy_gap, window, stride=1, padding=window // 2,
                                          count_include_pad=False)
            weight = torch.sigmoid(up['logit'] + self.fusion.detail_gain * energy_gap)
        else:
            weight = torch.full_like(infrared_detail, 0.5)
        visible_luma = tone_curve(denoised_luma, up['fusion_gain'])  # (n, 1, Hp, Wp)
        # visible_luma already holds vis_detail: swap it for the weighted mix of both sources'
        # details, amplified by detail_boost (noise was shrunk before).
        mixed_detail = vis_detail + weight * (infrared_detail - vis_detail)
        fused_luma = (visible_luma - vis_detail + up['addition']
                      + self.config.detail_boost * mixed_detail)
        # Chroma of the visible base: adding one value to R, G and B changes Y only.
        rendered = {'fused': (up['base_chroma'] + fused_luma).clamp(0.0, 1.0), 'weights': weight}
        if with_base:
            rendered['fused_base'] = (up['base_chroma'] + visible_luma).clamp(0.0, 1.0)
        return rendered

    # -- the three outputs ---------------------------------------------------------------------
    def forward_all(self, visible: torch.Tensor, infrared: torch.Tensor | None = None,
                    outputs: tuple[str, ...] = ('enhanced', 'infrared', 'fused'),
                    with_rendering_steps: bool = True) -> dict[str, torch.Tensor]:
        """Run the requested paths ('enhanced', 'infrared', 'fused', ...); return tensors.

        visible (n, 3, H, W) and infrared (n, 1, H, W) are float in [0, 1]. Full-resolution
        outputs are cropped back to (H, W); '*_low' entries live on the padded working grid.
        with_rendering_steps=False leaves out the fused image's rendering steps, which stage 3
        trains the fusion block without: the local-contrast step and fusion_noise_threshold.
        """
        height, width = visible.shape[-2:]
        fuse = 'fused' in outputs and infrared is not None
        reconstruct = 'infrared' in outputs and infrared is not None
        enhance = 'enhanced' in outputs
        encoded = self._encode(visible, infrared if fuse or reconstruct else None)
        result: dict[str, torch.Tensor] = {'visible_low': encoded.visible_low,
                                           'exposure_mask': encoded.mask}
        if encoded.infrared_low is not None:
            result['infrared_low'] = encoded.infrared_low
        visible_trunk, infrared_trunk = self._decode(encoded, with_infrared=reconstruct)
        strength = self._curve_strength(visible_trunk, encoded.mask)  # (n, 1, h, w)
        if self.config.enhance:
            result['curve_strength'] = strength
        log_gain = self.config.max_log_gain * strength
        gain = log_gain.exp()

        # Working-grid maps that full resolution needs, upsampled together in one call.
        luma_low = self._luma(encoded.visible_low)                # (n, 1, h, w)
        low = {'luma': luma_low}
        # Low-res enhancement only when asked for: the node's fused-only path skips it.
        if enhance or 'rendered' in outputs:
            enhanced_low, chroma_low = self._tone_low(encoded.visible_low, gain)
            result['enhanced_low'] = enhanced_low                 # (n, 3, h, w)
            if enhance:
                low.update(gain=gain, chroma=chroma_low)
        if 'rendered' in outputs:
            result['rendered_visible_low'] = self.decoder.render(visible_trunk)  # (n, 3, h, w)
        if fuse:
            low.update(self._fusion_maps_low(encoded, luma_low, log_gain,
                                             with_rendering_steps))
            result['weight_logits_low'] = low['logit']
        if fuse or reconstruct:
            low['infrared'] = encoded.infrared_low
        up = upsample_maps(low, encoded.visible_p.shape[-2:])    # each (n, c, Hp, Wp)

        # Visible detail above the working grid's band, soft-thresholded against noise (the
        # enhanced output and the fused image each at their own threshold).
        visible_detail = self._luma(encoded.visible_p) - up['luma']       # (n, 1, Hp, Wp)
        enhanced_detail = None
        if enhance:
            enhanced_detail = self.noise_shrink(visible_detail, self.config.noise_threshold)
            denoised_luma = (up['luma'] + enhanced_detail).clamp(0.0, 1.0)
            enhanced = (up['chroma'] + tone_curve(denoised_luma, up['gain'])).clamp(0.0, 1.0)
            result['enhanced'] = enhanced[..., :height, :width]  # (n, 3, H, W)
        if fuse or reconstruct:
            infrared_detail = encoded.infrared_p - up['infrared']  # (n, 1, Hp, Wp)
        if fuse:
            multiple = self._fused_noise_multiple(with_rendering_steps)
            if enhanced_detail is not None and multiple == self.config.noise_threshold:
                detail = enhanced_detail                           # the same shrink: reuse it
            else:
                detail = self.noise_shrink(visible_detail, multiple)
            denoised_luma = (up['luma'] + detail).clamp(0.0, 1.0)
            rendered = self._render_fused(denoised_luma, detail, infrared_detail, up,
                                          with_base='fused_base' in outputs)
            result.update({name: image[..., :height, :width] for name, image in rendered.items()})
        if reconstruct:
            infrared_rec_low = self._luma(self.decoder.render(infrared_trunk))  # (n, 1, h, w)
            result['infrared_rec_low'] = infrared_rec_low
            infrared_rec = F.interpolate(infrared_rec_low, size=encoded.visible_p.shape[-2:],
                                         mode='bilinear', align_corners=False) + infrared_detail
            result['infrared_rec'] = infrared_rec.clamp(0.0, 1.0)[..., :height, :width]
        return result

    def forward(self, visible: torch.Tensor, infrared: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused (n, 3, H, W), infrared share (n, 1, H, W), enhanced (n, 3, H, W))."""
        result = self.forward_all(visible, infrared, outputs=('enhanced', 'fused'))
        return result['fused'], result['weights'], result['enhanced']


def _magnitude(vectors: torch.Tensor) -> torch.Tensor:
    """Return the Euclidean norm over channels of (n, c, h, w) as (n, 1, h, w), never 0."""
    # sqrt(sum + EPS^2), not torch.norm: finite gradient at 0 and one ONNX op set everywhere.
    return (vectors.square().sum(dim=1, keepdim=True) + EPS * EPS).sqrt()


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameters of a model."""
    return sum(parameter.numel() for parameter in model.parameters())
