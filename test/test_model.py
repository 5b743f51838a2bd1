"""The fusion network: shapes for any size, determinism, exposure handling, budget, ablations."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ivf_ros.fusion.model import count_parameters, IVFNet, ModelConfig, upsample_maps
from ivf_ros.fusion.rendering import local_contrast_lift, tent_blur, tone_curve


def make_pair(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    visible = torch.rand(1, 3, height, width, generator=generator) * 0.2  # a dark frame
    infrared = torch.rand(1, 1, height, width, generator=generator)
    return visible, infrared


@pytest.mark.parametrize('height, width', [(479, 641), (5, 7), (33, 17), (2, 3), (64, 64)])
@pytest.mark.parametrize('config', [{}, {'fusion_base': 'infrared', 'chroma_agreement': True,
                                         'chroma_coring': 2.0, 'detail_window': 5,
                                         'noise_threshold': 0.0,
                                         'fusion_noise_threshold': 1.0}])
def test_every_output_has_the_input_size(height: int, width: int, config: dict) -> None:
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(**config)).eval()
    visible, infrared = make_pair(height, width)
    with torch.inference_mode():
        outputs = network.forward_all(visible, infrared)
    assert outputs['enhanced'].shape == (1, 3, height, width)
    assert outputs['fused'].shape == (1, 3, height, width)
    assert outputs['weights'].shape == (1, 1, height, width)
    assert outputs['infrared_rec'].shape == (1, 1, height, width)
    for name in ('enhanced', 'fused', 'weights', 'infrared_rec'):
        assert outputs[name].dtype == torch.float32
        assert 0.0 <= float(outputs[name].min()) and float(outputs[name].max()) <= 1.0


def test_forward_returns_fused_weights_enhanced_for_a_batch() -> None:
    network = IVFNet().eval()
    visible = torch.rand(2, 3, 40, 56)
    infrared = torch.rand(2, 1, 40, 56)
    fused, weights, enhanced = network(visible, infrared)
    assert fused.shape == (2, 3, 40, 56) and enhanced.shape == (2, 3, 40, 56)
    assert weights.shape == (2, 1, 40, 56)


def test_same_seed_same_network_and_outputs() -> None:
    visible, infrared = make_pair(48, 80)
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        network = IVFNet().eval()
        with torch.inference_mode():
            results.append(network(visible, infrared))
    for first, second in zip(*results, strict=True):
        assert torch.equal(first, second)


def test_curve_is_monotonic_and_stays_in_range() -> None:
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101)
    for gain in (0.02, 0.5, 1.0, 8.0, 55.0):
        y = tone_curve(x, torch.full_like(x, gain))
        assert float(y[..., 0]) == 0.0 and abs(float(y[..., -1]) - 1.0) < 1e-6
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 + 1e-6
        assert bool((y.diff(dim=-1) >= 0).all())


def test_bright_regions_are_not_brightened_and_leave_no_halo() -> None:
    torch.manual_seed(0)
    network = IVFNet().eval()
    with torch.no_grad():
        network.decoder.curve_head.bias.fill_(2.0)  # a curve that brightens hard everywhere
    visible = torch.full((1, 3, 64, 64), 0.05)
    visible[..., :32, :] = 0.97                     # a street lamp in the top half
    with torch.inference_mode():
        outputs = network.forward_all(visible, None, outputs=('enhanced',))
    assert float(outputs['exposure_mask'][..., :6, :].min()) > 0.95
    enhanced = outputs['enhanced']
    assert float((enhanced[..., 4:28, 4:60] - 0.97).abs().max()) < 0.05  # lamp kept, no clip
    assert float(enhanced[..., 40:60, 4:60].mean()) > 0.2                # dark part brightened
    # Beside the lamp the dark side must not turn black (a detail x gain halo).
    assert float(enhanced[..., 32:36, 4:60].min()) > 0.1


def test_budget_params_and_macs_at_640x512() -> None:
    network = IVFNet().eval()
    assert count_parameters(network) <= 500_000
    visible, infrared = make_pair(512, 640)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(visible, infrared)
    assert counter.get_total_flops() / 2 <= 4e9


def test_the_gate_blends_the_bases_and_warm_targets_show() -> None:
    torch.manual_seed(0)
    network = IVFNet().eval()
    visible = torch.full((1, 3, 64, 64), 0.05)              # flat: no details to mix
    infrared = torch.zeros(1, 1, 64, 64)
    infrared[..., 16:48, 16:48] = 0.9                       # a warm pedestrian
    with torch.inference_mode():
        outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
    fused, base, weights = outputs['fused'], outputs['fused_base'], outputs['weights']
    # Away from the target's edges (whose details are mixed in) the fused luma is the blend
    # (1 - w) V + w I of the bases: over the cold background the gate may darken the visible.
    blend = base + weights * (infrared - base)
    assert torch.allclose(fused[..., :8, :], blend[..., :8, :], atol=2e-3)
    assert float((fused - base)[..., 28:36, 28:36].min()) > 0.1  # the warm target appears


def test_tent_blur_keeps_size_and_constants() -> None:
    constant = torch.full((1, 1, 16, 12), 0.3)
    assert torch.allclose(tent_blur(constant, 2), constant)   # no border darkening
    ramp = torch.linspace(0, 1, 48).view(1, 1, 1, 48).expand(1, 1, 20, 48)
    blurred = tent_blur(ramp, 1)
    assert blurred.shape == ramp.shape
    # Area, tent and bilinear steps all keep a linear function away from the borders.
    assert torch.allclose(blurred[..., 12:-12], ramp[..., 12:-12], atol=1e-6)
    # An impulse (one 4x4 cell) spreads over a symmetric tent that keeps its mass: 2 box passes
    # of 5 taps at 1/4 size reach 4 cells each way, i.e. 16 px plus the bilinear step.
    impulse = torch.zeros(1, 1, 64, 64)
    impulse[..., 32:36, 32:36] = 1.0
    spread = tent_blur(impulse, 2)[0, 0]
    assert float(spread.sum()) == pytest.approx(16.0, rel=1e-5)
    assert torch.allclose(spread, spread.T, atol=1e-6)
    right, left = spread[34, 34:54], spread[34, 14:34].flip(0)   # mirrored about x = 33.5
    assert torch.allclose(right, left, atol=1e-6)
    assert float(spread[34, 34]) > float(spread[34, 44]) > 0.0
    assert float(spread[34, 62]) == 0.0 and float(spread[34, 8]) == 0.0


def test_local_contrast_lift_never_crushes_black_or_white() -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 32, 48, generator=generator)
    lift = local_contrast_lift(base, gain=50.0, radius=2)   # a gain far past the shipped 0.3
    assert bool(((base + lift) >= base / 2 - 1e-6).all())
    assert bool(((base + lift) <= (1 + base) / 2 + 1e-6).all())
    assert float(lift.abs().max()) > 0.1                      # the bound is reached, not idle


def test_local_contrast_spreads_the_object_scale_and_leaves_flat_frames_alone() -> None:
    def fused(local_contrast: float, visible: torch.Tensor, infrared: torch.Tensor,
              enhance: bool = True) -> torch.Tensor:
        torch.manual_seed(0)                                 # same weights for both gains
        config = ModelConfig(local_contrast=local_contrast, enhance=enhance)
        network = IVFNet(config).eval()
        with torch.inference_mode():
            return network.forward_all(visible, infrared, outputs=('fused',))['fused']

    # A dim facade (64 px wide) on a dark road: contrast at the scale of objects.
    visible = torch.full((1, 3, 96, 160), 0.04)
    visible[..., 16:80, 48:112] = 0.10
    infrared = torch.full((1, 1, 96, 160), 0.2)
    assert float(fused(0.5, visible, infrared).std()) > 1.2 * float(
        fused(0.0, visible, infrared).std())
    # Stage 3 trains without the step: forward_all(with_rendering_steps=False) leaves it out.
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(local_contrast=0.5)).eval()
    with torch.inference_mode():
        without = network.forward_all(visible, infrared, outputs=('fused',),
                                      with_rendering_steps=False)['fused']
    assert torch.equal(without, fused(0.0, visible, infrared))
    # A flat frame has no band to amplify (no enhancement and an infrared as bright as the
    # visible, so whatever the gate takes is flat: a random network's gate varies at the
    # borders, where its convolutions see padding).
    flat = torch.full((1, 3, 61, 83), 0.05)
    cold = torch.full((1, 1, 61, 83), 0.05)
    assert torch.allclose(fused(0.5, flat, cold, enhance=False),
                          fused(0.0, flat, cold, enhance=False), atol=1e-6)


@pytest.mark.parametrize('multiscale, heads_used', [(True, {0, 1, 2, 3}), (False, {0})])
def test_fusion_heads_of_every_scale_shape_the_weights(multiscale: bool,
                                                       heads_used: set[int]) -> None:
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(multiscale=multiscale))
    network.forward_all(*make_pair(64, 96), outputs=('fused',))['weights'].sum().backward()
    used = {index for index, head in enumerate(network.fusion.heads)
            if head[0].weight.grad is not None and float(head[0].weight.grad.abs().sum()) > 0}
    assert used == heads_used


@pytest.mark.parametrize('change', [
    {'multiscale': False}, {'adaptive_weights': False}, {'enhance': False},
    {'fusion_base': 'infrared'}, {'fusion_base': 'infrared', 'detail_window': 5},
    {'fusion_depth': 3}])
def test_ablation_variants_run(change: dict) -> None:
    network = IVFNet(ModelConfig(**change)).eval()
    fused, weights, enhanced = network(*make_pair(37, 45))
    assert fused.shape == (1, 3, 37, 45) and weights.shape == (1, 1, 37, 45)
    if change == {'adaptive_weights': False}:
        assert torch.allclose(weights, torch.full_like(weights, 0.5))


@pytest.mark.parametrize('change, field_name', [
    ({'local_contrast': -0.3}, 'local_contrast'), ({'contrast_radius': 1.5}, 'contrast_radius'),
    ({'channels': []}, 'channels'), ({'white_balance': 2.0}, 'white_balance'),
    ({'fusion_tone': float('nan')}, 'fusion_tone'), ({'downscale': 0}, 'downscale'),
    ({'exposure_softness': 0.0}, 'exposure_softness'), ({'channels': [8, True]}, 'channels'),
    ({'gate': 'mean'}, 'gate'), ({'fusion_base': 'visible'}, 'fusion_base'),
    ({'detail_window': 4}, 'detail_window'), ({'detail_window': 0}, 'detail_window'),
    ({'chroma_agreement': 'false'}, 'chroma_agreement'), ({'fusion_depth': 0}, 'fusion_depth'),
    ({'fusion_depth': 2.0}, 'fusion_depth'), ({'chroma_coring': -1.0}, 'chroma_coring'),
    ({'fusion_noise_threshold': -1.0}, 'fusion_noise_threshold'),
    ({'fusion_noise_threshold': True}, 'fusion_noise_threshold'),
    ({'fusion_noise_threshold': float('nan')}, 'fusion_noise_threshold'),
    ({'fusion_noise_threshold': float('inf')}, 'fusion_noise_threshold'),
    ({'fusion_noise_threshold': '1.0'}, 'fusion_noise_threshold'),
    ({'noise_threshold': float('inf')}, 'noise_threshold')])
def test_config_out_of_range_is_named(change: dict, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        ModelConfig(**change)


def test_deeper_fusion_heads_leave_the_other_parts_as_they_start() -> None:
    # Stages 1 and 2 never train the fusion block: its depth must not change how the encoders
    # and the decoder start, nor the first weights' head layout.
    states = []
    for depth in (1, 3):
        torch.manual_seed(7)
        states.append(IVFNet(ModelConfig(fusion_depth=depth)).state_dict())
    shallow, deep = states
    assert all(torch.equal(value, deep[name]) for name, value in shallow.items()
               if not name.startswith('fusion.'))
    assert torch.equal(shallow['fusion.heads.0.2.weight'], deep['fusion.heads.0.6.weight'])
    assert deep['fusion.heads.0.2.weight'].shape[-2:] == (3, 3)
    assert len(deep) == len(shallow) + 2 * 2 * 4   # two hidden convolutions per head, 4 heads


def test_config_range_ends_are_accepted() -> None:
    config = ModelConfig(local_contrast=0.0, contrast_radius=0, white_balance=1.0,
                         exposure_threshold=1.0, fusion_tone=0.0, downscale=1,
                         fusion_noise_threshold=0.0)
    assert config.contrast_radius == 0 and config.downscale == 1
    assert ModelConfig(fusion_noise_threshold=None).fusion_noise_threshold is None


def test_config_round_trip_ignores_unknown_keys() -> None:
    config = ModelConfig(channels=[8, 12, 16, 24], noise_threshold=0.3)
    values = config.to_dict() | {'from_a_newer_version': 1}
    assert ModelConfig.from_dict(values) == config


def test_upsample_maps_equals_one_interpolation_per_map() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = {'a': torch.rand(2, 1, 5, 7, generator=generator),
            'b': torch.rand(2, 3, 5, 7, generator=generator)}
    up = upsample_maps(maps, (20, 28))
    assert list(up) == ['a', 'b']
    for name, tensor in maps.items():
        expected = torch.nn.functional.interpolate(tensor, size=(20, 28), mode='bilinear',
                                                   align_corners=False)
        assert torch.equal(up[name], expected)
