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
    max_gain: float = 8.0             # cap of the local brightness gain applied to details
    # Noise suppression: visible detail is soft-thresholded at this multiple of its own mean
    # absolute value (in a dark frame that mean is mostly sensor noise: a cheap noise level).
    noise_threshold: float = 1.0
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
    """Shared U-Net style decoder: multi-scale features -> low-resolution RGB image."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        ups = []
        for index in range(len(channels) - 1, 0, -1):
            ups.append(conv_block(channels[index] + channels[index - 1], channels[index - 1]))
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(channels[0], 3, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return the decoded image (n, 3, h, w) in [0, 1] on the working grid."""
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        return torch.sigmoid(self.head(x))


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
        """Run the requested paths ('enhanced', 'infrared', 'fused'); return a dict of tensors.

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
        # One decoder call over a stacked batch: visible [, fused] [, infrared] features.
        stacks = [vis_features]
        if fuse:
            fused_features, logits = self.fusion(vis_features, ir_features, mask)
            stacks.append(fused_features)
        if reconstruct:
            stacks.append(ir_features)
        decoded = self.decoder([torch.cat(level, dim=0) for level in zip(*stacks, strict=True)])
        parts = list(decoded.split(visible.shape[0], dim=0))     # each (n, 3, h, w)

        decoded_visible = parts.pop(0)
        result['decoded_visible_low'] = decoded_visible
        if self.config.enhance:
            # Bright regions keep their input value: the enhancement never pushes lamps to clip.
            enhanced_low = visible_low + (1.0 - mask) * (decoded_visible - visible_low)
        else:
            enhanced_low = visible_low
        luma_low = self._luma(visible_low)                        # (n, 1, h, w)
        enhanced_luma_low = self._luma(enhanced_low)
        gain_low = ((enhanced_luma_low + EPS) / (luma_low + EPS)).clamp(0.0, self.config.max_gain)
        result['enhanced_low'] = enhanced_low

        # Everything below runs at full resolution: one upsampling call, then per-pixel ops.
        low_maps = [enhanced_low, luma_low, gain_low, enhanced_luma_low]  # channels 0-2, 3, 4, 5
        if fuse:
            fused_low = parts.pop(0)
            result['fused_low'] = fused_low
            result['weight_logits_low'] = logits[0]
            low_maps += [self._luma(fused_low), logits[0]]        # channels 6, 7
        if fuse or reconstruct:
            low_maps.append(infrared_low)                         # last channel
        up = F.interpolate(torch.cat(low_maps, dim=1), size=size, mode='bilinear',
                           align_corners=False)                   # (n, k, Hp, Wp)
        enhanced_up, luma_up, gain_up = up[:, 0:3], up[:, 3:4], up[:, 4:5]
        # Visible detail above the working grid's band, denoised, brightened with the local gain.
        vis_detail = self.noise_shrink(self._luma(visible_p) - luma_up) * gain_up
        enhanced = (enhanced_up + vis_detail).clamp(0.0, 1.0)    # (n, 3, Hp, Wp)
        result['enhanced'] = enhanced[..., :height, :width]
        if fuse or reconstruct:
            ir_detail = infrared_p - up[:, -1:]                   # (n, 1, Hp, Wp)
        if fuse:
            fused_luma_up, logit_up = up[:, 6:7], up[:, 7:8]
            if self.config.adaptive_weights:
                # Full-resolution scale of the fusion: the upsampled scale-1 logit, sharpened by
                # which source carries more detail at this pixel.
                energy_gap = ir_detail.abs() - vis_detail.abs()
                weight = torch.sigmoid(logit_up + self.fusion.detail_gain * energy_gap)
            else:
                weight = torch.full_like(ir_detail, 0.5)
            fused_luma = fused_luma_up + torch.lerp(vis_detail, ir_detail, weight)
            # Chroma of the enhanced visible image: its offsets from its own luma are kept
            # (adding one value to R, G and B changes Y only, never Cb or Cr).
            fused = (enhanced_up - up[:, 5:6] + fused_luma).clamp(0.0, 1.0)
            result['fused'] = fused[..., :height, :width]         # (n, 3, H, W)
            result['weights'] = weight[..., :height, :width]      # (n, 1, H, W)
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
