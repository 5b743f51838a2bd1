"""Multi-scale visible-infrared enhancement and fusion network (after Xin et al., 2026).

The learned part runs on a working grid ``downscale`` times smaller than the input (1/4 by
default); full-resolution detail is restored with cheap per-pixel operations, so a 640x512 pair
costs well under a GMAC:

* visible branch: encoder over the low-resolution RGB image plus an exposure mask, at scales
  1, 1/2, 1/4 and 1/8 of the working grid;
* infrared branch: the same encoder layout over the low-resolution infrared image;
* fusion block: at each of the four scales a small head predicts a spatially varying weight
  ``w`` (the infrared share) and mixes the features ``f = f_vis + w * (f_ir - f_vis)``; at full
  resolution a fifth weight, the scale-1 logit upsampled plus a detail-energy term, mixes the
  high-frequency details of the two sources;
* one shared decoder turns visible, infrared or fused features into a low-resolution image.

The enhanced visible image is the decoded visible image (kept at the input value where the
exposure mask says the input is already bright, so lamps do not blow out) plus the visible
full-resolution detail, soft-thresholded against noise and scaled by the local brightness gain.
The fused image takes its luminance from the decoded fused features plus the mixed detail and
its chroma from the enhanced visible image: infrared carries no colour, so colour stays natural.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812

# ITU-R BT.601 luma weights, the ones YCbCr fusion methods use.
LUMA = (0.299, 0.587, 0.114)
EPS = 1e-3


@dataclass
class ModelConfig:
    """Architecture hyper-parameters, stored with the weights."""

    channels: list[int] = field(default_factory=lambda: [16, 24, 32, 48])
    downscale: int = 4                # full resolution -> working grid
    exposure_threshold: float = 0.8   # max-channel value where the exposure mask is 0.5
    exposure_softness: float = 0.05   # width of the mask's sigmoid ramp
    max_gain: float = 20.0            # cap of the luma gain applied at full resolution
    # Noise suppression: visible detail is soft-thresholded at this multiple of its own mean
    # absolute value (in a dark frame that mean is mostly sensor noise: a cheap noise level).
    noise_threshold: float = 1.0
    curve_iterations: int = 8         # Zero-DCE++ uses 8
    fusion_gain_exponent: float = 0.5  # fused visible base = balanced * gain ** this
    detail_boost: float = 1.0         # gain on the fused image's full-resolution details
    multiscale: bool = True           # False: fuse at the coarsest scale only (ablation)
    adaptive_weights: bool = True     # False: fixed 0.5 weights everywhere (ablation)
    enhance: bool = True              # False: no enhancement, the raw visible is used (ablation)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build a config from a dict, ignoring unknown keys from newer versions."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain dict (safe to store with torch.save)."""
        return asdict(self)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Return the BT.601 luma of (n, 3, h, w) RGB as (n, 1, h, w)."""
    return LUMA[0] * rgb[:, 0:1] + LUMA[1] * rgb[:, 1:2] + LUMA[2] * rgb[:, 2:3]


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
    """Predict a spatially varying infrared share at each scale and mix the features."""

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
        # Full-resolution detail mixing: logit = upsampled scale-1 logit + gain * energy gap.
        self.detail_gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, visible: list[torch.Tensor], infrared: list[torch.Tensor],
                mask: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return the fused features and the weight logits per scale (finest first)."""
        fused, logits = [], []
        coarsest = len(visible) - 1
        for index, (head, f_vis, f_ir) in enumerate(
                zip(self.heads, visible, infrared, strict=True)):
            scaled_mask = F.interpolate(mask, size=f_vis.shape[-2:], mode='area')
            if not self.adaptive:
                logit = torch.zeros_like(scaled_mask)  # sigmoid(0) = 0.5
            else:
                logit = head(torch.cat([f_vis, f_ir, scaled_mask], dim=1))  # (n, 1, h_k, w_k)
            if not self.multiscale and index != coarsest:
                # Single-scale ablation: finer scales are purely visible, the coarsest is fused.
                fused.append(f_vis)
                logits.append(torch.full_like(logit, -8.0))
                continue
            weight = torch.sigmoid(logit)
            fused.append(f_vis + weight * (f_ir - f_vis))
            logits.append(logit)
        return fused, logits


class Decoder(nn.Module):
    """Shared U-Net style decoder: multi-scale features -> working-grid trunk features.

    Two light 3x3 heads read the trunk: ``render`` draws an RGB image (reconstructed infrared,
    fused image, and the visible image as the enhancement renders it), ``curve`` gives the
    per-pixel, per-channel Zero-DCE curve parameters that enhance the visible image.
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
        """Return luminance-curve parameters (n, 1, h, w) in [-1, 1]."""
        return torch.tanh(self.curve_head(trunk))


def apply_curve(image: torch.Tensor, alpha: torch.Tensor, iterations: int) -> torch.Tensor:
    """Zero-DCE light-enhancement curve LE(x) = x + alpha x (1 - x), applied repeatedly."""
    # Monotonic and range-preserving for alpha in [-1, 1]: it cannot invent structure or clip.
    for _ in range(iterations):
        image = image + alpha * image * (1.0 - image)
    return image


class ColourBalance(nn.Module):
    """Grey-world white balance of partial, learnt strength (night lamps cast yellow/green)."""

    def __init__(self) -> None:
        super().__init__()
        self.strength_logit = nn.Parameter(torch.tensor(0.0))   # sigmoid -> strength 0.5

    def forward(self, visible_low: torch.Tensor) -> torch.Tensor:
        """Return per-image channel gains (n, 3, 1, 1) that move channel means towards grey."""
        means = visible_low.mean(dim=(2, 3), keepdim=True) + EPS  # (n, 3, 1, 1)
        grey = means.mean(dim=1, keepdim=True)
        gains = (grey / means) ** torch.sigmoid(self.strength_logit)
        return gains.clamp(0.5, 2.0)


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
        self.colour = ColourBalance()
        self.register_buffer('luma_weights', torch.tensor(LUMA).view(1, 3, 1, 1),
                             persistent=False)
        # Padding multiple: the working grid must halve cleanly len(channels) - 1 times.
        self.multiple = self.config.downscale * 2 ** (len(channels) - 1)

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

    def exposure_mask(self, visible_low: torch.Tensor) -> torch.Tensor:
        """Return (n, 1, h, w) in [0, 1]: 1 where the input is already bright (lamps, glare)."""
        # The max channel, not the mean: an orange sodium lamp clips in red first.
        brightest = visible_low.amax(dim=1, keepdim=True)
        return torch.sigmoid(
            (brightest - self.config.exposure_threshold) / self.config.exposure_softness)

    def noise_shrink(self, detail: torch.Tensor) -> torch.Tensor:
        """Soft-threshold (n, 1, H, W) detail at a level that follows its own magnitude."""
        # A 1/4 subsample is plenty for a mean and costs 1/16 of a full pass.
        level = detail[..., ::4, ::4].abs().mean(dim=(2, 3), keepdim=True)  # (n, 1, 1, 1)
        threshold = self.config.noise_threshold * level
        return detail - torch.maximum(torch.minimum(detail, threshold), -threshold)

    # -- the three outputs ---------------------------------------------------------------------
    def forward_all(self, visible: torch.Tensor, infrared: torch.Tensor | None = None,
                    outputs: tuple[str, ...] = ('enhanced', 'infrared', 'fused')
                    ) -> dict[str, torch.Tensor]:
        """Run the requested paths ('enhanced', 'infrared', 'fused', ...); return tensors.

        visible (n, 3, H, W) and infrared (n, 1, H, W) are float in [0, 1]. Full-resolution
        outputs are cropped back to (H, W); '*_low' entries live on the padded working grid.
        """
        height, width = visible.shape[-2:]
        factor = self.config.downscale
        visible_p = self._pad(visible)                            # (n, 3, Hp, Wp)
        size = (visible_p.shape[-2], visible_p.shape[-1])
        visible_low = F.avg_pool2d(visible_p, factor)             # (n, 3, h, w)
        mask = self.exposure_mask(visible_low)                    # (n, 1, h, w)
        vis_features = self.visible_encoder(torch.cat([visible_low, mask], dim=1))
        result: dict[str, torch.Tensor] = {'visible_low': visible_low, 'exposure_mask': mask}
        fuse = 'fused' in outputs and infrared is not None
        reconstruct = 'infrared' in outputs and infrared is not None
        if fuse or reconstruct:
            infrared_p = self._pad(infrared)                      # (n, 1, Hp, Wp)
            infrared_low = F.avg_pool2d(infrared_p, factor)       # (n, 1, h, w)
            ir_features = self.infrared_encoder(infrared_low)
            result['infrared_low'] = infrared_low
        # One decoder-trunk call over a stacked batch: visible [, fused] [, infrared] features.
        stacks = [vis_features]
        if fuse:
            fused_features, logits = self.fusion(vis_features, ir_features, mask)
            stacks.append(fused_features)
        if reconstruct:
            stacks.append(ir_features)
        trunk = self.decoder([torch.cat(level, dim=0) for level in zip(*stacks, strict=True)])
        batch = visible.shape[0]
        vis_trunk, rest = trunk[:batch], trunk[batch:]
        parts = list(self.decoder.render(rest).split(batch, dim=0)) if rest.numel() else []

        luma_low = self._luma(visible_low)                        # (n, 1, h, w)
        if self.config.enhance:
            alpha = self.decoder.curve(vis_trunk)                 # (n, 1, h, w)
            # The curve brightens the luma; colour follows as a ratio (hue and saturation kept,
            # chroma noise not amplified beyond the gain) after a partial white balance.
            curved = apply_curve(luma_low, alpha, self.config.curve_iterations)
            tone = curved / (luma_low + EPS)
            # Bright regions keep gain 1: the enhancement never pushes lamps to clip.
            tone = tone + mask * (1.0 - tone)
            balanced_low = visible_low * self.colour(visible_low)
            result['curve_alpha'] = alpha
        else:
            tone = torch.ones_like(luma_low)
            balanced_low = visible_low
        enhanced_low = (balanced_low * tone).clamp(0.0, 1.0)     # (n, 3, h, w)
        result['enhanced_low'] = enhanced_low
        if 'rendered' in outputs or fuse:
            rendered_visible = self.decoder.render(vis_trunk)    # (n, 3, h, w)
            result['rendered_visible_low'] = rendered_visible

        # Everything below runs at full resolution: one upsampling call, then per-pixel ops.
        # Each branch of the output upsamples: its RGB base (3), its luma (1), its detail gain (1).
        def branch(base_low: torch.Tensor) -> list[torch.Tensor]:
            base_luma = self._luma(base_low)
            gain = ((base_luma + EPS) / (luma_low + EPS)).clamp(0.0, self.config.max_gain)
            return [base_low, base_luma, gain]

        low_maps = [luma_low]                                     # channel 0
        want_enhanced = 'enhanced' in outputs
        if want_enhanced:
            low_maps += branch(enhanced_low)                      # channels 1-3, 4, 5
        if fuse:
            # The fused image's visible base is tone-mapped more gently than the enhanced
            # output (gain ** exponent): it keeps closer to both sources' contrast.
            base_low = (balanced_low * tone.pow(self.config.fusion_gain_exponent)).clamp(0.0, 1.0)
            fused_low = parts.pop(0)
            # The decoder supplies what the infrared adds: where the weights pick the visible
            # features, rendered fused = rendered visible and the fused luma is the base luma.
            base_maps = branch(base_low)
            infrared_gain_low = self._luma(fused_low - rendered_visible)  # (n, 1, h, w)
            result['fused_low'] = fused_low
            result['weight_logits_low'] = logits[0]
            low_maps += base_maps + [infrared_gain_low, logits[0]]  # base 5, luma, gain, ir, logit
        if fuse or reconstruct:
            low_maps.append(infrared_low)                         # last channel
        up = F.interpolate(torch.cat(low_maps, dim=1), size=size, mode='bilinear',
                           align_corners=False)                   # (n, k, Hp, Wp)
        # Visible detail above the working grid's band, soft-thresholded against noise.
        luma_up = up[:, 0:1]
        detail = self.noise_shrink(self._luma(visible_p) - luma_up)  # (n, 1, Hp, Wp)
        denoised_luma = luma_up + detail
        offset = 1
        if want_enhanced:
            # The full-resolution luma times the upsampled gain (Retinex: reflectance kept; a
            # ratio leaves no dark halo where the gain changes fast, beside lamps), plus the
            # chroma offsets of the low-resolution enhanced image.
            enhanced = (up[:, 1:4] - up[:, 4:5] + denoised_luma * up[:, 5:6]).clamp(0.0, 1.0)
            result['enhanced'] = enhanced[..., :height, :width]  # (n, 3, H, W)
            offset = 6
        if fuse or reconstruct:
            ir_detail = infrared_p - up[:, -1:]                   # (n, 1, Hp, Wp)
        if fuse:
            base_up, base_luma_up = up[:, offset:offset + 3], up[:, offset + 3:offset + 4]
            base_gain_up = up[:, offset + 4:offset + 5]
            infrared_gain_up = up[:, offset + 5:offset + 6]
            logit_up = up[:, offset + 6:offset + 7]
            vis_detail = detail * base_gain_up * self.config.detail_boost
            if self.config.adaptive_weights:
                # Full-resolution scale of the fusion: the upsampled scale-1 logit, sharpened by
                # which source carries more detail at this pixel.
                energy_gap = ir_detail.abs() - vis_detail.abs()
                weight = torch.sigmoid(logit_up + self.fusion.detail_gain * energy_gap)
            else:
                weight = torch.full_like(ir_detail, 0.5)
            boosted_ir = ir_detail * self.config.detail_boost
            visible_luma = denoised_luma * base_gain_up                 # (n, 1, Hp, Wp)
            fused_luma = (visible_luma + infrared_gain_up
                          + weight * (boosted_ir - vis_detail))
            # Chroma of the visible base: its offsets from its own luma are kept (adding one
            # value to R, G and B changes Y only, never Cb or Cr).
            fused = (base_up - base_luma_up + fused_luma).clamp(0.0, 1.0)
            result['fused'] = fused[..., :height, :width]         # (n, 3, H, W)
            result['weights'] = weight[..., :height, :width]      # (n, 1, H, W)
            if 'fused_base' in outputs:
                fused_base = (base_up - base_luma_up + visible_luma).clamp(0.0, 1.0)
                result['fused_base'] = fused_base[..., :height, :width]
        if reconstruct:
            infrared_rec_low = self._luma(parts.pop(0))           # (n, 1, h, w)
            result['infrared_rec_low'] = infrared_rec_low
            infrared_rec = F.interpolate(infrared_rec_low, size=size, mode='bilinear',
                                         align_corners=False) + ir_detail
            result['infrared_rec'] = infrared_rec.clamp(0.0, 1.0)[..., :height, :width]
        return result

    def forward(self, visible: torch.Tensor, infrared: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (fused (n, 3, H, W), infrared share (n, 1, H, W), enhanced (n, 3, H, W))."""
        result = self.forward_all(visible, infrared, outputs=('enhanced', 'fused'))
        return result['fused'], result['weights'], result['enhanced']


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameters of a model."""
    return sum(parameter.numel() for parameter in model.parameters())
