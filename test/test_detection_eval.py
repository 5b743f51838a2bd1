"""Detection evaluation: YOLO labels, mAP through Ultralytics' code, label-free comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ivf_ros.evaluation.baselines import BASELINES
from ivf_ros.evaluation.detection import (
    DetectFunction,
    label_free_by_input,
    LabelError,
    map_by_input,
    markdown_summary,
    read_yolo_labels,
    Sample,
)
from ivf_ros.io.synthetic import LABELS, make_night_pair
from ivf_ros.pipeline.detector import Detection

NAMES = dict(enumerate(LABELS))  # {0: 'person', 1: 'car'}


def _samples(count: int = 3, width: int = 128, height: int = 96) -> list[Sample]:
    """Return synthetic night pairs with their ground-truth boxes as (n, 5) targets."""
    samples = []
    for seed in range(count):
        pair = make_night_pair(seed=seed, width=width, height=height)
        targets = np.array([[LABELS.index(box.label), box.x1, box.y1, box.x2, box.y2]
                            for box in pair.boxes], dtype=np.float64).reshape(-1, 5)
        samples.append(Sample(f'scene{seed}', pair.visible, pair.infrared, targets))
    return samples


def _oracle(samples: list[Sample], shift: float = 0.0) -> DetectFunction:
    """Return a detector that finds each sample's ground truth (shifted by shift box widths)."""
    by_shape_and_content = {sample.visible.tobytes()[:4096]: sample for sample in samples}

    def detect(rgb: np.ndarray) -> list[Detection]:
        sample = by_shape_and_content.get(rgb.tobytes()[:4096])
        if sample is None:
            return []  # any other input (infrared, fused): the oracle sees nothing
        return [Detection(int(c), NAMES[int(c)], 0.9, (x1 + x2) / 2 + shift * (x2 - x1),
                          (y1 + y2) / 2, x2 - x1, y2 - y1) for c, x1, y1, x2, y2 in sample.targets]

    return detect


def test_read_yolo_labels(tmp_path: Path) -> None:
    path = tmp_path / 'a.txt'
    path.write_text('0 0.5 0.5 0.2 0.4\n\n1 0.1 0.2 0.1 0.2\n')
    targets = read_yolo_labels(path, width=200, height=100)
    np.testing.assert_allclose(targets[0], [0, 80, 30, 120, 70])
    np.testing.assert_allclose(targets[1], [1, 10, 10, 30, 30])
    assert read_yolo_labels(tmp_path / 'missing.txt', 10, 10).shape == (0, 5)
    path.write_text('0 0.5 0.5 0.2\n')
    with pytest.raises(LabelError, match='expected 5 values'):
        read_yolo_labels(path, 10, 10)
    path.write_text('0 0.5 0.5 1.2 0.2\n')
    with pytest.raises(LabelError, match='normalised'):
        read_yolo_labels(path, 10, 10)
    # NaN passes min/max comparisons: refused by name, with the line.
    for line in ('0 0.5 nan 0.2 0.2', 'nan 0.5 0.5 0.2 0.2', 'inf 0.5 0.5 0.2 0.2'):
        path.write_text(line + '\n')
        with pytest.raises(LabelError, match=r'a\.txt:1: not finite'):
            read_yolo_labels(path, 10, 10)
    # As Ultralytics: rounding just outside [0, 1] is clipped, a repeated line counts once.
    path.write_text('0 0.5 0.5 1.0000001 0.2\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n')
    targets = read_yolo_labels(path, width=10, height=10)
    np.testing.assert_allclose(targets, [[0, 0, 4, 10, 6], [0, 4, 4, 6, 6]])


def test_map_of_a_perfect_and_a_shifted_detector() -> None:
    samples = _samples()
    assert sum(len(sample.targets) for sample in samples) > 0
    perfect = map_by_input(_oracle(samples), samples, NAMES)
    # Ultralytics interpolates the PR curve on 101 points: a perfect detector scores ~0.995.
    assert perfect['visible'].map50 == pytest.approx(0.995, abs=0.01)
    assert perfect['visible'].map50_95 == pytest.approx(0.995, abs=0.01)
    assert perfect['infrared'].map50 == 0.0 and perfect['infrared'].recall == 0.0
    # Shifted by a fifth of the box width: IoU = 0.8 / 1.2 = 0.67, so AP@0.5 holds and the
    # 0.70-0.95 thresholds fail.
    shifted = map_by_input(_oracle(samples, shift=0.2), samples, NAMES)['visible']
    assert shifted.map50 == pytest.approx(0.995, abs=0.01)
    assert 0.2 < shifted.map50_95 < 0.5
    assert set(shifted.ap50_per_class) <= set(LABELS)
    assert 'mAP@0.5 ↑' in markdown_summary(perfect)


def test_unlabelled_samples_are_refused_for_map() -> None:
    sample = _samples(1)[0]
    unlabelled = Sample(sample.name, sample.visible, sample.infrared)
    with pytest.raises(LabelError, match='no labels'):
        map_by_input(_oracle([sample]), [unlabelled], NAMES)


def test_label_free_comparison_with_a_tiny_yolo(yolo_config_dir: Path) -> None:
    from ivf_ros.pipeline.detector import YoloDetector

    # Random weights from the yaml (no download); a low threshold so boxes do come out.
    detector = YoloDetector('yolo11n.yaml', conf=0.001, imgsz=128, max_det=20, device='cpu')
    samples = [Sample(s.name, s.visible, s.infrared) for s in _samples(2)]
    stats = label_free_by_input(detector.detect, samples,
                                {'laplacian': BASELINES['laplacian']})
    assert list(stats) == ['visible', 'infrared', 'laplacian']
    for kind_stats in stats.values():
        assert kind_stats.images == 2
        assert 0.0 <= kind_stats.mean_confidence <= 1.0
        assert kind_stats.detections_per_image <= 20
        for per_image, confidence in kind_stats.class_summary().values():
            assert per_image > 0 and 0.0 < confidence <= 1.0
    table = markdown_summary(stats)
    assert 'detections / image' in table and '| laplacian | 2 |' in table
