"""Tests of ivf_ros.io.synthetic: deterministic synthetic night scenes with ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from ivf_ros.io.image_codec import thermal_to_uint8
from ivf_ros.io.synthetic import GroundTruthBox, LABELS, make_night_pair, NightPair

SIZE = {'width': 320, 'height': 256}


def box_mask(shape: tuple[int, int], boxes: list[GroundTruthBox]) -> np.ndarray:
    """Return a boolean mask that is True inside any box."""
    mask = np.zeros(shape, bool)
    for box in boxes:
        mask[int(box.y1):int(np.ceil(box.y2)), int(box.x1):int(np.ceil(box.x2))] = True
    return mask


@pytest.mark.parametrize('thermal_bits', [8, 16])
def test_same_arguments_give_identical_pairs(thermal_bits: int) -> None:
    first = make_night_pair(seed=3, frame=7, thermal_bits=thermal_bits, **SIZE)
    second = make_night_pair(seed=3, frame=7, thermal_bits=thermal_bits, **SIZE)
    np.testing.assert_array_equal(first.visible, second.visible)
    np.testing.assert_array_equal(first.infrared, second.infrared)
    assert first.boxes == second.boxes


def test_seeds_differ_and_frames_move_objects_a_little() -> None:
    base = make_night_pair(seed=1, frame=0, **SIZE)
    other_seed = make_night_pair(seed=2, frame=0, **SIZE)
    assert not np.array_equal(base.infrared, other_seed.infrared)
    previous = base
    for frame in range(1, 6):
        current = make_night_pair(seed=1, frame=frame, **SIZE)
        assert [b.label for b in current.boxes] == [b.label for b in previous.boxes]
        moved = 0.0
        for before, after in zip(previous.boxes, current.boxes, strict=True):
            shift = max(abs(after.x1 - before.x1), abs(after.y2 - before.y2))
            assert shift < 0.03 * SIZE['width']  # a smooth drive, no teleporting
            moved += shift
        assert moved > 0
        previous = current


@pytest.mark.parametrize('width, height', [(640, 512), (320, 256), (97, 61), (16, 16)])
def test_shapes_and_types(width: int, height: int) -> None:
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        pair = make_night_pair(seed=0, width=width, height=height, thermal_bits=bits)
        assert isinstance(pair, NightPair)
        assert pair.visible.shape == (height, width, 3) and pair.visible.dtype == np.uint8
        assert pair.infrared.shape == (height, width) and pair.infrared.dtype == dtype
        for box in pair.boxes:
            assert box.label in LABELS
            assert 0 <= box.x1 < box.x2 <= width and 0 <= box.y1 < box.y2 <= height


def test_scenes_contain_people_and_cars() -> None:
    labels = {box.label for seed in range(8) for box in make_night_pair(seed, **SIZE).boxes}
    assert labels == set(LABELS)


@pytest.mark.parametrize('seed', range(6))
def test_infrared_targets_are_brighter_than_the_background(seed: int) -> None:
    pair = make_night_pair(seed=seed, frame=seed * 5, **SIZE)
    assert pair.boxes
    background = pair.infrared[~box_mask(pair.infrared.shape, pair.boxes)]
    hot_threshold = np.percentile(background, 95)
    for box in pair.boxes:
        if (box.x2 - box.x1) * (box.y2 - box.y1) < 60:
            continue  # a few pixels far away: too blurred to judge
        inside = pair.infrared[int(box.y1):int(np.ceil(box.y2)), int(box.x1):int(np.ceil(box.x2))]
        # Most of a box is the warm object, brighter than almost all background.
        assert np.percentile(inside, 60) > hot_threshold, box


def test_visible_is_dark_noisy_and_sodium_tinted() -> None:
    pair = make_night_pair(seed=4, **SIZE)
    red, green, blue = (pair.visible[..., c].astype(float) for c in range(3))
    assert pair.visible.mean() < 50  # night
    assert red.mean() > green.mean() > blue.mean()  # orange cast
    assert pair.visible.max() >= 250  # glare from lamps/headlights saturates
    # Noise: neighbouring pixels of the flat sky differ.
    sky = green[:10, :]
    assert np.abs(np.diff(sky, axis=1)).mean() > 1.0
    # People and cars are hard to see in the visible image (low contrast inside boxes).
    person = next(box for box in pair.boxes if box.label == 'person')
    inside = pair.visible[int(person.y1):int(person.y2), int(person.x1):int(person.x2)]
    assert inside.mean() < 80


def test_sixteen_bit_infrared_is_raw_counts_that_need_a_stretch() -> None:
    pair = make_night_pair(seed=5, thermal_bits=16, **SIZE)
    counts = pair.infrared
    assert 6500 < np.percentile(counts, 1) and np.percentile(counts, 99) < 9500
    assert counts.max() - counts.min() < 3000  # a bit shift would leave ~12 grey levels
    stretched = thermal_to_uint8(counts)
    assert stretched.min() == 0 and stretched.max() == 255
    # Same scene as the 8-bit output: the ordering of pixels agrees closely.
    eight = make_night_pair(seed=5, thermal_bits=8, **SIZE).infrared.astype(float)
    assert np.corrcoef(eight.ravel(), counts.astype(float).ravel())[0, 1] > 0.99


@pytest.mark.parametrize('kwargs, message', [
    ({'thermal_bits': 12}, 'thermal_bits'), ({'width': 8}, 'at least 16x16'),
    ({'frame': -1}, 'frame'), ({'seed': -2}, 'seed'),
])
def test_invalid_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_night_pair(**kwargs)
