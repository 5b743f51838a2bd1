"""`ivf-demo` end to end on a tiny synthetic drive: live graph, pictures, JSON, reports."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivf_ros.cli import demo


@pytest.fixture(scope='module')
def fusion_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight fusion network saved the way the shipped weights are (a real torch model)."""
    from node_helpers.tiny_yolo import build_fusion_weights

    return build_fusion_weights(tmp_path_factory.mktemp('fusion') / 'ivf_fusion.pt')


def test_detector_option_offline_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('IVF_SHARED_DIR', str(tmp_path))  # a fresh clone: no ../shared
    weights, note = demo.resolve_detector('auto')
    assert weights is None
    assert 'No detector weights' in note and 'yolo11n.pt' in note
    with pytest.raises(demo.DemoError, match='do not exist'):
        demo.resolve_detector(str(tmp_path / 'missing.pt'))
    assert demo.resolve_detector('none')[0] is None


def test_night_drive_falls_back_to_synthetic(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('IVF_SHARED_DIR', str(tmp_path))
    pairs, description = demo.night_drive('auto', 2, (64, 48), seed=0)
    assert 'synthetic' in description
    visible, infrared = next(pairs)
    assert visible.shape == (48, 64, 3) and infrared.shape == (48, 64)
    with pytest.raises(demo.DemoError, match='no paired images'):
        demo.night_drive(str(tmp_path), 2, (64, 48), seed=0)


@pytest.mark.ros
@pytest.mark.slow
def test_tiny_demo_without_detector_weights(tmp_path: Path, fusion_weights: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh clone offline: no ../shared, no YOLO weights; the demo still shows the fusion."""
    monkeypatch.setenv('IVF_SHARED_DIR', str(tmp_path / 'no_shared'))
    output = tmp_path / 'demo'
    code = demo.main(['--output', str(output), '--frames', '4', '--size', 'small',
                      '--model', str(fusion_weights), '--device', 'cpu', '--eval-frames', '2',
                      '--sheet-frames', '2', '-q'])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert 'No detector weights' in printed.out and 'synthetic' in printed.out
    summary = json.loads((output / 'summary.json').read_text())
    # The last pair waits for a next frame that never comes until the node's idle flush.
    assert summary['pairs_played'] == 4 and summary['fused_received'] == 4
    assert summary['detector'] is None and summary['throughput_fps'] > 0
    sheet = cv2.imread(str(output / 'contact_sheet.png'))
    assert sheet.shape[1] > 5 * demo.TILE_WIDTH and sheet.shape[0] > 2 * 100
    assert (output / 'night_drive.gif').stat().st_size > 0
    assert (output / 'night_drive.mp4').stat().st_size > 0
    assert json.loads((output / 'detections.json').read_text())['frames'] == []
    report = (output / 'evaluation' / 'report.md').read_text()
    assert 'ivf_ros' in report and 'laplacian' in report
    latency = json.loads((output / 'latency.json').read_text())
    assert latency['outputs_received'] == summary['fused_received']
    assert '/fusion_node: fusion' in ' '.join(latency['graph_diagnostics'])


def test_a_mismatched_source_is_one_clear_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / 'pairs'
    for sub, name in (('vi', 'a'), ('ir', 'b')):
        (source / sub).mkdir(parents=True)
        cv2.imwrite(str(source / sub / f'{name}.png'), np.zeros((32, 32), np.uint8))
    assert demo.main(['--source', str(source), '--output', str(tmp_path / 'out'), '-q']) == 2
    error = capsys.readouterr().err.strip()
    assert 'names do not match' in error and len(error.splitlines()) == 1, error
