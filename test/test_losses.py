"""Every loss term is a real objective: optimising it alone on a tiny crop makes it decrease."""

from __future__ import annotations

import pytest
import torch

from ivf_ros.fusion.model import IVFNet, ModelConfig
from ivf_ros.io.synthetic import make_night_pair
from ivf_ros.training import losses
from ivf_ros.training.config import StageConfig
from ivf_ros.training.trainer import set_trainable, stage_terms

TERMS = {
    1: ('exposure', 'colour', 'smoothness', 'spatial', 'noise', 'render'),
    2: ('l1', 'ssim', 'gradient'),
    3: ('intensity', 'texture', 'colour', 'ssim', 'salience', 'noise', 'gate_bound'),
}
SMALL = ModelConfig(channels=[8, 8, 12, 16])


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    pair = make_night_pair(seed=3, width=32, height=32)
    visible = torch.from_numpy(pair.visible).permute(2, 0, 1)[None].float() / 255.0
    infrared = torch.from_numpy(pair.infrared)[None, None].float() / 255.0
    return visible, infrared


def term_after_steps(stage: int, term: str, steps: int = 8) -> tuple[float, float]:
    torch.manual_seed(0)
    network = IVFNet(SMALL)
    visible, infrared = tiny_batch()
    config = StageConfig(steps=steps, batch=1, lr=5e-3, losses={term: 1.0},
                         exposure_level=0.45)
    if term == 'smoothness':
        # A freshly initialised curve map is almost flat: roughen it so there is TV to remove.
        with torch.no_grad():
            network.decoder.curve_head.weight.normal_(0.0, 0.5)
    if term == 'gate_bound':
        # A fresh gate's logits are near 0: saturate it (w = 1 everywhere) so there is excess.
        with torch.no_grad():
            for head in network.fusion.heads:
                head[-1].bias.fill_(6.0)
    trainable = set_trainable(network, stage)
    optimiser = torch.optim.Adam(trainable, lr=config.lr)
    values = []
    for _ in range(steps + 1):
        value = stage_terms(network, stage, visible, infrared, config)[term]
        values.append(float(value.detach()))
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    return values[0], values[-1]


@pytest.mark.parametrize('stage, term', [(s, t) for s, names in TERMS.items() for t in names])
def test_each_term_decreases_when_optimised(stage: int, term: str) -> None:
    first, last = term_after_steps(stage, term)
    # Stage 3's colour term starts within rounding of 0 (the fused chroma is its base's by
    # construction, only clipping differs: 1e-5): nothing to remove.
    nothing_to_remove = (stage, term) == (3, 'colour') and max(first, last) < 1e-4
    assert last < first or last < 1e-7 or nothing_to_remove, \
        f'stage {stage} {term}: {first:.3g} -> {last:.3g}'


def test_stage_terms_have_the_documented_names() -> None:
    network = IVFNet(SMALL)
    visible, infrared = tiny_batch()
    for stage, names in TERMS.items():
        # Stage 3 computes the terms its config weighs (the detector's only when asked).
        config = StageConfig(steps=1, batch=1, lr=1e-3, losses=dict.fromkeys(names, 1.0))
        assert tuple(stage_terms(network, stage, visible, infrared, config)) == names


def test_gate_bound_is_zero_inside_the_bound_and_grows_outside() -> None:
    logits = torch.tensor([-3.0, 0.0, 4.0, 5.0, -6.0], requires_grad=True)
    value = losses.gate_bound_loss(logits, bound=4.0)
    assert float(value) == pytest.approx((1.0 + 4.0) / 5)
    value.backward()
    # Only the logits past the bound are pulled back, each towards it.
    assert logits.grad.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.4, -0.8])


def test_ssim_of_identical_images_is_one_and_weighted_total_needs_weights() -> None:
    image = torch.rand(1, 1, 32, 32)
    assert abs(float(losses.ssim(image, image)) - 1.0) < 1e-5
    assert float(losses.ssim(image, 1 - image)) < 0.5
    with pytest.raises(ValueError, match='no weight'):
        losses.weighted_total({'l1': torch.tensor(1.0)}, {})
    total = losses.weighted_total({'l1': torch.tensor(2.0), 'ssim': torch.tensor(1.0)},
                                  {'l1': 0.5, 'ssim': 3.0})
    assert float(total) == pytest.approx(4.0)
