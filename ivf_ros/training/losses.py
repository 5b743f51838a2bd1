"""Loss terms of the three training stages (weights come from config/train.yaml)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F  # noqa: N812

from ivf_ros.fusion.rendering import luminance

LossTerms = dict[str, torch.Tensor]


# -- building blocks ---------------------------------------------------------------------------
def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Return |grad| (L1 of the Sobel responses) of (n, 1, h, w) as (n, 1, h, w)."""
    kernel_x = image.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
    kernels = torch.stack([kernel_x, kernel_x.t()]).unsqueeze(1)   # (2, 1, 3, 3)
    responses = F.conv2d(F.pad(image, (1, 1, 1, 1), mode='replicate'), kernels)
    return responses.abs().sum(dim=1, keepdim=True)


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Return a (1, 1, size, size) normalised Gaussian window."""
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2.0
    profile = torch.exp(-(coords ** 2) / (2.0 * sigma ** 2))
    profile = profile / profile.sum()
    return (profile[:, None] * profile[None, :]).view(1, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Return the mean SSIM of (n, 1, h, w) images in [0, 1] (Wang et al. 2004 constants)."""
    size = min(window, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2                                            # odd window for tiny inputs
    kernel = _gaussian_window(size, sigma, x)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x = F.conv2d(x, kernel)
    mu_y = F.conv2d(y, kernel)
    var_x = F.conv2d(x * x, kernel) - mu_x ** 2
    var_y = F.conv2d(y * y, kernel) - mu_y ** 2
    cov = F.conv2d(x * y, kernel) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean()


def chroma(rgb: torch.Tensor) -> torch.Tensor:
    """Return the (Cb, Cr) chroma of (n, 3, h, w) RGB as (n, 2, h, w) (BT.601, no offset)."""
    luma = luminance(rgb)
    return torch.cat([0.564 * (rgb[:, 2:3] - luma), 0.713 * (rgb[:, 0:1] - luma)], dim=1)


# -- stage 1: visible enhancement without references --------------------------------------------
def exposure_loss(enhanced: torch.Tensor, level: float, patch: int = 16) -> torch.Tensor:
    """Zero-DCE exposure control: 16x16 patch means of the luma pulled towards `level`."""
    means = F.avg_pool2d(luminance(enhanced), patch)
    return (means - level).abs().mean()


def colour_constancy_loss(enhanced: torch.Tensor) -> torch.Tensor:
    """Grey-world colour constancy: the channel means of each image should agree."""
    means = enhanced.mean(dim=(2, 3))                                # (n, 3)
    red, green, blue = means[:, 0], means[:, 1], means[:, 2]
    return ((red - green) ** 2 + (red - blue) ** 2 + (green - blue) ** 2).mean()


def illumination_smoothness_loss(strength: torch.Tensor) -> torch.Tensor:
    """Zero-DCE total variation (squared) of the tone-curve strength map (n, 1, h, w)."""
    tv_y = (strength[..., 1:, :] - strength[..., :-1, :]).pow(2).mean()
    tv_x = (strength[..., :, 1:] - strength[..., :, :-1]).pow(2).mean()
    return tv_x + tv_y


def spatial_consistency_loss(enhanced_low: torch.Tensor,
                             visible_low: torch.Tensor) -> torch.Tensor:
    """Zero-DCE spatial consistency: neighbour differences of the luma kept through enhancement.

    On the working grid one cell is a 4x4 full-resolution region, Zero-DCE's pooling size.
    """
    enhanced, original = luminance(enhanced_low), luminance(visible_low)   # (n, 1, h, w)
    loss = enhanced.new_zeros(())
    for dim in (-1, -2):
        d_enhanced = enhanced.diff(dim=dim)
        d_original = original.diff(dim=dim)
        loss = loss + (d_original - d_enhanced).pow(2).mean()
    return 2.0 * loss  # both neighbours of each cell, as the four-direction original


def render_loss(rendered_low: torch.Tensor, enhanced_low: torch.Tensor) -> torch.Tensor:
    """L1 of the decoder's rendered visible image to the (fixed) enhanced image."""
    return (rendered_low - enhanced_low.detach()).abs().mean()


def noise_loss(enhanced: torch.Tensor, visible_low: torch.Tensor) -> torch.Tensor:
    """Edge-aware total variation: gradients of the output where the source is flat."""
    luma = luminance(enhanced)                                       # (n, 1, H, W)
    guide = F.interpolate(luminance(visible_low), size=luma.shape[-2:], mode='bilinear',
                          align_corners=False)
    # Flatness from the (already low-pass) source: scale-free through its own mean gradient.
    guide_grad = sobel_magnitude(guide)
    flat = torch.exp(-guide_grad / (guide_grad.mean(dim=(2, 3), keepdim=True) + 1e-4))
    return (sobel_magnitude(luma) * flat).mean()


# -- stage 2: infrared reconstruction ----------------------------------------------------------
def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return the mean absolute error."""
    return (prediction - target).abs().mean()


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return 1 - SSIM."""
    return 1.0 - ssim(prediction, target)


def gradient_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return the L1 distance of the Sobel magnitudes."""
    return l1_loss(sobel_magnitude(prediction), sobel_magnitude(target))


# -- stage 3: fusion ---------------------------------------------------------------------------
def intensity_loss(fused: torch.Tensor, enhanced: torch.Tensor,
                   infrared: torch.Tensor) -> torch.Tensor:
    """L1 to the per-pixel max of the enhanced luma and the infrared (warm targets kept)."""
    return l1_loss(luminance(fused), torch.maximum(luminance(enhanced), infrared))


def texture_loss(fused: torch.Tensor, enhanced: torch.Tensor,
                 infrared: torch.Tensor) -> torch.Tensor:
    """L1 of the fused gradient to the max of the sources' gradients."""
    target = torch.maximum(sobel_magnitude(luminance(enhanced)), sobel_magnitude(infrared))
    return l1_loss(sobel_magnitude(luminance(fused)), target)


def colour_consistency_loss(fused: torch.Tensor, enhanced: torch.Tensor) -> torch.Tensor:
    """L1 of the (Cb, Cr) chroma of the fused and the enhanced visible images."""
    return l1_loss(chroma(fused), chroma(enhanced))


def fusion_ssim_loss(fused: torch.Tensor, enhanced: torch.Tensor,
                     infrared: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM of the fused luma with each source."""
    luma = luminance(fused)
    return 1.0 - 0.5 * (ssim(luma, luminance(enhanced)) + ssim(luma, infrared))


def local_contrast(luma: torch.Tensor, size: int = 31) -> torch.Tensor:
    """Return luma minus its size x size box mean (n, 1, h, w): contrast to the surroundings."""
    size = max(1, min(size, luma.shape[-1], luma.shape[-2]))
    size -= 1 - size % 2                                            # odd box
    surround = F.avg_pool2d(luma, size, stride=1, padding=size // 2, count_include_pad=False)
    return luma - surround


def salience_loss(fused: torch.Tensor, infrared: torch.Tensor, size: int = 31,
                  threshold: float = 0.03, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Penalise warm targets that lose their infrared contrast against their surroundings.

    Where the infrared is warmer than its 31-px surround by more than ``threshold`` (a person,
    an engine), the fused luma's contrast there must be at least as large: mean of the shortfall
    over those pixels (0 when every warm target stands out as much as in the infrared).
    ``targets`` (n, 1, h, w), when given, keeps only the warm pixels inside it (the boxes the
    detector finds on the infrared): a warm wall or road is then free to take the visible.
    """
    warm_contrast = local_contrast(infrared, size)
    warm = (warm_contrast > threshold).to(infrared.dtype)
    if targets is not None:
        warm = warm * targets
    shortfall = F.relu(warm_contrast - local_contrast(luminance(fused), size))
    return (shortfall * warm).sum() / (warm.sum() + 1.0)


# |working-grid gate logit| above this is penalised by the gate_bound term (w in [0.018, 0.982]).
GATE_LOGIT_BOUND = 4.0


def gate_bound_loss(logits: torch.Tensor, bound: float = GATE_LOGIT_BOUND) -> torch.Tensor:
    """Keep the gate responsive: mean squared excess of |working-grid gate logit| over bound.

    A logit far past the bound saturates the sigmoid: w is 0 or 1 and no term's gradient
    reaches the fusion block any more, so one early push (a deeper head, a large step) can fix
    the gate at w = 1 for the rest of training. Inside [-bound, bound] the term is 0. It bounds
    the working-grid logit only: the full-resolution detail mix adds ``detail_gain`` times the
    detail-energy gap to it, which may still saturate per pixel (that is its job).
    """
    return F.relu(logits.abs() - bound).square().mean()


def source_loss(logits: torch.Tensor, preferred: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
    """Teach the gate which source each object is found on: weighted BCE on its logits.

    logits (n, 1, h, w): the working-grid gate logits (w = sigmoid, the infrared's share);
    preferred, weight (n, 1, h, w): the teacher's :func:`~ivf_ros.training.teacher.
    source_preference`, 1 where the detector finds an object better on the infrared, 0 on the
    visible, weighted by the score gap (0 outside objects). Normalised by the total weight plus
    one per image, so a batch with few objects asks for little.
    """
    cross_entropy = F.binary_cross_entropy_with_logits(logits, preferred, reduction='none')
    return (cross_entropy * weight).sum() / (weight.sum() + logits.shape[0])


def fusion_noise_loss(fused: torch.Tensor, enhanced: torch.Tensor,
                      infrared: torch.Tensor) -> torch.Tensor:
    """Penalise amplified noise: fine (Laplacian) energy beyond both sources'.

    The 3x3 Laplacian of the fused luma may carry each source's fine detail, but not more than
    the larger of the two at that pixel: amplified sensor noise is the excess.
    """
    kernel = fused.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(
        1, 1, 3, 3)

    def laplacian(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(image, (1, 1, 1, 1), mode='replicate'), kernel).abs()

    bound = torch.maximum(laplacian(luminance(enhanced)), laplacian(infrared))
    return F.relu(laplacian(luminance(fused)) - bound).mean()


def detection_loss(student: torch.Tensor, teacher: torch.Tensor, confidence: float = 0.25,
                   background: float = 0.05) -> torch.Tensor:
    """Keep detections: the fused image's class scores at least the sources' best, per anchor.

    student, teacher: (n, k, anchors) probabilities of the frozen detector on the fused image
    and max(on visible, on infrared). Where the teacher is confident (> ``confidence``) the
    shortfall of the fused logit is penalised; where neither source sees anything (teacher
    < ``background``) a fused score above ``confidence`` is a false positive. Both are summed
    and divided by the number of confident anchors plus one per image.
    """
    def logit(p: torch.Tensor) -> torch.Tensor:
        return torch.logit(p.clamp(1e-4, 1.0 - 1e-4))

    found = (teacher > confidence).to(student.dtype)
    missed = F.relu(logit(teacher) - logit(student)) * found
    spurious = F.relu(student - confidence) * (teacher < background).to(student.dtype)
    return (missed.sum() + spurious.sum()) / (found.sum() + student.shape[0])


# -- per-stage assembly ------------------------------------------------------------------------
def stage1_terms(outputs: Mapping[str, torch.Tensor], exposure_level: float) -> LossTerms:
    """Stage 1 terms from the network outputs of visible-only crops."""
    if 'curve_strength' not in outputs:
        # No-enhancement ablation: the decoder only learns to render the visible image.
        return {'render': render_loss(outputs['rendered_visible_low'], outputs['enhanced_low'])}
    return {
        'exposure': exposure_loss(outputs['enhanced'], exposure_level),
        'colour': colour_constancy_loss(outputs['enhanced']),
        'smoothness': illumination_smoothness_loss(outputs['curve_strength']),
        'spatial': spatial_consistency_loss(outputs['enhanced_low'], outputs['visible_low']),
        'noise': noise_loss(outputs['enhanced'], outputs['visible_low']),
        'render': render_loss(outputs['rendered_visible_low'], outputs['enhanced_low']),
    }


def stage2_terms(outputs: Mapping[str, torch.Tensor]) -> LossTerms:
    """Stage 2 terms: the decoded infrared against the working-grid infrared input."""
    prediction, target = outputs['infrared_rec_low'], outputs['infrared_low']
    return {
        'l1': l1_loss(prediction, target),
        'ssim': ssim_loss(prediction, target),
        'gradient': gradient_loss(prediction, target),
    }


def stage3_terms(outputs: Mapping[str, torch.Tensor], infrared: torch.Tensor,
                 weights: Mapping[str, float] | None = None,
                 detection: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 teacher_scores: torch.Tensor | None = None,
                 salience_targets: torch.Tensor | None = None,
                 gate_logit_bound: float = GATE_LOGIT_BOUND,
                 source_targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> LossTerms:
    """Stage 3 terms: the fused image against its visible base, the infrared and the detector.

    Only the terms named in ``weights`` (all when None) are computed; 'detection' needs the
    frozen detector (``detection``: fused RGB -> class scores) and its scores on the sources;
    ``salience_targets`` (n, 1, h, w) limits the salience term to the detected warm targets;
    'source' needs ``source_targets``, the teacher's (preferred, weight) on the gate's grid.
    """
    fused, enhanced = outputs['fused'], outputs['fused_base'].detach()
    builders: dict[str, Callable[[], torch.Tensor]] = {
        'intensity': lambda: intensity_loss(fused, enhanced, infrared),
        'texture': lambda: texture_loss(fused, enhanced, infrared),
        'colour': lambda: colour_consistency_loss(fused, enhanced),
        'ssim': lambda: fusion_ssim_loss(fused, enhanced, infrared),
        'salience': lambda: salience_loss(fused, infrared, targets=salience_targets),
        'noise': lambda: fusion_noise_loss(fused, enhanced, infrared),
        'gate_bound': lambda: gate_bound_loss(outputs['weight_logits_low'], gate_logit_bound),
    }
    if detection is not None and teacher_scores is not None:
        builders['detection'] = lambda: detection_loss(detection(fused), teacher_scores)
    if source_targets is not None:
        builders['source'] = lambda: source_loss(outputs['weight_logits_low'], *source_targets)
    # A term weighted 0 is not computed (the detector's passes are the slow part of a step).
    wanted = builders if weights is None else [name for name, weight in weights.items()
                                               if name in builders and weight]
    for needs_detector in ('detection', 'source'):
        if weights is not None and weights.get(needs_detector) and needs_detector not in builders:
            raise ValueError(f'the {needs_detector} term needs the frozen detector '
                             '(config: detector)')
    return {name: builders[name]() for name in wanted}


STAGE_TERMS: dict[int, Callable[..., LossTerms]] = {
    1: stage1_terms, 2: stage2_terms, 3: stage3_terms}
# The loss terms each stage knows (the names config/train.yaml weights).
TERM_NAMES: dict[int, tuple[str, ...]] = {
    1: ('exposure', 'colour', 'smoothness', 'spatial', 'noise', 'render'),
    2: ('l1', 'ssim', 'gradient'),
    3: ('intensity', 'texture', 'colour', 'ssim', 'salience', 'noise', 'gate_bound',
        'detection', 'source'),
}


def weighted_total(terms: Mapping[str, torch.Tensor],
                   weights: Mapping[str, float]) -> torch.Tensor:
    """Return sum(weight * term); a term without a weight is a configuration error (ValueError)."""
    missing = set(terms) - set(weights)
    if missing:
        raise ValueError(f'no weight for loss terms {sorted(missing)} in the training config')
    total = torch.zeros((), device=next(iter(terms.values())).device)
    for name, value in terms.items():
        total = total + float(weights[name]) * value
    return total
