"""YoloDetector: offline-safe loading, pixel boxes, class filtering, drawing (tiny random YOLO)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ivf_ros.pipeline.detector import (
    annotate,
    Detection,
    DetectorLoadError,
    UnsafeCheckpointError,
    YoloDetector,
)


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, yolo_config_dir: Path) -> Path:
    from node_helpers.tiny_yolo import cached_tiny_yolo

    return cached_tiny_yolo(tmp_path_factory.getbasetemp())


@pytest.fixture(scope='module')
def detector(tiny_weights: Path) -> YoloDetector:
    # Random weights score every box near zero: conf=0 makes boxes appear at all.
    return YoloDetector(tiny_weights, conf=0.0, imgsz=160, max_det=20, device='cpu')


def test_detect_returns_boxes_in_input_pixels(detector: YoloDetector) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (128, 200, 3), dtype=np.uint8)
    detections = detector.detect(rgb)
    assert 0 < len(detections) <= 20
    for detection in detections:
        assert isinstance(detection, Detection)
        x1, y1, x2, y2 = detection.xyxy
        assert -1 <= x1 <= x2 <= 201 and -1 <= y1 <= y2 <= 129
        assert detection.class_name == detector.names[detection.class_id]
        assert 0.0 <= detection.score <= 1.0


def test_max_det_and_conf_are_honoured(detector: YoloDetector) -> None:
    rgb = np.full((96, 96, 3), 80, np.uint8)
    detector.max_det = 3
    assert len(detector.detect(rgb)) <= 3
    detector.max_det, detector.conf = 20, 0.99
    assert detector.detect(rgb) == []
    detector.conf = 0.0


def test_class_filter_by_name(detector: YoloDetector) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    detector.classes = None
    everything = detector.detect(rgb)
    assert everything
    kept = everything[0].class_name
    detector.classes = [kept]
    assert detector.class_ids == [everything[0].class_id]
    filtered = detector.detect(rgb)
    assert filtered and all(d.class_name == kept for d in filtered)
    other = 'car' if kept != 'car' else 'person'
    detector.classes = [other]
    assert all(d.class_name == other for d in detector.detect(rgb))
    detector.classes = []
    assert detector.classes is None


def test_unknown_class_name_is_rejected(detector: YoloDetector) -> None:
    with pytest.raises(ValueError, match='unicorn'):
        detector.classes = ['unicorn']


def test_bad_image_is_rejected(detector: YoloDetector) -> None:
    with pytest.raises(ValueError, match='uint8 RGB'):
        detector.detect(np.zeros((32, 32), np.uint8))


def test_annotate_draws_without_touching_the_input() -> None:
    rgb = np.zeros((64, 80, 3), np.uint8)
    boxes = [Detection(2, 'car', 0.9, 40.0, 32.0, 20.0, 10.0)]
    drawn = annotate(rgb, boxes)
    assert drawn.shape == rgb.shape and drawn.any() and not rgb.any()


def test_missing_weights_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / 'nowhere' / 'weights.pt'
    with pytest.raises(DetectorLoadError, match=str(missing)):
        YoloDetector(missing, device='cpu')


def test_bare_name_offline_fails_without_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yolo_config_dir: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('YOLO_OFFLINE', '1')
    with pytest.raises(DetectorLoadError, match='yolo11n.pt.*YOLO_OFFLINE'):
        YoloDetector('yolo11n.pt', device='cpu')
    assert not (tmp_path / 'yolo11n.pt').exists()


def test_offline_is_the_callers_choice(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing the detector (as every node does) must not switch a user's Ultralytics
    # offline: on a full ROS install the default yolo11n.pt is downloaded the normal way.
    import os
    import subprocess
    import sys

    env = {name: value for name, value in os.environ.items() if name != 'YOLO_OFFLINE'}
    result = subprocess.run(
        [sys.executable, '-c', 'import os, ivf_ros.pipeline.detector as d; '
         "print(os.environ.get('YOLO_OFFLINE'), d.resolve_weights('yolo11n.pt'))"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    offline, weights = result.stdout.split()
    assert offline == 'None', result.stderr
    assert weights.endswith('yolo11n.pt')  # left to Ultralytics (or its cached copy)
    # env.sh (what users source) leaves it unset too; tests and CI set it themselves.
    setup = (Path(__file__).resolve().parents[1] / 'scripts' / 'setup.sh').read_text()
    assert 'YOLO_OFFLINE' not in setup


def test_unreadable_weights_name_the_path(tmp_path: Path) -> None:
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(DetectorLoadError, match='corrupt.pt'):
        YoloDetector(corrupt, device='cpu')


def test_unavailable_device_is_a_load_error(tiny_weights: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    with pytest.raises(DetectorLoadError, match='CUDA is not available'):
        YoloDetector(tiny_weights, device='cuda:0')


class _RunsCode:
    """A pickle payload that creates a file when unpickled (what an attacker would ship)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_is_refused_before_it_runs(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / 'code_ran'
    crafted = tmp_path / 'crafted.pt'
    torch.save({'model': _RunsCode(marker), 'train_args': {}}, crafted)
    with pytest.raises(UnsafeCheckpointError, match='refused.*crafted.pt.*not run'):
        YoloDetector(crafted, device='cpu')
    assert not marker.exists()


def test_a_model_yaml_with_code_in_its_activation_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / 'code_ran'
    crafted = tmp_path / 'crafted.yaml'
    crafted.write_text(f'nc: 2\nactivation: __import__("pathlib").Path("{marker}").touch()\n'
                       'backbone: []\nhead: []\n')
    with pytest.raises(UnsafeCheckpointError, match='activation'):
        YoloDetector(crafted, device='cpu')
    assert not marker.exists()


def test_an_onnx_export_loads_and_detects(tiny_weights: Path, tmp_path: Path) -> None:
    import shutil

    from ultralytics import YOLO

    weights = Path(shutil.copy(tiny_weights, tmp_path / 'tiny.pt'))  # the export lands beside it
    onnx = YOLO(str(weights)).export(format='onnx', imgsz=64, simplify=False, verbose=False)
    assert Path(onnx).parent == tmp_path
    detector = YoloDetector(onnx, conf=0.0, imgsz=64, max_det=5, device='cpu')
    assert detector.names[0] == 'person'
    rgb = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    assert 0 < len(detector.detect(rgb)) <= 5
    # A static export runs at its own size whatever imgsz asks: the node must know that.
    assert detector.exported and detector.fixed_size == 64
    detector.imgsz = 128
    detector.detect(rgb)
    assert detector.input_size == 64
    assert not YoloDetector(weights, imgsz=64, device='cpu').exported
    # A dynamic export takes imgsz: nothing to refuse.
    Path(onnx).rename(tmp_path / 'static.onnx')    # the dynamic export lands on its name
    dynamic_onnx = YOLO(str(weights)).export(format='onnx', imgsz=64, dynamic=True,
                                             simplify=False, verbose=False)
    dynamic = YoloDetector(dynamic_onnx, conf=0.0, imgsz=64, device='cpu')
    dynamic.detect(rgb)
    assert dynamic.fixed_size is None
    dynamic.imgsz = 96
    dynamic.detect(rgb)
    assert dynamic.input_size == 96


@pytest.mark.parametrize('architecture', ['yolo11n-seg.yaml', 'yolo11n-cls.yaml'])
def test_a_model_for_another_task_is_refused_by_name(architecture: str) -> None:
    # Ultralytics loads any head with task='detect' and fails only inside the first inference.
    task = 'segment' if 'seg' in architecture else 'classify'
    with pytest.raises(DetectorLoadError, match=f'is a YOLO {task} model'):
        YoloDetector(architecture, device='cpu')


def test_a_model_format_that_is_not_checked_is_refused_without_the_opt_in(
        tmp_path: Path) -> None:
    engine = tmp_path / 'model.engine'
    engine.write_bytes(b'not checked')
    with pytest.raises(UnsafeCheckpointError, match=r'checks \.pt, \.onnx and \.yaml'):
        YoloDetector(engine, device='cpu')
    folder = tmp_path / 'model_openvino_model'   # an export folder: not checked either
    folder.mkdir()
    (folder / 'metadata.yaml').write_text('names: {0: person}\n')
    with pytest.raises(UnsafeCheckpointError, match='a folder'):
        YoloDetector(folder, device='cpu')


def test_unsafe_loading_is_an_explicit_logged_opt_in(
        tiny_weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level('WARNING', logger='ivf_ros.detector'):
        detector = YoloDetector(tiny_weights, device='cpu', allow_unsafe_checkpoint=True)
    assert detector.names and 'can run code' in caplog.text


def test_the_real_coco_yolo11n_loads_safely_and_detects(yolo11n_weights: Path,
                                                        datasets: Path) -> None:
    import cv2

    detector = YoloDetector(yolo11n_weights, device='cpu')
    infrared = cv2.imread(str(datasets / 'msrs' / 'ir' / '00024N.png'))
    people = [d for d in detector.detect(infrared[:, :, ::-1].copy()) if d.class_name == 'person']
    assert len(detector.names) == 80 and len(people) >= 1
