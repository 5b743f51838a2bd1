"""ivf-eval end to end on a tiny synthetic paired folder: report, CSVs, PNGs and errors."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivf_ros.cli.eval import main
from ivf_ros.evaluation.baselines import BASELINES
from ivf_ros.io.datasets import list_pairs, load_pair
from ivf_ros.io.synthetic import LABELS, make_night_pair

# MSRS-style names: two night frames and one day frame, so the split and night filters act.
NAMES = ('00001N', '00002N', '00003D')


@pytest.fixture(scope='module')
def pairs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a datasets root with one 'msrs' folder of three tiny synthetic pairs."""
    root = tmp_path_factory.mktemp('datasets')
    folder = root / 'msrs'
    (folder / 'vi').mkdir(parents=True)
    (folder / 'ir').mkdir()
    for seed, name in enumerate(NAMES):
        pair = make_night_pair(seed=seed, width=64, height=48)
        cv2.imwrite(str(folder / 'vi' / f'{name}.png'), pair.visible[..., ::-1])
        cv2.imwrite(str(folder / 'ir' / f'{name}.png'), pair.infrared)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def test_report_with_baselines_and_a_fused_folder(pairs_root: Path, tmp_path: Path) -> None:
    # A folder of already fused images (as another method's results would be).
    fused_dir = tmp_path / 'fused_lap'
    fused_dir.mkdir()
    for pair in list_pairs(pairs_root / 'msrs'):
        fused = BASELINES['laplacian'](*load_pair(pair))
        cv2.imwrite(str(fused_dir / f'{pair.name}.png'), fused[..., ::-1])
    output = tmp_path / 'report'
    status = main([str(pairs_root / 'msrs'), '-m', 'visible', 'laplacian', f'saved={fused_dir}',
                   '-o', str(output), '--examples', '2', '--no-progress'])
    assert status == 0
    for name in ('report.md', 'per_image.csv', 'summary.csv', 'grid.png', 'metrics.png'):
        assert (output / name).is_file(), name
    rows = _rows(output / 'per_image.csv')
    assert len(rows) == 3 * len(NAMES)
    by_key = {(row['method'], row['image']): row for row in rows}
    for name in NAMES:  # lossless PNGs: the saved folder scores exactly as the baseline
        assert float(by_key[('saved', name)]['Qabf']) == pytest.approx(
            float(by_key[('laplacian', name)]['Qabf']))
    summary = _rows(output / 'summary.csv')
    assert [row['method'] for row in summary] == ['visible', 'laplacian', 'saved']
    assert {'EN_mean', 'EN_std', 'fuse_ms_mean'} <= set(summary[0])
    report = (output / 'report.md').read_text()
    assert 'EN ↑' in report and 'LOE ↓' in report and '**' in report
    assert '![examples](grid.png)' in report
    assert cv2.imread(str(output / 'grid.png')).shape[1] > 3 * 200  # three readable columns


def test_split_night_and_limit_filters(pairs_root: Path, tmp_path: Path) -> None:
    def evaluated(*options: str) -> set[str]:
        output = tmp_path / '_'.join(options).replace('-', '')
        assert main([str(pairs_root), '-m', 'average', '--metrics', 'EN', 'SSIM',
                     '-o', str(output), '--no-progress', '--no-figures', *options]) == 0
        assert not (output / 'metrics.png').exists()
        return {row['image'] for row in _rows(output / 'per_image.csv')}

    assert evaluated('--split', 'validation') == {'00001N', '00002N'}
    assert evaluated('--split', 'training') == {'00003D'}
    assert evaluated('--night-only') == {'00001N', '00002N'}
    assert evaluated('--limit', '1') == {'00001N'}


def test_errors_are_clear(pairs_root: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    output = str(tmp_path / 'out')
    assert main([str(pairs_root), '-m', 'wavelet', '-o', output, '--no-progress']) == 2
    assert 'unknown method' in capsys.readouterr().err
    broken = tmp_path / 'broken.pt'
    broken.write_bytes(b'not a checkpoint')
    assert main([str(pairs_root), '-m', str(broken), '-o', output, '--no-progress']) == 2
    assert str(broken) in capsys.readouterr().err
    empty = tmp_path / 'empty_results'
    empty.mkdir()
    assert main([str(pairs_root), '-m', str(empty), '-o', output, '--no-progress']) == 2
    assert 'no fused image for msrs/00001N' in capsys.readouterr().err
    assert main([str(tmp_path / 'nowhere'), '-o', output, '--no-progress']) == 2
    assert 'not a folder' in capsys.readouterr().err
    assert main([str(pairs_root), '-m', 'max', 'max', '-o', output, '--no-progress']) == 2
    assert 'unique' in capsys.readouterr().err


def test_checkpoint_method(pairs_root: Path, tmp_path: Path) -> None:
    inference = pytest.importorskip('ivf_ros.fusion.inference')
    model = pytest.importorskip('ivf_ros.fusion.model')
    checkpoint = tmp_path / 'tiny.pt'
    inference.save_weights(model.IVFNet(model.ModelConfig()), checkpoint)
    output = tmp_path / 'model_report'
    assert main([str(pairs_root), '-m', f'net={checkpoint}', '--device', 'cpu',
                 '--metrics', 'EN', 'Qabf', '-o', str(output), '--no-progress',
                 '--no-figures']) == 0
    rows = _rows(output / 'per_image.csv')
    assert {row['method'] for row in rows} == {'net'} and len(rows) == len(NAMES)


def test_detector_and_labels(pairs_root: Path, tmp_path: Path, yolo_config_dir: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    # YOLO labels of the synthetic boxes, so mAP is computed (random weights: its value is moot).
    labels = tmp_path / 'labels'
    labels.mkdir()
    for seed, name in enumerate(NAMES):
        pair = make_night_pair(seed=seed, width=64, height=48)
        lines = [f'{LABELS.index(box.label)} {(box.x1 + box.x2) / 128} {(box.y1 + box.y2) / 96} '
                 f'{(box.x2 - box.x1) / 64} {(box.y2 - box.y1) / 48}' for box in pair.boxes]
        (labels / f'{name}.txt').write_text('\n'.join(lines))
    output = tmp_path / 'detection'
    assert main([str(pairs_root), '-m', 'laplacian', '--metrics', 'EN', '--detector',
                 'yolo11n.yaml', '--detector-conf', '0.001', '--detector-imgsz', '64',
                 '--labels', str(labels), '--device', 'cpu', '-o', str(output),
                 '--no-progress', '--no-figures']) == 0
    report = (output / 'report.md').read_text()
    assert '## Detection on each output' in report
    assert 'mAP@0.5:0.95' in report and 'detections / image' in report
    # Label ids of another scheme than the detector's (as ../shared/datasets has): by name
    # (the random yaml model's classes are named '0', '1', ...).
    assert main([str(pairs_root), '-m', 'laplacian', '--metrics', 'EN', '--detector',
                 'yolo11n.yaml', '--detector-conf', '0.001', '--detector-imgsz', '64',
                 '--labels', str(labels), '--label-names', '7', '3', '--device', 'cpu',
                 '-o', str(output), '--no-progress', '--no-figures']) == 0
    assert "Label ids: {0: '7', 1: '3'}" in (output / 'report.md').read_text()
    # By default mAP sees every box down to 0.001 (as yolo val), the counts only confident ones.
    assert main([str(pairs_root), '-m', 'laplacian', '--metrics', 'EN', '--detector',
                 'yolo11n.yaml', '--detector-imgsz', '64', '--labels', str(labels),
                 '--device', 'cpu', '-o', str(output), '--no-progress', '--no-figures']) == 0
    assert 'conf >= 0.001, counted >= 0.25' in (output / 'report.md').read_text()
    assert main([str(pairs_root), '--detector', 'yolo11n.yaml', '--labels', str(labels),
                 '--label-names', 'unicorn', '-o', str(output), '--no-progress']) == 2
    assert main([str(pairs_root), '--detector', 'yolo11n.yaml', '--labels', str(labels),
                 '--label-names', '7', '7', '-o', str(output), '--no-progress']) == 2
    assert 'more than once' in capsys.readouterr().err
    # A label id that --label-names does not name would be in no class: a clear error.
    assert main([str(pairs_root), '-m', 'laplacian', '--metrics', 'EN', '--detector',
                 'yolo11n.yaml', '--detector-imgsz', '64', '--labels', str(labels),
                 '--label-names', '7', '--device', 'cpu', '-o', str(output), '--no-progress',
                 '--no-figures']) == 2
    assert 'class ids [1]' in capsys.readouterr().err
    # '-' leaves an id out of every AP (a dataset class the detector lacks, M3FD's lamps).
    assert main([str(pairs_root), '-m', 'laplacian', '--metrics', 'EN', '--detector',
                 'yolo11n.yaml', '--detector-imgsz', '64', '--labels', str(labels),
                 '--label-names', '7', '-', '--device', 'cpu', '-o', str(output),
                 '--no-progress', '--no-figures']) == 0
    assert 'Left out: ids [1].' in (output / 'report.md').read_text()
    assert main([str(pairs_root), '--detector', 'yolo11n.yaml', '--labels', str(labels),
                 '--label-names', '-', '-', '-o', str(output), '--no-progress']) == 2
    assert 'leaves every id out' in capsys.readouterr().err


def test_a_bad_label_file_fails_before_any_pair_is_fused(pairs_root: Path,
                                                         tmp_path: Path) -> None:
    from ivf_ros.evaluation.report import DetectionSetup, evaluate_methods, Method, MethodError

    pairs = list_pairs(pairs_root / 'msrs')
    (tmp_path / f'{pairs[-1].name}.txt').write_text('5 0.5 0.5 0.1 0.1\n')
    fused: list[str] = []

    def fuse(pair: object, visible: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        fused.append('one')
        return visible

    setup = DetectionSetup(lambda image: [], {0: 'person'}, labels_dir=tmp_path)
    with pytest.raises(MethodError, match=r'class ids \[5\]'):
        evaluate_methods(pairs, [Method('visible', 'baseline', fuse)], progress=False,
                         detection=setup)
    assert not fused   # the last pair's bad file was found before the first pair was fused


def test_labels_need_a_detector(pairs_root: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(pairs_root), '--labels', str(tmp_path), '-o', str(tmp_path / 'o'),
                 '--no-progress']) == 2
    assert '--labels needs --detector' in capsys.readouterr().err


def test_best_marks_follow_each_metric_direction() -> None:
    from ivf_ros.evaluation.report import best_methods, Evaluation, markdown_table, Method
    from ivf_ros.io.datasets import PairedImage

    def method(name: str) -> Method:
        return Method(name, 'baseline', lambda pair, visible, infrared: visible)

    pair = PairedImage('x', Path('d/vi/x.png'), Path('d/ir/x.png'))
    evaluation = Evaluation([method('visible'), method('a'), method('b')], [pair],
                            metric_names=['EN', 'LOE', 'brightness'])
    for name, en, loe in (('visible', 9.0, 0.0), ('a', 6.0, 300.0), ('b', 7.0, 500.0)):
        evaluation.rows.append({'method': name, 'dataset': 'd', 'image': 'x', 'night': True,
                                'fuse_ms': 1.0, 'EN': en, 'LOE': loe, 'brightness': en})
    # The visible input has the highest EN and the lowest LOE but is never 'best'.
    assert best_methods(evaluation, 'EN') == {'b'}
    assert best_methods(evaluation, 'LOE') == {'a'}
    assert best_methods(evaluation, 'brightness') == set()  # neither direction is better
    table = markdown_table(evaluation, with_std=False)
    assert '| b | 1 | **7.000** | 500.0 | 7.0 |' in table
    assert '| a | 1 | 6.000 | **300.0** | 6.0 |' in table


@pytest.mark.parametrize('case', ['tiny_images', 'output_is_a_file', 'negative_examples'])
def test_bad_eval_input_is_one_clear_line_and_exit_2(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / 'data'
    for sub, channels in (('vi', 3), ('ir', 1)):
        (data / sub).mkdir(parents=True)
        size = 1 if case == 'tiny_images' else 32
        shape = (size, size, channels) if channels == 3 else (size, size)
        cv2.imwrite(str(data / sub / 'a.png'), np.full(shape, 40, np.uint8))
    output = tmp_path / 'report'
    args = [str(data), '-m', 'max', '--no-progress', '-o', str(output)]
    if case == 'output_is_a_file':
        output.write_text('not a folder')
    if case == 'negative_examples':
        args += ['--examples', '-3']
    if case == 'tiny_images':
        assert main(args) == 2
    else:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error and 'error' in error[-1] and 'Traceback' not in '\n'.join(error)
