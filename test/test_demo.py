"""`ivf-demo` end to end on a tiny synthetic drive: live graph, pictures, JSON, reports."""

from __future__ import annotations

import json
import os
from pathlib import Path
import sys

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
    # Asked for, synthetic frames are no sign of a missing data set.
    description = demo.night_drive('synthetic', 2, (64, 48), seed=0)[1]
    assert '--source synthetic' in description and '../shared' not in description


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


def test_an_existing_folder_that_is_no_demo_output_is_never_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--output .` used to rmtree the working directory before any option was checked."""
    (tmp_path / 'notes.txt').write_text('precious')
    monkeypatch.chdir(tmp_path)
    assert demo.main(['--output', '.', '--source', 'synthetic', '--frames', '2', '-q']) == 2
    error = capsys.readouterr().err.strip()
    assert 'not an ivf-demo output folder' in error and len(error.splitlines()) == 1, error
    assert (tmp_path / 'notes.txt').read_text() == 'precious'
    # A bad option is refused before a previous demo's output is touched.
    previous = tmp_path / 'previous'
    demo.prepare_output(previous)
    (previous / 'summary.json').write_text('{}')
    assert demo.main(['--output', str(previous), '--source', str(tmp_path / 'none')]) == 2
    assert (previous / 'summary.json').is_file()


def test_prepare_output_replaces_only_what_a_demo_wrote(tmp_path: Path) -> None:
    output = tmp_path / 'demo'
    demo.prepare_output(output)
    assert (output / demo.MARKER).is_file() and (output / 'logs').is_dir()
    (output / 'summary.json').write_text('{}')
    (output / 'evaluation').mkdir()
    (output / 'mine.txt').write_text('kept')
    demo.prepare_output(output)
    assert not (output / 'summary.json').exists() and not (output / 'evaluation').exists()
    assert (output / 'mine.txt').read_text() == 'kept'
    (tmp_path / 'file').write_text('')
    with pytest.raises(demo.DemoError, match='is a file'):
        demo.prepare_output(tmp_path / 'file')
    with pytest.raises(demo.DemoError, match='cannot write'):
        demo.prepare_output(tmp_path / 'file' / 'below')


@pytest.mark.parametrize('option', [['--sheet-frames', '0'], ['--eval-frames', '-1'],
                                    ['--rate', '0'], ['--imgsz', '0'],
                                    ['--startup-timeout', '-5'], ['--rate', 'nan']])
def test_bad_numbers_are_refused_before_the_run(option: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(option)
    assert exit_info.value.code == 2
    assert option[0] in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_missing_fusion_model_is_one_line_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / 'out'
    assert demo.main(['--model', str(tmp_path / 'missing.pt'), '--output', str(output),
                      '--source', 'synthetic', '--frames', '2', '-q']) == 2
    error = capsys.readouterr().err.strip()
    assert '--model' in error and len(error.splitlines()) == 1, error
    assert not output.exists()
    assert demo.resolve_model(None) is None
    weights = tmp_path / 'w.pt'
    weights.write_bytes(b'')
    assert demo.resolve_model(str(weights)) == str(weights.resolve())


def test_a_folder_with_fewer_pairs_than_frames_says_how_many_it_plays(tmp_path: Path) -> None:
    for sub in ('vi', 'ir'):
        (tmp_path / sub).mkdir()
        for index in range(3):
            cv2.imwrite(str(tmp_path / sub / f'{index}.png'), np.zeros((32, 32, 3), np.uint8))
    pairs, description = demo.night_drive(str(tmp_path), 5, (32, 32), seed=0)
    assert len(list(pairs)) == 3
    assert description.startswith('3 night pairs') and '--frames asked 5' in description
    for sub in ('vi', 'ir'):   # one pair is no drive, as --frames 1 is not
        for index in (1, 2):
            (tmp_path / sub / f'{index}.png').unlink()
    with pytest.raises(demo.DemoError, match='has 1 pair'):
        demo.night_drive(str(tmp_path), 5, (32, 32), seed=0)


def test_free_running_summary_counts_every_output_and_the_drops(tmp_path: Path) -> None:
    """The idle-flushed last pair is left out of the timing, not out of the outputs count."""
    from ivf_ros.io import bagio

    input_bag = tmp_path / 'input'
    bagio.write_pairs(input_bag, bagio.synthetic_pairs(4, 32, 24, 0),
                      stamps=bagio.StampModel(rate_hz=10.0))
    with bagio.BagReader(input_bag) as reader:
        played = [(m.log_time_ns, bagio.join_stamp(reader.decode(m).header.stamp))
                  for m in reader.messages([bagio.VISIBLE_TOPIC])]
    wall = 1_000_000_000_000
    sent = {bagio.VISIBLE_TOPIC: [(log, wall + index * 100_000_000)
                                  for index, (log, _) in enumerate(played)]}
    output_bag = tmp_path / 'output'
    image = np.zeros((24, 32, 3), np.uint8)
    with bagio.BagWriter(output_bag) as writer:
        writer.add_topic(demo.FUSED_TOPIC, bagio.IMAGE)
        for index in (0, 1, 3):  # pair 2 dropped, the last one flushed late
            writer.write(demo.FUSED_TOPIC, wall + index * 100_000_000 + 50_000_000,
                         bagio.image_message(image, 'rgb8', played[index][1], 'f'))
    summary = demo.free_running_summary(output_bag, sent, input_bag, demo.FUSED_TOPIC)
    assert summary['pairs_played'] == 4
    assert summary['outputs_received'] == 3 and summary['dropped'] == 1
    assert summary['latency_ms']['p50'] == 50.0


def test_a_recorder_that_lost_messages_is_a_warning(tmp_path: Path) -> None:
    script = 'print("received 2, written 1 messages"); print("  /fused/image: x"); exit(1)'
    child = demo.Child('ivf-bag record', [sys.executable, '-c', script],
                       tmp_path / 'record.log', dict(os.environ))
    child.process.wait(30)
    warnings: list[str] = []
    demo.check_recorder(child, warnings)
    assert len(warnings) == 1 and 'received 2, written 1' in warnings[0], warnings


@pytest.mark.ros
def test_graph_run_in_process_twice_gives_the_signal_handlers_back() -> None:
    """The graph's own SIGTERM handler (-> KeyboardInterrupt) must not outlive its run."""
    import signal

    from ivf_ros.nodes import graph

    def host_handler(signum: int, frame: object) -> None:
        """Stand for the host program's SIGTERM handler."""

    previous = signal.signal(signal.SIGTERM, host_handler)
    try:
        for _ in range(2):  # a -p of the wrong type: rclpy starts, the node factory refuses
            assert graph.main(['ivf-graph', '--nodes', 'fusion_node', '--ros-args',
                               '-p', 'fusion_node:slop:=abc']) == 2
            assert signal.getsignal(signal.SIGTERM) is host_handler
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_setup_without_python_says_what_to_install(tmp_path: Path) -> None:
    import subprocess

    script = Path(__file__).resolve().parents[1] / 'scripts' / 'setup.sh'
    env = dict(os.environ, PYTHON=str(tmp_path / 'python3.11'), IVF_VENV=str(tmp_path / 'venv'))
    result = subprocess.run(['bash', str(script)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert 'install Python 3.11' in result.stderr and 'PYTHON=' in result.stderr, result.stderr
    assert not (tmp_path / 'venv').exists()


@pytest.mark.parametrize('option', [['--seconds', '2'], ['--warmup', '-1'], ['--rate', '0']])
def test_bench_graph_refuses_a_phase_with_nothing_to_measure(
        option: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--seconds 2` (warm-up 3 s) measured nothing and printed 0 FPS, bars NOT met."""
    import importlib

    scripts = Path(__file__).resolve().parents[1] / 'scripts'
    monkeypatch.syspath_prepend(str(scripts))
    bench = importlib.import_module('bench_graph')
    monkeypatch.setattr(bench, 'bench_graph', lambda options: pytest.fail('ran the bench'))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(option)
    assert exit_info.value.code == 2
    assert option[0] in capsys.readouterr().err
