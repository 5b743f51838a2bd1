"""ivf-eval end to end on a tiny synthetic paired folder: report, CSVs, PNGs and errors."""

from __future__ import annotations

import csv
import math
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
        return Method(name, 'baseline', lambda pair, visible, infrared: visible,
                      is_input=name == 'visible')

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


def _evaluation_of(methods: list, rows: list[tuple[str, dict[str, float]]],
                   metric_names: list[str]) -> object:
    """Return an Evaluation of one pair whose rows hold the given metric values per method."""
    from ivf_ros.evaluation.report import Evaluation
    from ivf_ros.io.datasets import PairedImage

    pair = PairedImage('x', Path('d/vi/x.png'), Path('d/ir/x.png'))
    evaluation = Evaluation(methods, [pair], metric_names=metric_names)
    for name, values in rows:
        evaluation.rows.append({'method': name, 'dataset': 'd', 'image': 'x', 'night': True,
                                'fuse_ms': 1.0, **values})
    return evaluation


def test_an_infinite_psnr_is_counted_not_a_column_of_inf() -> None:
    # PSNR is inf where visible, infrared and fused are equal (one black frame of a bag): that
    # image must neither make every mean 'inf' nor drop the method out of the best marks.
    from ivf_ros.evaluation.report import best_methods, Evaluation, markdown_table, resolve_method
    from ivf_ros.io.datasets import PairedImage

    pairs = [PairedImage(name, Path(f'd/vi/{name}.png'), Path(f'd/ir/{name}.png'))
             for name in ('black', 'x', 'y')]
    methods = [resolve_method(name) for name in ('visible', 'average', 'max')]
    evaluation = Evaluation(methods, pairs, metric_names=['PSNR'])
    for name, values in (('visible', (math.inf, math.inf, math.inf)),
                         ('average', (math.inf, 30.0, 20.0)), ('max', (40.0, 30.0, 40.0))):
        for pair, value in zip(pairs, values, strict=True):
            evaluation.rows.append({'method': name, 'dataset': 'd', 'image': pair.name,
                                    'night': True, 'fuse_ms': 1.0, 'PSNR': value})
    assert best_methods(evaluation, 'PSNR') == {'average'}   # one +inf image ranks first
    table = markdown_table(evaluation)
    assert '| average | 3 | **25.00 ± 5.00 (1 +inf)** |' in table
    assert '| max | 3 | 36.67 ± 4.71 |' in table
    assert '| visible | 3 | n/a (3 +inf) |' in table
    # Where lower is better, a method without any finite value is not 'best' either.
    noise = Evaluation(methods, pairs[:2], metric_names=['noise'])
    for name, values in (('average', (math.inf, math.nan)), ('max', (math.inf, 0.01))):
        for pair, value in zip(pairs[:2], values, strict=True):
            noise.rows.append({'method': name, 'dataset': 'd', 'image': pair.name,
                               'night': True, 'fuse_ms': 1.0, 'noise': value})
    assert best_methods(noise, 'noise') == {'max'}


def test_the_inputs_are_known_by_their_baseline_not_their_label() -> None:
    from ivf_ros.evaluation.report import best_methods, resolve_method

    # 'vi=visible' is still the visible input (never best); 'visible=max' is a fusion method.
    methods = [resolve_method('vi=visible'), resolve_method('visible=max')]
    evaluation = _evaluation_of(methods, [('vi', {'EN': 9.0}), ('visible', {'EN': 6.0})], ['EN'])
    assert best_methods(evaluation, 'EN') == {'visible'}


def test_a_rerun_without_figures_leaves_no_stale_png(pairs_root: Path, tmp_path: Path) -> None:
    output = tmp_path / 'rerun'
    args = [str(pairs_root / 'msrs'), '-m', 'max', '--metrics', 'EN', '-o', str(output),
            '--no-progress']
    assert main(args) == 0 and (output / 'grid.png').is_file()
    assert main(args + ['--examples', '0']) == 0
    assert not (output / 'grid.png').exists() and (output / 'metrics.png').is_file()
    assert main(args + ['--no-figures']) == 0
    assert not (output / 'metrics.png').exists()


def test_help_shows_no_none_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from ivf_ros.cli.eval_detection import build_parser as detect_parser

    for parser in (__import__('ivf_ros.cli.eval', fromlist=['x']).build_parser(),
                   detect_parser()):
        text = ' '.join(parser.format_help().split())
        assert '(default: None)' not in text and '(default: False)' not in text, parser.prog
    text = ' '.join(__import__('ivf_ros.cli.eval', fromlist=['x']).build_parser()
                    .format_help().split())
    assert '(default: output/eval)' in text   # the real defaults are still shown


def test_a_repeated_metric_is_one_column(pairs_root: Path, tmp_path: Path) -> None:
    output = tmp_path / 'repeated'
    assert main([str(pairs_root / 'msrs'), '-m', 'max', '--metrics', 'EN', 'SD', 'EN',
                 '-o', str(output), '--no-progress', '--no-figures']) == 0
    with (output / 'per_image.csv').open() as stream:
        assert next(csv.reader(stream)) == ['method', 'dataset', 'image', 'night', 'fuse_ms',
                                            'EN', 'SD']


def test_a_resized_infrared_image_is_reported(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    for sub in ('vi', 'ir'):
        (data / sub).mkdir(parents=True)
    pair = make_night_pair(seed=0, width=64, height=48)
    cv2.imwrite(str(data / 'vi' / 'a.png'), pair.visible[..., ::-1])
    cv2.imwrite(str(data / 'ir' / 'a.png'), cv2.resize(pair.infrared, (32, 24)))
    cv2.imwrite(str(data / 'vi' / 'b.png'), pair.visible[..., ::-1])
    cv2.imwrite(str(data / 'ir' / 'b.png'), pair.infrared)
    output = tmp_path / 'report'
    assert main([str(data), '-m', 'max', '--metrics', 'EN', '-o', str(output),
                 '--no-progress', '--no-figures']) == 0
    assert '1 pair with the infrared image resized to the visible size: data/a' in (
        output / 'report.md').read_text()


def test_grid_rows_follow_each_row_aspect_and_long_titles_wrap(tmp_path: Path) -> None:
    from ivf_ros.evaluation import plots

    landscape = np.full((30, 60, 3), 200, np.uint8)
    portrait = np.full((90, 30), 100, np.uint8)
    names = ['a_rather_long_method_name_that_would_overlap', 'b']
    path = tmp_path / 'grid.png'
    plots.save_image_grid([('wide', [landscape, landscape]), ('tall', [portrait, landscape])],
                          names, path)
    grid = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    # The tall row is three cell widths high, so its portrait image keeps its full width.
    columns = np.flatnonzero((grid == 100).any(axis=0))
    assert columns.size > 0.9 * plots.GRID_IMAGE_WIDTH * 30 / 90
    # Titles longer than a cell break into lines instead of running into the next column.
    wrapped = plots.wrap_label(names[0], plots.GRID_TITLE_CHARS).splitlines()
    assert len(wrapped) == 2 and max(map(len, wrapped)) <= plots.GRID_TITLE_CHARS


def test_bar_chart_marks_non_finite_means(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ivf_ros.evaluation import plots

    written: list[str] = []
    plt = plots.pyplot()
    original = plt.Axes.text

    def text(self: object, x: float, y: float, s: str, *args: object, **kwargs: object) -> object:
        written.append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(plt.Axes, 'text', text)
    plots.save_bar_chart({'PSNR': {'a': [math.inf], 'b': [20.0], 'c': [math.nan],
                                   'd': [math.inf, 10.0]}}, tmp_path / 'bars.png')
    assert written == ['1 +inf', '1 nan', '1 +inf']


def test_a_method_that_rejects_a_pair_is_a_clear_error(pairs_root: Path) -> None:
    # The network's FusionInputError ('image too small') is a ValueError: name method and pair.
    from ivf_ros.evaluation.baselines import FusionInputError
    from ivf_ros.evaluation.report import evaluate_methods, Method, MethodError

    def fuse(pair: object, visible: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        raise FusionInputError('image too small: (1, 9)')

    with pytest.raises(MethodError, match=r'method net on msrs/00001N: image too small'):
        evaluate_methods(list_pairs(pairs_root / 'msrs'), [Method('net', 'model', fuse)],
                         progress=False)


def test_bar_chart_shows_shares_in_percent_as_the_table(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    from ivf_ros.evaluation import plots, report

    seen: dict[str, object] = {}
    monkeypatch.setattr(plots, 'save_bar_chart',
                        lambda values, path, titles, suptitle: seen.update(values=values,
                                                                           titles=titles))
    methods = [report.resolve_method('max')]
    evaluation = _evaluation_of(methods, [('max', {'clipped': 0.015, 'EN': 6.0})],
                                ['clipped', 'EN'])
    report.save_bar_chart(evaluation, tmp_path / 'bars.png')
    assert list(seen['values']['clipped']['max']) == [1.5]   # the table's 1.50%
    assert list(seen['values']['EN']['max']) == [6.0]
    assert seen['titles']['clipped'] == 'clipped % ↓'


def test_an_unreadable_pair_is_left_out_named_and_counted(pairs_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    import shutil

    root = tmp_path / 'data'
    shutil.copytree(pairs_root, root)
    broken = root / 'msrs' / 'ir' / f'{NAMES[1]}.png'
    broken.write_bytes(b'\x89PNG\r\n\x1a\n truncated')   # a PNG cut off after its signature
    output = tmp_path / 'report'
    assert main([str(root), '-m', 'max', '-o', str(output), '--no-progress',
                 '--no-figures']) == 0
    assert f'warning: pair msrs/{NAMES[1]} left out: cannot read image' in capsys.readouterr().err
    report = (output / 'report.md').read_text()
    assert f'{len(NAMES) - 1} pairs (msrs {len(NAMES) - 1})' in report
    assert f'1 pair left out (an image could not be read):\n\n- msrs/{NAMES[1]}: ' in report
    images = {row['image'] for row in _rows(output / 'per_image.csv')}
    assert images == set(NAMES) - {NAMES[1]}
    # Nothing readable at all is still an error, not an empty report.
    for name in NAMES:
        (root / 'msrs' / 'vi' / f'{name}.png').write_bytes(b'not an image')
    assert main([str(root), '-m', 'max', '-o', str(output), '--no-progress']) == 2
    assert 'none of the 3 pairs could be read' in capsys.readouterr().err


@pytest.mark.parametrize('arguments', [['detect', '--imgsz', '0'], ['--detector-imgsz', '100']])
def test_a_detector_size_the_node_refuses_is_refused_here(
        arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # --imgsz 0 ran and reported AP 0 for every input; the node's range applies.
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    assert "parameter 'imgsz'" in capsys.readouterr().err
