"""Paired visible/infrared image folders (vi/ + ir/), loading, and the team's named data split.

Layout (as in ../shared/datasets): ``<folder>/vi/<name>.<ext>`` and ``<folder>/ir/<name>.<ext>``
with the same stem. The split used by the whole team:

- ``validation``: the 36 labelled night pairs, never trained on: the 12 MSRS night pairs
  (``msrs/*N.png``, MSRS test split), the 3 ``msrs_extra`` pairs, the 14 ``flir_night`` and
  the 7 ``m3fd_night`` pairs (person/car/bicycle labels in ``<folder>/labels/<name>.txt``);
- ``training``: every other pair under the datasets root (day pairs included; filter with
  :func:`is_night` when only night images are wanted). The 9 labelled ``llvip_train`` frames
  stay in training: they are LLVIP scene 01, whose other 23 frames are training frames of the
  same street (validating on them would measure a scene the network has seen).

Fusion metrics are still compared on the MSRS night pairs (``VALIDATION_FUSION_FOLDER``), as
every earlier report did; detection is measured on the whole validation split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
import re

import cv2
import numpy as np

from ivf_ros.io.paths import datasets_dir

IMAGE_SUFFIXES = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff'})
VISIBLE_DIR = 'vi'
INFRARED_DIR = 'ir'

# Dataset folders whose every pair was taken at night (see ../shared/datasets/README.md). MSRS
# folders hold day and night frames and are told apart by the name suffix instead.
NIGHT_FOLDERS = frozenset({'llvip_train', 'llvip_extra', 'msrs_extra', 'vifb_night', 'm3fd',
                           'flir_night', 'm3fd_night'})
DAY_FOLDERS = frozenset({'roadscene'})
# MSRS frame names: five digits then 'N' (night) or 'D' (day), e.g. 00004N.
MSRS_NAME = re.compile(r'^\d{5}(?P<time>[ND])$')

# Split names: validation = the labelled night pairs (msrs/*N, msrs_extra, flir_night,
# m3fd_night); training = all other pairs. The one place that decides is is_validation.
VALIDATION = 'validation'
TRAINING = 'training'
SPLITS = (VALIDATION, TRAINING)
VALIDATION_FOLDER = 'msrs'                  # its night pairs only (it also holds day pairs)
VALIDATION_FOLDERS = frozenset({'msrs_extra', 'flir_night', 'm3fd_night'})  # every pair
VALIDATION_FUSION_FOLDER = VALIDATION_FOLDER  # where the fusion metrics are compared
LABELS_DIR = 'labels'


class DatasetError(ValueError):
    """A paired-image folder is missing, mismatched or holds an unreadable image."""


@dataclass(frozen=True)
class PairedImage:
    """One registered visible/infrared pair: its name (file stem) and both file paths."""

    name: str
    visible_path: Path
    infrared_path: Path

    @property
    def folder(self) -> Path:
        """Return the paired-data folder (the parent of vi/)."""
        return self.visible_path.parent.parent

    @property
    def dataset(self) -> str:
        """Return the dataset folder's name, e.g. 'msrs'."""
        return self.folder.name

    @property
    def key(self) -> str:
        """Return '<dataset>/<name>', unique across the datasets root."""
        return f'{self.dataset}/{self.name}'


def _images_by_stem(directory: Path) -> dict[str, Path]:
    """Map file stem -> path for the images in directory; duplicate stems are an error."""
    images: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in images:
            raise DatasetError(
                f'{directory}: two images share the name {path.stem!r} '
                f'({images[path.stem].name}, {path.name})')
        images[path.stem] = path
    return images


def list_pairs(folder: str | Path) -> list[PairedImage]:
    """Return the pairs of folder/vi and folder/ir matched by file stem, sorted by name."""
    folder = Path(folder)
    visible_dir, infrared_dir = folder / VISIBLE_DIR, folder / INFRARED_DIR
    for directory in (visible_dir, infrared_dir):
        if not directory.is_dir():
            raise DatasetError(f'{folder} is not a paired-image folder: {directory} is missing')
    visible, infrared = _images_by_stem(visible_dir), _images_by_stem(infrared_dir)
    only_visible = sorted(visible.keys() - infrared.keys())
    only_infrared = sorted(infrared.keys() - visible.keys())
    if only_visible or only_infrared:
        raise DatasetError(
            f'{folder}: vi/ and ir/ names do not match: {len(only_visible)} only in vi/ '
            f'{only_visible[:5]}, {len(only_infrared)} only in ir/ {only_infrared[:5]}')
    if not visible:
        raise DatasetError(f'{folder}: no images in {visible_dir}')
    return [PairedImage(name, visible[name], infrared[name]) for name in sorted(visible)]


def _read(path: Path, flags: int) -> np.ndarray:
    """Read an image with OpenCV, raising DatasetError (not returning None) when unreadable."""
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f'cannot read image {path}')
    return image


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    """Bring a 16-bit or float image to uint8 with a robust percentile stretch."""
    if image.dtype == np.uint8:
        return image
    if image.dtype not in (np.uint16, np.float32, np.float64):
        raise DatasetError(f'{path}: unsupported pixel type {image.dtype}')
    # Radiometric thermal frames use a small part of the 16-bit range: stretch, don't shift.
    from ivf_ros.io.image_codec import thermal_to_uint8

    if image.ndim == 2:
        return thermal_to_uint8(image)
    return np.dstack([thermal_to_uint8(image[..., c]) for c in range(image.shape[2])])


def load_visible(path: str | Path) -> np.ndarray:
    """Load a visible image as (h, w, 3) uint8 RGB (grey images are replicated to 3 channels)."""
    path = Path(path)
    image = _to_uint8(_read(path, cv2.IMREAD_UNCHANGED), path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_infrared(path: str | Path) -> np.ndarray:
    """Load an infrared image as (h, w) uint8 (3-channel thermal JPEGs are converted to grey)."""
    path = Path(path)
    image = _to_uint8(_read(path, cv2.IMREAD_UNCHANGED), path)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize image to (height, width): area interpolation to shrink, bilinear to enlarge."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def load_pair(pair: PairedImage, on_resize: Callable[[PairedImage], object] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """
    Load a pair as (visible (h, w, 3) uint8 RGB, infrared (h, w) uint8).

    When the two files differ in size, the infrared image is resized to the visible image's size
    (the visible camera defines the output geometry, as in the fusion node), and on_resize, if
    given, is called with the pair (a report counts them).
    """
    visible = load_visible(pair.visible_path)
    infrared = load_infrared(pair.infrared_path)
    if infrared.shape[:2] != visible.shape[:2] and on_resize is not None:
        on_resize(pair)
    return visible, resize_to(infrared, *visible.shape[:2])


def is_night(pair: PairedImage) -> bool:
    """
    Return True for a night pair.

    MSRS-style names (``00004N``/``00055D``) decide by their suffix; otherwise the dataset folder
    decides (NIGHT_FOLDERS). A pair from an unknown folder is not known to be night: False.
    """
    match = MSRS_NAME.match(pair.name)
    if match:
        return match['time'] == 'N'
    return pair.dataset in NIGHT_FOLDERS


def all_pairs(root: str | Path | None = None) -> list[PairedImage]:
    """Return every pair of every paired-image folder directly under root (default datasets)."""
    root = Path(root) if root is not None else datasets_dir()
    if not root.is_dir():
        raise DatasetError(f'datasets root {root} does not exist')
    folders = [path for path in sorted(root.iterdir()) if (path / VISIBLE_DIR).is_dir()]
    return [pair for folder in folders for pair in list_pairs(folder)]


def night_pairs(root: str | Path | None = None) -> list[PairedImage]:
    """Return the night pairs of all folders under root (64 in ../shared/datasets)."""
    return [pair for pair in all_pairs(root) if is_night(pair)]


def is_validation(pair: PairedImage) -> bool:
    """Return True for the validation split: MSRS night, msrs_extra, flir_night, m3fd_night."""
    if pair.dataset == VALIDATION_FOLDER:
        return is_night(pair)
    return pair.dataset in VALIDATION_FOLDERS


def label_path(pair: PairedImage) -> Path:
    """Return the pair's YOLO label file ``<folder>/labels/<name>.txt`` (it may not exist)."""
    return pair.folder / LABELS_DIR / f'{pair.name}.txt'


def is_labelled(pair: PairedImage) -> bool:
    """Return True when the pair has a label file (a frame without one is unlabelled)."""
    return label_path(pair).is_file()


def split_pairs(split: str, root: str | Path | None = None) -> list[PairedImage]:
    """Return the pairs of the named split ('validation' or 'training') under root."""
    if split not in SPLITS:
        raise DatasetError(f'unknown split {split!r}; expected one of {SPLITS}')
    want_validation = split == VALIDATION
    return [pair for pair in all_pairs(root) if is_validation(pair) == want_validation]


def validation_pairs(root: str | Path | None = None) -> list[PairedImage]:
    """Return the validation split: the 36 labelled night pairs (see the module docstring)."""
    return split_pairs(VALIDATION, root)


def training_pairs(root: str | Path | None = None) -> list[PairedImage]:
    """Return the training split: every pair that is not in the validation split."""
    return split_pairs(TRAINING, root)
