"""Register the infrared image to the visible frame: resize, then an optional homography."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# Smallest singular value / largest: below it a homography counts as singular.
MIN_INVERSE_CONDITION = 1e-10


def homography_matrix(values: Sequence[float]) -> np.ndarray | None:
    """Return the 3x3 matrix of 9 row-major values, None for identity; ValueError if singular."""
    if len(values) != 9:
        raise ValueError(f'homography needs 9 row-major values, got {len(values)}')
    matrix = np.asarray(values, np.float64).reshape(3, 3)
    if not np.isfinite(matrix).all():
        raise ValueError(f'homography {list(values)} is singular or not finite')
    # Defined up to scale, so singularity is judged scale-free: by the smallest over the
    # largest singular value. A determinant test refuses the identity times 1e-5 and takes a
    # nearly rank-1 matrix of large entries. (A shift of t px has a ratio of about 1 / t^2.)
    singular_values = np.linalg.svd(matrix, compute_uv=False)   # descending
    if not singular_values[0] > 0 or (
            singular_values[2] / singular_values[0] < MIN_INVERSE_CONDITION):
        raise ValueError(f'homography {list(values)} is singular or not finite')
    matrix = matrix / matrix[2, 2] if matrix[2, 2] != 0 else matrix
    if np.allclose(matrix, np.eye(3)):
        return None
    return matrix


def register_infrared(infrared: np.ndarray, visible_size: tuple[int, int],
                      homography: np.ndarray | None = None) -> np.ndarray:
    """Return (h, w) infrared resized to visible_size (h, w), then warped by the homography."""
    height, width = visible_size
    if infrared.shape[:2] != (height, width):
        # INTER_AREA when shrinking avoids aliasing; linear when enlarging.
        shrinking = infrared.shape[0] > height or infrared.shape[1] > width
        infrared = cv2.resize(infrared, (width, height),
                              interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if homography is not None:
        infrared = cv2.warpPerspective(infrared, homography, (width, height),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return infrared
