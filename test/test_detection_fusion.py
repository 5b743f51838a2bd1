"""The detection-aware fusion: gates, true colour, stage-3 terms, the teacher, the report."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ivf_ros.evaluation.detection import (
    bootstrap_ap,
    class_scores,
    lost_objects,
    match_image,
    to_dataset_classes,
)
from ivf_ros.evaluation.metrics import chroma_ratio, evaluate, hue_shift
from ivf_ros.fusion.model import IVFNet, ModelConfig
from ivf_ros.fusion.rendering import luminance
from ivf_ros.pipeline.detector import Detection
from ivf_ros.training import losses
from ivf_ros.training.config import StageConfig
from ivf_ros.training.teacher import (
    box_mask,
    DetectionTeacher,
    LABEL_SCORE,
    label_scores,
    source_preference,
    TeacherTargets,
)
from ivf_ros.training.trainer import set_trainable, source_targets, stage_terms

TINY = [4, 6, 8, 8]


def _pair(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    visible = 0.3 * torch.rand(1, 3, height, width, generator=generator)
    visible[:, 0] += 0.1                                   # an orange (sodium-lit) cast
    infrared = torch.rand(1, 1, height, width, generator=generator) * 0.4
    infrared[..., height // 3: height // 2, width // 3: width // 2] = 0.9   # a warm target
    return visible.clamp(0, 1), infrared


@pytest.mark.parametrize('gate', ['learned', 'constant', 'max'])
@pytest.mark.parametrize('height, width', [(37, 53), (64, 96)])
def test_every_gate_runs_at_odd_sizes(gate: str, height: int, width: int) -> None:
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(channels=TINY, gate=gate)).eval()
    visible, infrared = _pair(height, width)
    with torch.no_grad():
        fused, weights, enhanced = network(visible, infrared)
    assert fused.shape == (1, 3, height, width) and weights.shape == (1, 1, height, width)
    assert enhanced.shape == (1, 3, height, width)
    assert 0.0 <= float(fused.min()) and float(fused.max()) <= 1.0
    if gate == 'constant':
        assert torch.all(weights == 0.5)
    if gate == 'max':
        assert set(torch.unique(weights).tolist()) <= {0.0, 1.0}


def test_forward_is_deterministic() -> None:
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(channels=TINY)).eval()
    visible, infrared = _pair(48, 40)
    with torch.no_grad():
        first = network(visible, infrared)[0]
        second = network(visible, infrared)[0]
    assert torch.equal(first, second)


def test_max_gate_takes_the_brighter_base() -> None:
    network = IVFNet(ModelConfig(channels=TINY, gate='max', enhance=False)).eval()
    visible = torch.full((1, 3, 32, 32), 0.2)
    infrared = torch.full((1, 1, 32, 32), 0.1)
    infrared[..., :16, :] = 0.8
    with torch.no_grad():
        fused = network(visible, infrared)[0]
    # Away from the edge (whose details the rule also takes from the infrared).
    assert torch.allclose(fused[..., :8, :], torch.full_like(fused[..., :8, :], 0.8), atol=1e-4)
    assert torch.allclose(fused[..., 24:, :], torch.full_like(fused[..., 24:, :], 0.2),
                          atol=1e-4)


@pytest.mark.parametrize('gate', ['learned', 'constant', 'max'])
def test_infrared_base_adds_only_the_visible_light_the_infrared_lacks(gate: str) -> None:
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(channels=TINY, gate=gate, enhance=False,
                                 fusion_base='infrared')).eval()
    visible = torch.full((1, 3, 32, 32), 0.3)
    infrared = torch.full((1, 1, 32, 32), 0.1)
    infrared[..., :16, :] = 0.8                  # a warm body, brighter than the visible
    with torch.no_grad():
        outputs = network.forward_all(visible, infrared, outputs=('fused',))
    fused = outputs['fused']
    # Away from the edge: the warm part is the infrared whatever the gate says ...
    assert torch.allclose(fused[..., :8, :], torch.full_like(fused[..., :8, :], 0.8), atol=1e-4)
    # ... and the cold part is I + (1 - w) (V - I): between the infrared and the max rule.
    cold = fused[..., 24:, :]
    expected = {'constant': 0.2, 'max': 0.3}.get(gate)
    if expected is None:
        assert 0.1 - 1e-4 <= float(cold.min()) and float(cold.max()) <= 0.3 + 1e-4
    else:
        assert torch.allclose(cold, torch.full_like(cold, expected), atol=1e-4)


def test_a_detail_window_keeps_isolated_visible_specks_off_the_infrared() -> None:
    # Isolated bright visible pixels (twigs, noise) on a flat scene; the infrared has a fine
    # texture everywhere. Per pixel each speck wins the detail choice; over a 5x5 window the
    # infrared's steady texture does.
    generator = torch.Generator().manual_seed(0)
    visible = torch.full((1, 3, 64, 64), 0.3)
    specks = torch.rand(1, 1, 64, 64, generator=generator) < 0.02
    visible = visible + 0.4 * specks
    infrared = 0.5 + 0.05 * torch.sign(torch.randn(1, 1, 64, 64, generator=generator))
    taken = {}
    for window in (1, 5):
        torch.manual_seed(0)
        network = IVFNet(ModelConfig(channels=TINY, enhance=False, detail_window=window)).eval()
        with torch.no_grad():
            weights = network.forward_all(visible, infrared, outputs=('fused',))['weights']
        taken[window] = float((weights[specks] < 0.5).float().mean())
    assert taken[1] > 0.9 and taken[5] < 0.1


def test_fused_colour_keeps_the_visible_hue_and_cast_correction_removes_it() -> None:
    torch.manual_seed(0)
    _, infrared = _pair(64, 64)
    # A smooth sodium-lit scene: orange, darker to the left (noise would have random hues).
    ramp = torch.linspace(0.3, 1.0, 64).view(1, 1, 1, 64)
    visible = torch.tensor([0.35, 0.22, 0.06]).view(1, 3, 1, 1) * ramp.expand(1, 3, 64, 64)
    as_uint8 = (visible[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    shifts = {}
    for correction in (0.0, 1.0):
        network = IVFNet(ModelConfig(channels=TINY, cast_correction=correction)).eval()
        with torch.no_grad():
            fused = network(visible, infrared)[0]
        fused_uint8 = (fused[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        shifts[correction] = hue_shift(as_uint8, fused_uint8)
    assert shifts[0.0] < 10.0          # the orange scene stays orange
    assert shifts[1.0] > 2 * shifts[0.0]  # grey-world turns it


def test_a_warm_target_unseen_by_the_visible_is_not_painted_with_its_colour() -> None:
    # A green-cast dark road (the visible) and a warm pedestrian only the infrared sees: with
    # the max gate the fused pixel takes the infrared's brightness there.
    visible = torch.tensor([0.02, 0.06, 0.02]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    infrared = torch.full((1, 1, 64, 64), 0.03)
    infrared[..., 16:48, 16:48] = 0.8
    chroma = {}
    for agreement in (False, True):
        network = IVFNet(ModelConfig(channels=TINY, gate='max', enhance=False,
                                     chroma_agreement=agreement)).eval()
        with torch.no_grad():
            fused = network(visible, infrared)[0]
        # Chroma magnitude (max channel minus min channel) at the target and on the road.
        spread = fused.amax(dim=1) - fused.amin(dim=1)
        chroma[agreement] = (float(spread[0, 28:36, 28:36].mean()),
                             float(spread[0, :8, :].mean()))
    target_without, road_without = chroma[False]
    target_with, road_with = chroma[True]
    # The visible's brightness is about 0.05: a 16x brighter target keeps about 1/16 of it.
    assert target_with < 0.15 * target_without
    # The road, where the fused and the visible brightness agree, keeps its colour.
    assert road_with > 0.5 * road_without > 0


def test_chroma_coring_greys_colour_noise_and_keeps_real_colour_and_its_hue() -> None:
    # A grey road with chroma speckle (the noise of a dark frame) and, on its left half, an
    # orange sodium-lit surface whose colour is smooth: chroma offsets (n, 3, h, w).
    generator = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(1, 3, 32, 32, generator=generator)
    noise = noise - noise.mean(dim=1, keepdim=True)          # no grey offset in the noise
    orange = torch.tensor([0.06, -0.01, -0.08]).view(1, 3, 1, 1)
    chroma = noise.clone()
    chroma[..., :16] += orange
    network = IVFNet(ModelConfig(channels=TINY, chroma_coring=1.0))
    cored = network.chroma_core(chroma)
    magnitude = chroma.norm(dim=1)
    kept = cored.norm(dim=1) / magnitude
    assert float(kept[0, :, 20:].mean()) < 0.3        # the speckle is mostly gone
    assert float(kept[0, :, :12].mean()) > 0.8        # the orange keeps most of its colour
    # Coring shortens each vector, never turns it: the same CbCr angle where anything is kept.
    cosine = (cored * chroma).sum(dim=1) / (cored.norm(dim=1) * magnitude + 1e-12)
    assert float(cosine[cored.norm(dim=1) > 1e-6].min()) > 0.9999


@pytest.mark.parametrize('setting, default', [('chroma_coring', 0.0),
                                              ('fusion_noise_threshold', None)])
def test_a_rendering_setting_is_off_for_weights_saved_before_it(setting: str,
                                                                default: float | None) -> None:
    visible, infrared = _pair(40, 56)
    torch.manual_seed(0)
    plain = IVFNet(ModelConfig(channels=TINY, chroma_agreement=True)).eval()
    # A config saved before the field existed loads with its default and renders bit for bit
    # as before.
    saved = {key: item for key, item in plain.config.to_dict().items() if key != setting}
    reloaded = IVFNet(ModelConfig.from_dict(saved)).eval()
    reloaded.load_state_dict(plain.state_dict())
    # Pinned: another default would render every older weights file differently.
    assert getattr(reloaded.config, setting) == default
    with torch.no_grad():
        assert torch.equal(reloaded(visible, infrared)[0], plain(visible, infrared)[0])


def test_chroma_coring_moves_only_the_chroma() -> None:
    visible, infrared = _pair(40, 56)
    torch.manual_seed(0)
    plain = IVFNet(ModelConfig(channels=TINY, chroma_agreement=True)).eval()
    cored = IVFNet(ModelConfig(channels=TINY, chroma_agreement=True, chroma_coring=1.0)).eval()
    cored.load_state_dict(plain.state_dict())
    with torch.no_grad():
        fused_plain, fused_cored = plain(visible, infrared)[0], cored(visible, infrared)[0]
    spread = {name: float((image.amax(dim=1) - image.amin(dim=1)).mean())
              for name, image in (('plain', fused_plain), ('cored', fused_cored))}
    assert spread['cored'] < spread['plain']       # random-noise colour: coring greys it
    # Luma is untouched where no channel clips: coring only moves the chroma.
    luma = {name: luminance(image)[:, 0] for name, image in
            (('plain', fused_plain), ('cored', fused_cored))}
    inside = ((fused_plain > 0) & (fused_plain < 1) & (fused_cored > 0)
              & (fused_cored < 1)).all(dim=1)
    assert inside.float().mean() > 0.5
    assert torch.allclose(luma['plain'][inside], luma['cored'][inside], atol=1e-5)


def test_the_fused_image_shrinks_visible_grain_at_its_own_threshold() -> None:
    # A dark, grainy visible frame: per-pixel grain that the working grid does not hold.
    generator = torch.Generator().manual_seed(0)
    visible = (0.1 + 0.03 * torch.randn(1, 1, 64, 64, generator=generator)).clamp(0, 1)
    visible = visible.expand(1, 3, 64, 64)
    infrared = torch.full((1, 1, 64, 64), 0.05)
    torch.manual_seed(0)
    shared = IVFNet(ModelConfig(channels=TINY, noise_threshold=0.0)).eval()
    own = IVFNet(ModelConfig(channels=TINY, noise_threshold=0.0,
                             fusion_noise_threshold=1.0)).eval()
    own.load_state_dict(shared.state_dict())
    with torch.no_grad():
        outputs = {'shared': shared.forward_all(visible, infrared),
                   'own': own.forward_all(visible, infrared)}

    def grain(image: torch.Tensor) -> float:
        luma = luminance(image)
        return float((luma - torch.nn.functional.avg_pool2d(luma, 3, 1, 1)).std())

    # The enhanced output (what stage 1 trains on) is untouched; the fused image loses grain.
    assert torch.equal(outputs['own']['enhanced'], outputs['shared']['enhanced'])
    assert grain(outputs['own']['fused']) < 0.7 * grain(outputs['shared']['fused'])
    # Null is the enhanced output's threshold.
    same = IVFNet(ModelConfig(channels=TINY, noise_threshold=0.5)).eval()
    explicit = IVFNet(ModelConfig(channels=TINY, noise_threshold=0.5,
                                  fusion_noise_threshold=0.5)).eval()
    explicit.load_state_dict(same.state_dict())
    with torch.no_grad():
        assert torch.equal(same(visible, infrared)[0], explicit(visible, infrared)[0])
    # A rendering step: stage 3 trains the fused image without it, at noise_threshold.
    with torch.no_grad():
        trained = own.forward_all(visible, infrared, with_rendering_steps=False)['fused']
    assert torch.equal(trained, outputs['shared']['fused'])


def test_hue_shift_measure() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (20, 30, 3), dtype=np.uint8)
    assert hue_shift(image, image) == 0.0
    brighter = np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8)   # same chroma
    assert hue_shift(image, brighter) < 1.0
    swapped = image[..., ::-1].copy()                                     # R <-> B
    assert hue_shift(image, swapped) > 45.0
    grey = np.repeat(image[..., :1], 3, axis=2)
    assert hue_shift(grey, image) == 0.0                    # a grey source has no hue to keep
    infrared = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    values = evaluate(image, infrared, brighter, ['hue_shift', 'chroma_ratio', 'clipped_rgb'])
    assert set(values) == {'hue_shift', 'chroma_ratio', 'clipped_rgb'}


def _scene(rgb: tuple[int, int, int]) -> np.ndarray:
    """Return a 16 x 16 image of one colour with a little 8-bit noise."""
    noise = np.random.default_rng(1).integers(-3, 4, (16, 16, 3))
    return np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)


def test_lost_colour_is_not_a_hue_shift() -> None:
    # A grey fused image has no hue to compare: the measure must not read arctan2(0, 0) = 0 as
    # an angle (that gave an orange scene 129 degrees and a blue one 55); chroma_ratio says it.
    for colour in ((200, 120, 40), (40, 80, 200)):
        visible = _scene(colour)
        grey = np.repeat(np.rint(visible @ np.array([0.299, 0.587, 0.114]))[..., None], 3, 2)
        grey = grey.astype(np.uint8)
        assert hue_shift(visible, grey) == 0.0
        assert chroma_ratio(visible, grey) < 0.05
        assert chroma_ratio(visible, visible) == 1.0
        # Colour faded on part of a frame (the coring's speckle) is lost colour, not a turned
        # hue: half the frame kept, half faded by 50 %, 98 % and 100 % (old measure: up to 65).
        for kept in (0.5, 0.02, 0.0):
            faded = np.rint(grey + kept * (visible.astype(float) - grey)).astype(np.uint8)
            half = visible.copy()
            half[8:] = faded[8:]
            assert hue_shift(visible, half) < 1.0
            assert chroma_ratio(visible, faded) == pytest.approx(kept, abs=0.05)


# -- stage-3 terms: each one decreases when a tiny fusion block overfits one batch -------------
def _overfit(term: str, steps: int = 25) -> tuple[float, float]:
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(channels=TINY))
    trainable = set_trainable(network, 3)  # the fusion block only, as stage 3
    optimizer = torch.optim.Adam(trainable, lr=0.02)
    visible, infrared = _pair(64, 64, seed=1)
    values = []
    for _ in range(steps):
        outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
        value = losses.stage3_terms(outputs, infrared, {term: 1.0})[term]
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(float(value.detach()))
    return values[0], min(values[-5:])


@pytest.mark.parametrize('term', ['salience', 'texture', 'noise', 'ssim'])
def test_stage3_term_decreases_on_a_tiny_overfit(term: str) -> None:
    first, last = _overfit(term)
    assert last < first


class _ToyDetector(torch.nn.Module):
    """A detector-shaped module: (n, 3, h, w) -> ((n, 4 + 3, anchors), features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, 8, stride=8)
        self.norm = torch.nn.BatchNorm2d(7)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list]:
        out = self.norm(self.conv(rgb)).flatten(2)
        return torch.cat([out[:, :4], torch.sigmoid(out[:, 4:])], dim=1), []


def test_detection_term_decreases_and_the_teacher_stays_frozen() -> None:
    torch.manual_seed(0)
    detector = _ToyDetector()
    teacher = DetectionTeacher(detector, [0, 2])
    before = {name: value.clone() for name, value in detector.state_dict().items()}
    network = IVFNet(ModelConfig(channels=TINY))
    frozen_before = {name: value.clone() for name, value in network.state_dict().items()
                     if not name.startswith('fusion.')}
    trainable = set_trainable(network, 3)  # the fusion block only, as stage 3
    optimizer = torch.optim.Adam(trainable, lr=0.02)
    visible, infrared = _pair(61, 45, seed=2)    # odd: the teacher pads to its stride
    scores = teacher.sources(visible, infrared).scores
    assert scores.shape[:2] == (1, 2)
    values = []
    teacher.train()                               # asked to train: the detector stays in eval
    assert not detector.training
    for _ in range(30):
        outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
        terms = losses.stage3_terms(outputs, infrared, {'detection': 1.0}, teacher, scores)
        optimizer.zero_grad()
        terms['detection'].backward()
        optimizer.step()
        values.append(float(terms['detection'].detach()))
    assert min(values[-5:]) < values[0]
    for name, value in detector.state_dict().items():
        assert torch.equal(value, before[name]), name
    for name, value in network.state_dict().items():
        if name in frozen_before:
            assert torch.equal(value, frozen_before[name]), name
    assert all(not p.requires_grad for p in detector.parameters())


def test_detection_term_needs_the_detector() -> None:
    network = IVFNet(ModelConfig(channels=TINY))
    visible, infrared = _pair(32, 32)
    outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
    with pytest.raises(ValueError, match='frozen detector'):
        losses.stage3_terms(outputs, infrared, {'detection': 1.0})
    assert losses.stage3_terms(outputs, infrared, {'detection': 0.0, 'ssim': 1.0}).keys() == {
        'ssim'}


def test_salience_is_zero_when_the_fused_image_is_the_infrared() -> None:
    _, infrared = _pair(48, 48)
    assert float(losses.salience_loss(infrared.expand(-1, 3, -1, -1), infrared)) < 1e-6
    flat = torch.full((1, 3, 48, 48), 0.5)
    assert float(losses.salience_loss(flat, infrared)) > 0.1


def test_salience_on_detected_targets_only() -> None:
    _, infrared = _pair(48, 48)
    flat = torch.full((1, 3, 48, 48), 0.5)
    everywhere = losses.salience_loss(flat, infrared)
    assert torch.allclose(losses.salience_loss(flat, infrared, targets=torch.ones(1, 1, 48, 48)),
                          everywhere)
    assert float(losses.salience_loss(flat, infrared, targets=torch.zeros(1, 1, 48, 48))) == 0.0


def test_box_mask_covers_the_confident_infrared_boxes_only() -> None:
    # Two anchors: a confident 10x6 box centred at (20, 12), a weak one elsewhere.
    prediction = torch.tensor([[[20.0, 40.0], [12.0, 30.0], [10.0, 8.0], [6.0, 8.0],
                                [0.9, 0.1], [0.0, 0.2]]])          # (1, 4 + 2, 2)
    mask = box_mask(prediction, (48, 64), confidence=0.25)
    assert mask.shape == (1, 1, 48, 64)
    assert float(mask.sum()) == 10 * 6
    assert float(mask[0, 0, 9:15, 15:25].min()) == 1.0


def test_source_preference_marks_each_object_with_the_source_that_finds_it() -> None:
    # Three anchors on a 64x48 image: a person the infrared finds (0.9 vs 0.2) in a 16x8 box,
    # a car the visible finds (0.7 vs 0.3) elsewhere, one that neither finds.
    def prediction(person: float, car: float) -> torch.Tensor:
        boxes = [[16.0, 48.0, 40.0], [12.0, 36.0, 8.0], [16.0, 8.0, 8.0], [8.0, 8.0, 4.0]]
        scores = [[person, 0.0, 0.1], [0.0, car, 0.1]]
        return torch.tensor([boxes + scores])                     # (1, 4 + 2, 3)

    visible, infrared = prediction(0.2, 0.7), prediction(0.9, 0.3)
    preferred, weight = source_preference(visible, infrared, (12, 16), 4)
    assert preferred.shape == weight.shape == (1, 1, 12, 16)     # the quarter grid
    person, car = (slice(2, 4), slice(2, 6)), (slice(8, 10), slice(11, 13))
    assert float(preferred[0, 0][person].min()) == 1.0
    assert float(weight[0, 0][person].min()) == pytest.approx(0.7)
    assert float(preferred[0, 0][car].max()) == 0.0
    assert float(weight[0, 0][car].min()) == pytest.approx(0.4)
    assert float(weight.sum()) == pytest.approx(0.7 * 2 * 4 + 0.4 * 2 * 2)   # nothing else
    # Nothing confident: no preference anywhere.
    quiet = prediction(0.1, 0.1)
    assert float(source_preference(quiet, quiet, (12, 16), 4)[1].abs().sum()) == 0.0


@pytest.mark.parametrize('infrared_first', [True, False])
def test_overlapping_objects_take_the_more_confident_ones_source(infrared_first: bool) -> None:
    # Two boxes over the same cells: the visible's 0.6 car, the infrared's 0.95 person, in
    # either anchor order (the order must not decide).
    box = [[8.0, 8.0], [8.0, 8.0], [8.0, 8.0], [8.0, 8.0]]
    visible_scores, infrared_scores = [[0.1, 0.0], [0.6, 0.0]], [[0.0, 0.95], [0.0, 0.0]]
    if infrared_first:
        visible_scores = [row[::-1] for row in visible_scores]
        infrared_scores = [row[::-1] for row in infrared_scores]
    visible = torch.tensor([box + visible_scores])
    infrared = torch.tensor([box + infrared_scores])
    preferred, weight = source_preference(visible, infrared, (16, 16), 1)
    assert float(preferred[0, 0, 4:12, 4:12].min()) == 1.0
    assert float(weight[0, 0, 4:12, 4:12].min()) == pytest.approx(0.95)
    assert float(weight.sum()) == pytest.approx(0.95 * 8 * 8)


class _InfraredFinderDetector(torch.nn.Module):
    """Finds a 16x16 box centred at (24, 20) with score 0.9 on grey (infrared) input only."""

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list]:
        grey = (rgb[:, 0] - rgb[:, 1]).abs().amax(dim=(1, 2)) < 1e-6           # (n,)
        prediction = torch.zeros(rgb.shape[0], 4 + 3, 1)
        prediction[:, :4, 0] = torch.tensor([24.0, 20.0, 16.0, 16.0])
        prediction[:, 4, 0] = torch.where(grey, 0.9, 0.1)
        return prediction + 0.0 * rgb.mean(), []


def test_stage_terms_put_the_source_targets_on_the_gate_grid() -> None:
    # Through output_terms: the infrared-found box (x 16-32, y 12-28 pixels) lands on working-
    # grid cells 4-7 x 3-6 of the padded 64x64 input (stride 4), and only there.
    torch.manual_seed(0)
    teacher = DetectionTeacher(_InfraredFinderDetector(), [0, 2])
    visible, infrared = _pair(61, 45, seed=4)
    found = teacher.sources(visible, infrared, preference_grid=((16, 16), 4))
    weight = found.preference_weight[0, 0]
    assert torch.equal(weight > 0, torch.zeros(16, 16, dtype=torch.bool).index_put_(
        (torch.arange(3, 7).repeat_interleave(4), torch.arange(4, 8).repeat(4)),
        torch.tensor(True)))
    assert float(weight.max()) == pytest.approx(0.8)
    network = IVFNet(ModelConfig(channels=TINY))
    stage = StageConfig(steps=1, batch=1, lr=0.1, losses={'source': 1.0})
    terms = stage_terms(network, 3, visible, infrared, stage, teacher=teacher)
    outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
    expected = losses.source_loss(outputs['weight_logits_low'], found.preferred,
                                  found.preference_weight)
    assert float(terms['source'].detach()) > 0.0
    assert torch.allclose(terms['source'], expected)


def test_source_term_teaches_the_gate_the_preferred_source() -> None:
    torch.manual_seed(0)
    teacher = DetectionTeacher(_OneBoxDetector(), [0, 2])        # the same box on both sources
    visible, infrared = _pair(61, 45, seed=4)      # odd: the working grid is padded to 16x16
    found = teacher.sources(visible, infrared, preference_grid=((16, 16), 4))
    # Both sources score it 0.9: an object both show equally well asks for nothing.
    assert float(found.preference_weight.sum()) == 0.0
    network = IVFNet(ModelConfig(channels=TINY))
    optimiser = torch.optim.Adam(set_trainable(network, 3), lr=0.02)
    preferred = torch.zeros(1, 1, 16, 16)
    preferred[..., 4:10, 3:9] = 1.0                              # the infrared finds it here
    weight = torch.zeros(1, 1, 16, 16)
    weight[..., 2:12, 2:10] = 0.8
    values = []
    for _ in range(40):
        outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
        value = losses.stage3_terms(outputs, infrared, {'source': 1.0},
                                    source_targets=(preferred, weight))['source']
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        values.append(float(value.detach()))
    assert values[-1] < 0.8 * values[0], values[::8]
    gate = torch.sigmoid(outputs['weight_logits_low'].detach())
    assert float(gate[..., 4:10, 3:9].mean()) > float(gate[..., 2:4, 2:10].mean())
    stage = StageConfig(steps=1, batch=1, lr=0.1, losses={'source': 1.0})
    with pytest.raises(ValueError, match='frozen detector'):
        stage_terms(network, 3, visible, infrared, stage, teacher=None)
    with pytest.raises(ValueError, match='source term needs the frozen detector'):
        losses.stage3_terms(outputs, infrared, {'source': 1.0})
    terms = stage_terms(network, 3, visible, infrared, stage, teacher=teacher)
    assert float(terms['source'].detach()) == 0.0            # the equal-scores box above


def test_source_on_infrared_keeps_only_the_objects_the_infrared_finds_better() -> None:
    preferred = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    weight = torch.tensor([[[[0.7, 0.4, 0.0]]]])
    found = TeacherTargets(torch.zeros(1, 2, 1), None, preferred, weight)
    both = StageConfig(steps=1, batch=1, lr=0.1, losses={'source': 1.0})
    infrared_only = StageConfig(steps=1, batch=1, lr=0.1, losses={'source': 1.0},
                                source_on='infrared')
    assert source_targets(found, both)[1].flatten().tolist() == pytest.approx([0.7, 0.4, 0.0])
    kept, kept_weight = source_targets(found, infrared_only)
    assert torch.equal(kept, preferred)
    assert kept_weight.flatten().tolist() == pytest.approx([0.7, 0.0, 0.0])
    assert source_targets(found._replace(preferred=None, preference_weight=None), both) is None


class _OneBoxDetector(torch.nn.Module):
    """Finds one confident object, a 20x24 box centred at (22, 30), on every image."""

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list]:
        prediction = torch.zeros(rgb.shape[0], 4 + 3, 2)
        prediction[:, :5, 0] = torch.tensor([22.0, 30.0, 20.0, 24.0, 0.9])
        return prediction + 0.0 * rgb.mean(), []


def test_detected_salience_gets_its_targets_from_the_teacher() -> None:
    torch.manual_seed(0)
    teacher = DetectionTeacher(_OneBoxDetector(), [0, 2])
    visible, infrared = _pair(61, 45, seed=2)
    scores, targets, _, _ = teacher.sources(visible, infrared, confidence=0.25)
    unmasked, no_mask, _, _ = teacher.sources(visible, infrared)
    assert torch.equal(scores, unmasked)
    assert no_mask is None                                    # no confidence: no mask made
    assert targets.shape == (1, 1, 61, 45)
    assert float(targets.sum()) == 20 * 24 and float(targets[0, 0, 18:42, 12:32].min()) == 1
    network = IVFNet(ModelConfig(channels=TINY))
    stage = StageConfig(steps=1, batch=1, lr=0.1, losses={'salience': 1.0},
                        salience_on='detected')
    terms = stage_terms(network, 3, visible, infrared, stage, teacher=teacher)
    outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
    expected = losses.salience_loss(outputs['fused'], infrared, targets=targets)
    assert torch.allclose(terms['salience'], expected)
    assert not torch.allclose(expected, losses.salience_loss(outputs['fused'], infrared))
    with pytest.raises(ValueError, match='frozen detector'):
        stage_terms(network, 3, visible, infrared, stage, teacher=None)


def test_labels_raise_the_scores_of_the_anchors_that_find_them() -> None:
    # Three anchors: 0 predicts the labelled person's box on the infrared, 1 on neither source
    # (far away), 2 on the visible but the label there is a car.
    scores = torch.tensor([[[0.1, 0.1, 0.9], [0.0, 0.0, 0.0]]])       # (1, 2 classes, 3)
    far = [100.0, 100.0, 10.0, 10.0]
    person = [20.0, 30.0, 10.0, 20.0]                              # xywh
    visible_boxes = torch.tensor([[far, far, person]]).transpose(1, 2)    # (1, 4, 3)
    infrared_boxes = torch.tensor([[person, far, far]]).transpose(1, 2)
    labels = [torch.tensor([[0.0, 15, 20, 25, 40], [1.0, 15, 20, 25, 40],
                            [7.0, 15, 20, 25, 40]])]              # class 7: not the teacher's
    raised = label_scores(scores, visible_boxes, infrared_boxes, labels)
    assert raised[0, 0].tolist() == pytest.approx([LABEL_SCORE, 0.1, 0.9])   # never lowered
    assert raised[0, 1].tolist() == pytest.approx([LABEL_SCORE, 0.0, LABEL_SCORE])
    assert torch.equal(label_scores(scores, visible_boxes, infrared_boxes, [None]), scores)


def test_labelled_boxes_join_the_salience_targets() -> None:
    teacher = DetectionTeacher(_OneBoxDetector(), [0, 2])
    visible, infrared = _pair(61, 45, seed=2)
    found = teacher.sources(visible, infrared, confidence=0.25).warm
    with_labels = teacher.sources(visible, infrared, confidence=0.25,
                                  labels=[torch.tensor([[0.0, 0, 50, 10, 60]])]).warm
    assert float(with_labels.sum()) == float(found.sum()) + 10 * 10
    unlabelled = teacher.sources(visible, infrared, confidence=0.25, labels=[None]).warm
    assert torch.equal(unlabelled, found)
    # stage_terms passes the crops' labels on only when the stage asks for them.
    network = IVFNet(ModelConfig(channels=TINY))
    outputs = network.forward_all(visible, infrared, outputs=('fused', 'fused_base'))
    labels = [torch.tensor([[0.0, 0, 50, 10, 60]])]
    for use_labels, mask in ((True, with_labels), (False, found)):
        stage = StageConfig(steps=1, batch=1, lr=0.1, losses={'salience': 1.0},
                            salience_on='detected', use_labels=use_labels)
        terms = stage_terms(network, 3, visible, infrared, stage, teacher=teacher, labels=labels)
        expected = losses.salience_loss(outputs['fused'], infrared, targets=mask)
        assert torch.allclose(terms['salience'], expected)
    # The detection term: a label on the box the detector predicts (class 1, scored 0 by both
    # sources) makes that anchor a target, so the term grows.
    on_the_box = [torch.tensor([[1.0, 12, 18, 32, 42]])]
    detection = {}
    for use_labels in (True, False):
        stage = StageConfig(steps=1, batch=1, lr=0.1, losses={'detection': 1.0},
                            use_labels=use_labels)
        detection[use_labels] = float(stage_terms(network, 3, visible, infrared, stage,
                                                  teacher=teacher, labels=on_the_box)['detection'])
    assert detection[True] > detection[False]


# -- detection report ------------------------------------------------------------------------
def _det(class_id: int, name: str, score: float, box: tuple[float, float, float, float]
         ) -> Detection:
    x1, y1, x2, y2 = box
    return Detection(class_id, name, score, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)


def test_coco_ids_are_renumbered_by_name() -> None:
    found = to_dataset_classes([_det(2, 'car', 0.9, (0, 0, 10, 10)),
                                _det(0, 'person', 0.8, (0, 0, 5, 5)),
                                _det(9, 'traffic light', 0.7, (0, 0, 3, 3))])
    assert [(d.class_id, d.class_name) for d in found] == [(1, 'car'), (0, 'person')]


def test_class_scores_bootstrap_and_lost_objects() -> None:
    targets = np.array([[0, 10, 10, 30, 50], [1, 50, 50, 90, 80]], dtype=np.float64)
    perfect = [_det(0, 'person', 0.9, (10, 10, 30, 50)), _det(1, 'car', 0.8, (50, 50, 90, 80))]
    only_car = perfect[1:]
    good = [match_image(perfect, targets) for _ in range(5)]
    half = [match_image(perfect if i % 2 else only_car, targets) for i in range(5)]
    score = class_scores(good, 0)
    assert score.ap50 > 0.99 and score.recall == 1.0 and score.targets == 5
    assert class_scores(half, 0).recall == pytest.approx(0.4)
    result = bootstrap_ap({'visible': good, 'fused': half, 'same': good}, ['fused', 'same'],
                          resamples=50)
    delta, low, high = result.differences['same', 'visible', 'person']
    assert delta == 0.0 and low == 0.0 and high == 0.0
    delta, low, high = result.differences['fused', 'visible', 'person']
    assert delta < 0 and low <= delta <= high
    assert math.isfinite(result.intervals['visible', 'car'][0])
    lost = lost_objects(targets, only_car, {'infrared': perfect, 'visible': []})
    assert lost == [(0, ['infrared'])]


def test_per_group_scores_show_what_the_whole_split_averages_away() -> None:
    from ivf_ros.cli.eval_detection import markdown_by_group
    from ivf_ros.evaluation.detection import bootstrap_by_group

    targets = np.array([[0, 10, 10, 30, 50]], dtype=np.float64)
    person = [_det(0, 'person', 0.9, (10, 10, 30, 50))]
    # The fused image finds the person on camera a's frames and misses it on camera b's.
    matches = {'infrared': [match_image(person, targets) for _ in range(6)],
               'fused': [match_image(person if i < 3 else [], targets) for i in range(6)]}
    groups = ['a', 'a', 'a', 'b', 'b', 'b']
    results = bootstrap_by_group(matches, groups, ['fused'], resamples=20)
    assert list(results) == ['a', 'b'] and results['a'].images == 3
    assert results['a'].differences['fused', 'infrared', 'person'][0] == 0.0
    assert results['b'].scores['fused']['person'].recall == 0.0
    assert results['b'].differences['fused', 'infrared', 'person'][0] < -0.9
    table = markdown_by_group(results)
    assert '| b (3) | fused | 0.000 |' in table and '| a (3) | infrared |' in table
    with pytest.raises(ValueError, match='one group name per matched image'):
        bootstrap_by_group(matches, groups[:5], ['fused'])


def test_pseudo_labels_merge_both_sources_confident_boxes_per_class() -> None:
    from ivf_ros.evaluation.detection import pseudo_labels

    on_infrared = [_det(0, 'person', 0.9, (10, 10, 30, 50)), _det(1, 'car', 0.3, (0, 0, 9, 9))]
    on_visible = [_det(0, 'person', 0.6, (11, 10, 31, 50)),   # the same person: merged
                  _det(1, 'car', 0.7, (12, 10, 30, 50)),      # a car there is another object
                  _det(0, 'person', 0.5, (60, 60, 70, 90))]
    targets = pseudo_labels(on_infrared + on_visible)
    assert targets.tolist() == [[0, 10, 10, 30, 50], [1, 12, 10, 30, 50], [0, 60, 60, 70, 90]]
    assert pseudo_labels([]).shape == (0, 5)


def test_target_contrast_is_the_box_against_its_ring() -> None:
    from ivf_ros.evaluation.detection import target_contrast

    luma = np.full((40, 60), 0.2, np.float32)
    luma[10:20, 20:30] = 0.7                       # a warm 10 x 10 body
    boxes = np.array([[20, 10, 30, 20],            # the body: ring all 0.2
                      [0, 0, 10, 10],              # background at the corner: ring clipped
                      [-5, -5, 65, 45],            # covers the image: no ring
                      [70, 50, 80, 60]],           # outside the image: no pixel
                     np.float64)
    contrast = target_contrast(luma, boxes)
    assert contrast[0] == pytest.approx(0.5) and contrast[1] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(contrast[2:]).all()
    assert target_contrast(luma, np.zeros((0, 4))).shape == (0,)


def test_contrast_summary_counts_warm_targets_that_fade() -> None:
    from ivf_ros.evaluation.detection import contrast_summary

    infrared = np.array([0.4, 0.2, 0.01, np.nan])   # two warm targets, one cold, one unmeasured
    summary = contrast_summary({'infrared': infrared,
                                'fused': np.array([0.4, 0.05, 0.3, 0.1]),
                                'visible': np.array([-0.1, 0.09, 0.0, 0.0])})
    assert summary['infrared'].targets == 2 and summary['infrared'].ratio == pytest.approx(1)
    assert summary['fused'].mean == pytest.approx(0.225)
    assert summary['fused'].ratio == pytest.approx(0.75)
    assert summary['fused'].below_half == pytest.approx(0.5)   # 0.05 < half of 0.2
    assert summary['visible'].below_half == 1.0
    cold = contrast_summary({'infrared': np.array([0.0]), 'fused': np.array([0.5])})
    assert cold['fused'].targets == 0 and math.isnan(cold['fused'].ratio)
    with pytest.raises(ValueError, match='1 contrasts for 4 targets'):
        contrast_summary({'infrared': infrared, 'fused': np.array([0.1])})


@pytest.mark.dataset
def test_ivf_eval_detect_scores_unlabelled_night_pairs_on_pseudo_labels(
        datasets: Path, yolo_config_dir: Path, tmp_path: Path) -> None:
    from node_helpers.tiny_yolo import cached_tiny_yolo

    from ivf_ros.cli.eval import main

    weights = cached_tiny_yolo(tmp_path)
    arguments = [str(datasets / 'vifb_night'), '--split', 'training', '-m', 'max', '--limit',
                 '1', '--bootstrap', '5', '--detector', str(weights), '--device', 'cpu',
                 '--imgsz', '160', '--no-progress', '--no-figures', '-o', str(tmp_path / 'out')]
    assert main(['detect', *arguments]) == 2          # no label files there
    assert main(['detect', *arguments, '--pseudo-labels']) == 0
    text = (tmp_path / 'out' / 'detection.md').read_text()
    assert '0 labelled pairs and 1 unlabelled night pairs on pseudo-labels' in text
    validation = [a if a != 'training' else 'validation' for a in arguments]
    assert main(['detect', *validation, '--pseudo-labels']) == 2   # validation: labels only


@pytest.mark.dataset
def test_ivf_eval_detect_writes_the_report(datasets: Path, yolo_config_dir: Path,
                                           tmp_path: Path) -> None:
    from node_helpers.tiny_yolo import cached_tiny_yolo

    from ivf_ros.cli.eval import main

    weights = cached_tiny_yolo(tmp_path)
    # msrs_extra's 3 pairs and the first of m3fd_night: two folders, so a per-dataset table.
    assert main(['detect', str(datasets / 'msrs_extra'), str(datasets / 'm3fd_night'), '-m',
                 'max', '--fused', 'max', '--limit', '4', '--bootstrap', '20', '--detector',
                 str(weights), '--device', 'cpu', '--imgsz', '160', '--no-progress', '-o',
                 str(tmp_path / 'out')]) == 0
    text = (tmp_path / 'out' / 'detection.md').read_text()
    assert '| max - visible |' in text and '| infrared |' in text
    per_dataset = text.split('## Per dataset')[1]
    assert '| m3fd_night (1) | max |' in per_dataset and '| msrs_extra (3) | visible |' in text
    with (tmp_path / 'out' / 'detection.csv').open() as handle:
        groups = {row['group'] for row in csv.DictReader(handle)}
    assert groups == {'all', 'm3fd_night', 'msrs_extra'}
    with (tmp_path / 'out' / 'detection_paired.csv').open() as handle:
        paired = list(csv.DictReader(handle))
    assert {(row['group'], row['fused'], row['source']) for row in paired} >= {
        ('all', 'max', 'visible'), ('all', 'max', 'infrared')}
    # The labelled people are warm in the infrared: the contrast table has them, per input.
    contrast_table = text.split('## Warm-target contrast')[1].split('##')[0]
    assert '| infrared | ' in contrast_table and '| max | ' in contrast_table
    with (tmp_path / 'out' / 'contrast.csv').open() as handle:
        contrast = {(row['input'], row['class']): row for row in csv.DictReader(handle)}
    assert int(contrast['infrared', 'person']['warm_targets']) > 0
    assert float(contrast['infrared', 'person']['ratio_to_infrared']) == pytest.approx(1.0)
    assert main(['detect', str(datasets / 'msrs_extra'), '-m', 'max', '--fused', 'nope',
                 '--detector', str(weights), '--no-progress']) == 2
