"""Paired-folder listing, loading and the team's validation split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ivf_ros.io.datasets import (
    all_pairs,
    DatasetError,
    is_labelled,
    is_night,
    is_validation,
    list_pairs,
    load_pair,
    night_pairs,
    PairedImage,
    split_pairs,
    training_pairs,
    validation_pairs,
)


def _write_folder(folder: Path, names: list[str], ir_names: list[str] | None = None,
                  visible_size: tuple[int, int] = (24, 32),
                  infrared_size: tuple[int, int] = (24, 32)) -> Path:
    """Write tiny vi/ (BGR) and ir/ (grey) PNGs; sizes are (height, width)."""
    (folder / 'vi').mkdir(parents=True)
    (folder / 'ir').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / 'vi' / f'{name}.png'),
                    rng.integers(0, 256, (*visible_size, 3), dtype=np.uint8))
    for name in ir_names if ir_names is not None else names:
        cv2.imwrite(str(folder / 'ir' / f'{name}.png'),
                    rng.integers(0, 256, infrared_size, dtype=np.uint8))
    return folder


def test_list_and_load_synthetic_folder(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / 'toy', ['b', 'a'])
    (folder / 'vi' / 'notes.txt').write_text('not an image')
    pairs = list_pairs(folder)
    assert [pair.name for pair in pairs] == ['a', 'b']
    assert pairs[0].dataset == 'toy' and pairs[0].key == 'toy/a'
    visible, infrared = load_pair(pairs[0])
    assert visible.shape == (24, 32, 3) and visible.dtype == np.uint8
    assert infrared.shape == (24, 32) and infrared.dtype == np.uint8
    # RGB order: the visible image is the BGR file channel-reversed.
    bgr = cv2.imread(str(pairs[0].visible_path))
    np.testing.assert_array_equal(visible, bgr[..., ::-1])


def test_infrared_resized_to_visible(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / 'toy', ['a'], infrared_size=(12, 16))
    visible, infrared = load_pair(list_pairs(folder)[0])
    assert infrared.shape == visible.shape[:2] == (24, 32)


def test_three_channel_infrared_becomes_grey(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / 'toy', ['a'], ir_names=[])
    cv2.imwrite(str(folder / 'ir' / 'a.png'), np.full((24, 32, 3), 77, np.uint8))
    _, infrared = load_pair(list_pairs(folder)[0])
    assert infrared.shape == (24, 32) and int(infrared.max()) == 77


def test_mismatched_names_are_named(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / 'toy', ['a', 'b'], ir_names=['a', 'c'])
    with pytest.raises(DatasetError, match=r"only in vi/ \['b'\].*only in ir/ \['c'\]"):
        list_pairs(folder)


def test_missing_subfolder_and_unreadable_image(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match='ir'):
        list_pairs(_write_folder(tmp_path / 'x', ['a']).parent / 'nowhere')
    folder = _write_folder(tmp_path / 'toy', ['a'])
    (folder / 'vi' / 'a.png').write_bytes(b'not a png')
    with pytest.raises(DatasetError, match='cannot read'):
        load_pair(list_pairs(folder)[0])


def test_is_night_by_msrs_suffix_and_folder(tmp_path: Path) -> None:
    def pair(folder: str, name: str) -> PairedImage:
        return PairedImage(name, tmp_path / folder / 'vi' / f'{name}.png',
                           tmp_path / folder / 'ir' / f'{name}.png')

    assert is_night(pair('msrs', '00004N')) and not is_night(pair('msrs', '00055D'))
    assert is_night(pair('llvip_train', '010001')) and not is_night(pair('roadscene', 'FLIR_1'))
    assert not is_night(pair('my_folder', 'frame'))  # unknown: not known to be night
    assert is_validation(pair('msrs', '00004N')) and not is_validation(pair('msrs', '00055D'))
    assert is_validation(pair('msrs_extra', '00858N'))
    assert is_validation(pair('flir_night', 'FLIR_08864'))
    assert is_validation(pair('m3fd_night', '00388'))
    assert not is_validation(pair('llvip_train', '010001'))   # labelled, but scene 01 trains
    assert not is_validation(pair('m3fd', 'M3FD_00471'))


def test_unknown_split_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match='unknown split'):
        split_pairs('test', tmp_path)


@pytest.mark.dataset
def test_shared_datasets_split(datasets: Path) -> None:
    validation = validation_pairs(datasets)
    assert len(validation) == 36
    assert {pair.dataset for pair in validation} == {
        'msrs', 'msrs_extra', 'flir_night', 'm3fd_night'}
    assert all(is_night(pair) and is_labelled(pair) for pair in validation)
    training = training_pairs(datasets)
    everything = all_pairs(datasets)
    assert len(training) + len(validation) == len(everything)
    assert not {pair.key for pair in training} & {pair.key for pair in validation}
    assert len(night_pairs(datasets)) == 85  # the README's count
    visible, infrared = load_pair(next(p for p in validation if p.dataset == 'msrs'))
    assert visible.shape == (480, 640, 3) and infrared.shape == (480, 640)
