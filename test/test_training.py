"""Training: frozen parts stay frozen, checkpoints/resume, logs and plots, the ivf-train CLI."""

from __future__ import annotations

from collections.abc import Callable
import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ivf_ros.cli.train import main as train_main
from ivf_ros.evaluation.plots import GAUGES
from ivf_ros.fusion.inference import save_weights
from ivf_ros.fusion.model import IVFNet, ModelConfig
from ivf_ros.io.datasets import list_pairs
from ivf_ros.io.synthetic import make_night_pair
from ivf_ros.training import trainer as trainer_module
from ivf_ros.training.config import load_config, StageConfig, TrainConfig, TrainingConfigError
from ivf_ros.training.teacher import rectangles_mask
from ivf_ros.training.trainer import (
    crop_boxes,
    gate_gauges,
    log_writer,
    PairBank,
    teacher_classes,
    Trainer,
    truncate_log,
)

SMALL_MODEL = {'channels': [8, 8, 12, 16]}
# Every term of stages 1 and 2 weighted, as a config must (YAML flow mappings).
STAGE1_LOSSES = '{exposure: 1, colour: 1, smoothness: 1, spatial: 1, noise: 1, render: 1}'
STAGE2_LOSSES = '{l1: 1, ssim: 1, gradient: 1}'
REPO = Path(__file__).resolve().parents[1]


def tiny_config(steps: int = 2) -> TrainConfig:
    def stage(losses: dict[str, float]) -> StageConfig:
        return StageConfig(steps=steps, batch=2, lr=1e-3, warmup=1, losses=losses)

    return TrainConfig(seed=0, crop=32, checkpoint_every=1, log_every=1, model=SMALL_MODEL,
                       stages={
                           1: stage({'exposure': 10, 'colour': 5, 'smoothness': 100,
                                     'spatial': 1, 'noise': 1, 'render': 1}),
                           2: stage({'l1': 1, 'ssim': 1, 'gradient': 1}),
                           3: stage({'intensity': 1, 'texture': 1, 'colour': 1, 'ssim': 1})})


def tiny_bank() -> PairBank:
    pairs = [make_night_pair(seed=s, width=48, height=40) for s in range(2)]
    return PairBank.from_arrays([(p.visible, p.infrared) for p in pairs], torch.device('cpu'),
                                crop=32)


def test_sampled_boxes_follow_their_objects_through_crops_and_flips() -> None:
    # A bright square on a dark frame, labelled; a second frame unlabelled.
    visible = np.full((48, 64, 3), 10, np.uint8)
    visible[10:30, 20:36] = 250
    infrared = visible[..., 0].copy()
    boxes = np.array([[0, 20, 10, 36, 30], [1, 60, 40, 64, 48]], np.float64)  # 2nd: a corner
    bank = PairBank.from_arrays([(visible, infrared), (visible, infrared)], torch.device('cpu'),
                                crop=32, labels=[boxes, None])
    generator = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(40):
        crops, _, labels = bank.sample(4, generator, night_only=False)
        for crop, boxes_in_crop in zip(crops, labels, strict=True):
            if boxes_in_crop is None:
                continue
            for _, x1, y1, x2, y2 in boxes_in_crop.tolist():
                assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
            squares = boxes_in_crop[boxes_in_crop[:, 0] == 0, 1:]
            if len(squares):   # the box covers exactly the bright pixels of the crop
                assert torch.equal(rectangles_mask(squares, (32, 32)) > 0, crop[0] > 0.5)
                seen += 1
    assert seen > 10


def test_balanced_sampling_gives_each_dataset_a_share_growing_as_its_square_root() -> None:
    # Four frames of one dataset and one of another, told apart by their grey level.
    frames = [(np.full((32, 32, 3), level, np.uint8), np.full((32, 32), level, np.uint8))
              for level in (10, 20, 30, 40, 200)]
    bank = PairBank.from_arrays(frames, torch.device('cpu'), crop=32)
    bank.datasets = ['street'] * 4 + ['other']
    assert bank.pool_weights([0, 1, 2, 3, 4]).tolist() == [0.5] * 4 + [1.0]

    def other_share(balance: bool) -> float:
        generator = torch.Generator().manual_seed(0)
        crops = torch.cat([bank.sample(50, generator, night_only=False,
                                       balance_datasets=balance)[0] for _ in range(20)])
        return float((crops[:, 0, 0, 0] > 0.5).float().mean())

    assert abs(other_share(balance=True) - 1 / 3) < 0.05    # sqrt(1) / (sqrt(4) + sqrt(1))
    assert abs(other_share(balance=False) - 1 / 5) < 0.05   # one frame of five


def test_crop_boxes_leaves_out_slivers() -> None:
    boxes = torch.tensor([[0.0, 0, 0, 10, 10], [1.0, 28, 0, 40, 10]])   # the second: 4 of 12 px
    kept = crop_boxes(boxes, top=0, left=0, size=32)
    assert kept.tolist() == [[0.0, 0, 0, 10, 10]]
    shifted = crop_boxes(boxes, top=0, left=24, size=32)   # the 1st outside, the 2nd all in
    assert shifted.tolist() == [[1.0, 4, 0, 16, 10]]


def test_the_bank_reads_label_files_where_a_frame_has_one(tmp_path: Path) -> None:
    folder = tmp_path / 'pairs'
    rng = np.random.default_rng(0)
    for name in ('a', 'b'):   # 64 wide, 48 high: a swapped width and height would show
        for sub, shape in (('vi', (48, 64, 3)), ('ir', (48, 64))):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / sub / f'{name}.png'), rng.integers(0, 60, shape, np.uint8))
    (folder / 'labels').mkdir()
    # A person, and a class the teacher does not score (left out).
    (folder / 'labels' / 'a.txt').write_text('0 0.5 0.5 0.25 0.5\n5 0.5 0.5 0.1 0.1\n')
    bank = PairBank(list_pairs(folder), torch.device('cpu'), max_side=32, crop=24,
                    show_progress=False)
    assert sum(boxes is None for boxes in bank.labels) == 1
    boxes = next(b for b in bank.labels if b is not None)
    # Read at the held (downscaled 64x48 -> 32x24) size.
    assert boxes.tolist() == [[0.0, 12.0, 6.0, 20.0, 18.0]]


def test_label_classes_are_renumbered_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_module, 'TEACHER_CLASSES', ('bicycle', 'person'))
    targets = np.array([[0, 1, 1, 2, 2], [1, 3, 3, 4, 4], [2, 5, 5, 6, 6]], np.float64)
    assert teacher_classes(targets).tolist() == [[1, 1, 1, 2, 2], [0, 5, 5, 6, 6]]


def test_stage3_changes_only_the_fusion_block(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                      show_progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_stage(3)
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(name.startswith('fusion.') for name in changed)


def test_a_deeper_fusion_block_starts_stage3_from_a_shallower_stage2_file(
        tmp_path: Path) -> None:
    shallow = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                      show_progress=False)
    shallow.run([1, 2])
    deep_config = tiny_config()
    deep_config.model = SMALL_MODEL | {'fusion_depth': 3}
    deep = Trainer(deep_config, tiny_bank(), tmp_path / 'deep', torch.device('cpu'),
                   show_progress=False)
    seeded = {k: v.clone() for k, v in deep.model.state_dict().items() if k.startswith('fusion.')}
    deep.load_weights(tmp_path / 'stage2.pt', untrained_fusion=True)
    state, trained = deep.model.state_dict(), shallow.model.state_dict()
    assert all(torch.equal(state[k], trained[k]) for k in trained if not k.startswith('fusion.'))
    assert all(torch.equal(state[k], value) for k, value in seeded.items())
    # A fusion block of another layout is never silently replaced without untrained_fusion.
    with pytest.raises(trainer_module.CheckpointError, match='does not fit'):
        deep.load_weights(tmp_path / 'stage2.pt')


def test_stage3_from_a_finished_weights_file_equals_stage3_from_its_stage2(
        tmp_path: Path) -> None:
    # --start-from: a finished file (trained fusion block) hands stage 3 its stages 1 and 2 and
    # the seeded fusion block, so the run is the one that continues from stage2.pt.
    first = Trainer(tiny_config(), tiny_bank(), tmp_path / 'a', torch.device('cpu'),
                    show_progress=False)
    first.run([1, 2, 3])
    again = Trainer(tiny_config(), tiny_bank(), tmp_path / 'b', torch.device('cpu'),
                    show_progress=False)
    again.run([3], start_from=tmp_path / 'a' / 'stage3.pt')
    expected = torch.load(tmp_path / 'a' / 'stage3.pt', weights_only=True)['state_dict']
    result = torch.load(tmp_path / 'b' / 'stage3.pt', weights_only=True)['state_dict']
    assert all(torch.equal(expected[name], result[name]) for name in expected)
    assert not (tmp_path / 'b' / 'stage2.pt').exists()


def test_all_stages_write_logs_plots_weights_and_resume(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                      show_progress=False)
    trainer.run([1, 2])
    for name in ('stage1.pt', 'stage2.pt', 'stage1_log.csv', 'stage1_loss.png',
                 'checkpoint.pt'):
        assert (tmp_path / name).is_file(), name
    resumed = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                      show_progress=False)
    weights = resumed.run([1, 2, 3], resume=True)   # 1 and 2 are done: only 3 trains
    assert weights.name == 'stage3.pt' and resumed.completed == [1, 2, 3]
    with (tmp_path / 'stage3_log.csv').open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(0.0 <= float(row[name]) <= 1.0 for row in rows for name in GAUGES)
    assert (tmp_path / 'stage3_loss.png').is_file()


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
            show_progress=False).run([1])
    other_seed = tiny_config()
    other_seed.seed = 1
    with pytest.raises(trainer_module.CheckpointError, match='belongs to a run with another'):
        Trainer(other_seed, tiny_bank(), tmp_path, torch.device('cpu'),
                show_progress=False).run([1, 2], resume=True)
    # A fresh run drops the old checkpoint at once: killed before its own first one, it leaves
    # nothing that --resume would continue.
    fresh = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                    show_progress=False)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fresh, 'train_stage', killed)
    with pytest.raises(KeyboardInterrupt):
        fresh.run([1])
    assert not (tmp_path / 'checkpoint.pt').exists()


def test_a_stage_3_run_is_not_resumed_as_all_stages(tmp_path: Path) -> None:
    Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
            show_progress=False).run([1, 2])
    Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
            show_progress=False).run([3])   # its checkpoint marks stage 3 alone as done
    stage1 = (tmp_path / 'stage1.pt').read_bytes()
    # 'ivf-train --resume' (--stage all) retrained stage 1 from the stage 3 weights.
    with pytest.raises(trainer_module.CheckpointError, match='resume with --stage 3'):
        Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                show_progress=False).run([1, 2, 3], resume=True)
    assert (tmp_path / 'stage1.pt').read_bytes() == stage1
    weights = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                      show_progress=False).run([3], resume=True)
    assert weights == tmp_path / 'stage3.pt'


def test_a_stage_file_cut_short_is_a_clear_error(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                      show_progress=False)
    trainer.run([1])
    data = (tmp_path / 'stage1.pt').read_bytes()
    (tmp_path / 'stage1.pt').write_bytes(data[:len(data) // 2])
    later = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                    show_progress=False)
    with pytest.raises(trainer_module.CheckpointError, match='cannot read .*stage1.pt'):
        later.run([2])


def test_a_resumed_stage_logs_each_step_once(tmp_path: Path) -> None:
    log = tmp_path / 'stage1_log.csv'
    log.write_text('step,total\n1,0.9\n2,0.8\n3,0.7\n')   # killed after step 3, checkpoint 2
    truncate_log(log, 2)
    assert log.read_text().splitlines() == ['step,total', '1,0.9', '2,0.8']
    truncate_log(tmp_path / 'absent.csv', 2)   # nothing logged yet: nothing to do
    log.write_text('step,total\n1,0.9\nx,0.8\n')    # edited by hand, or cut mid-row
    with pytest.raises(trainer_module.CheckpointError, match='step cell is not a number'):
        truncate_log(log, 2)
    assert log.read_text() == 'step,total\n1,0.9\nx,0.8\n' and not list(tmp_path.glob('*.tmp'))


def test_gate_gauges_read_the_infrared_share_and_the_saturated_cells() -> None:
    logits = torch.tensor([0.0, 0.0, 20.0, -20.0]).view(1, 1, 2, 2)
    gauges = gate_gauges(logits)
    assert set(gauges) == set(GAUGES)
    assert gauges['gate_w'] == pytest.approx(0.5) and gauges['gate_saturated'] == 0.5


def test_a_resumed_log_keeps_every_value_under_its_own_header(tmp_path: Path) -> None:
    log = tmp_path / 'stage3_log.csv'
    log.write_text('step,total,lr\n10,1.0,0.002\n')   # written before the gauges existed
    with log.open('a', newline='') as handle:
        log_writer(handle, log, ['step', 'total', 'gate_w', 'lr']).writerow(
            {'step': 20, 'total': 0.5, 'gate_w': 0.7, 'lr': 0.001})
    with log.open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[1] == {'step': '20', 'total': '0.5', 'lr': '0.001'}
    fresh = tmp_path / 'fresh.csv'
    with fresh.open('a', newline='') as handle:
        log_writer(handle, fresh, ['step', 'gate_w']).writerow({'step': 1, 'gate_w': 0.5})
    assert fresh.read_text().splitlines() == ['step,gate_w', '1,0.5']


def test_a_stage_that_ends_saturated_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    trainer = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                      show_progress=False)
    trainer.train_stage(3)
    assert 'saturated' not in capsys.readouterr().err   # a fresh gate decides
    monkeypatch.setattr(trainer_module, 'SATURATED_LOGIT', -1.0)   # every cell counts
    trainer.train_stage(3)
    assert 'of the working-grid gate is saturated' in capsys.readouterr().err
    # The max rule's logits are +-30 by design: only a learned gate is gauged and warned about.
    assert ModelConfig().learned_gate and not ModelConfig(gate='max').learned_gate
    assert not ModelConfig(gate='constant').learned_gate
    assert not ModelConfig(adaptive_weights=False).learned_gate


def test_same_seed_same_weights(tmp_path: Path) -> None:
    states = []
    for run in range(2):
        trainer = Trainer(tiny_config(), tiny_bank(), tmp_path / str(run), torch.device('cpu'),
                          show_progress=False)
        trainer.train_stage(1)
        states.append(trainer.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_cli_trains_on_a_paired_folder(tmp_path: Path) -> None:
    folder = tmp_path / 'pairs'
    for sub in ('vi', 'ir'):
        (folder / sub).mkdir(parents=True)
    for seed in range(2):
        pair = make_night_pair(seed=seed, width=48, height=40)
        cv2.imwrite(str(folder / 'vi' / f'{seed}.png'), pair.visible[..., ::-1])
        cv2.imwrite(str(folder / 'ir' / f'{seed}.png'), pair.infrared)
    config = tmp_path / 'train.yaml'
    config.write_text(
        'seed: 0\ncrop: 32\ncheckpoint_every: 1\nlog_every: 1\n'
        f'model: {{channels: {SMALL_MODEL["channels"]}}}\nstages:\n'
        '  1: {steps: 1, batch: 1, lr: 0.001, losses: {exposure: 1, colour: 1, smoothness: 1,'
        ' spatial: 1, noise: 1, render: 1}}\n'
        '  2: {steps: 1, batch: 1, lr: 0.001, losses: {l1: 1, ssim: 1, gradient: 1}}\n'
        '  3: {steps: 1, batch: 1, lr: 0.001, losses: {intensity: 1, texture: 1, colour: 1,'
        ' ssim: 1}}\n')
    export = tmp_path / 'out.pt'
    code = train_main(['--stage', 'all', '--data', str(folder), '--config', str(config),
                       '--output', str(tmp_path / 'run'), '--device', 'cpu', '--no-progress',
                       '--export', str(export)])
    assert code == 0 and export.is_file()
    saved = torch.load(export, weights_only=True)
    assert torch.isfinite(saved['state_dict']['fusion.detail_gain']).all()
    # What a bit-for-bit rerun needs besides the seed is stored with the weights.
    assert saved['meta']['seed'] == 0 and saved['meta']['device'] == 'cpu'
    assert saved['meta']['cpu_threads'] == torch.get_num_threads()


def test_config_errors_are_named(tmp_path: Path) -> None:
    bad = tmp_path / 'bad.yaml'
    bad.write_text(f'stages: {{1: {{steps: 1, batch: 1, lr: 0.1, losses: {STAGE1_LOSSES}}}}}\n')
    with pytest.raises(TrainingConfigError, match='stage 2 is missing'):
        load_config(bad)
    bad.write_text(f'stages: {{1: {{steps: 1, batch: 1, lr: 0.1, losses: {STAGE1_LOSSES}}},\n'
                   f'         2: {{steps: 1, batch: 1, lr: 0.1, losses: {STAGE2_LOSSES}}},\n'
                   '         3: {steps: 1, batch: 1, lr: 0.1, losses: {intensity: 1}}}\n'
                   'model: {local_contrast: -0.3}\n')
    with pytest.raises(TrainingConfigError, match='model: local_contrast'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('local_contrast: -0.3', 'local_contrst: 0.3'))
    with pytest.raises(TrainingConfigError, match='unknown key.*local_contrst'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('model: {local_contrst: 0.3}', 'model: [16, 24]'))
    with pytest.raises(TrainingConfigError, match='model: must be a mapping'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('model: [16, 24]', 'model:'))
    assert load_config(bad).model == {}
    bad.write_text(bad.read_text().replace('3: {steps: 1,', '3: {salience_on: boxes, steps: 1,'))
    with pytest.raises(TrainingConfigError, match='stage 3: salience_on must be one of'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('salience_on: boxes', 'gate_logit_bound: 0'))
    with pytest.raises(TrainingConfigError, match='stage 3: gate_logit_bound must be above 0'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('gate_logit_bound: 0', 'use_labels: 1'))
    with pytest.raises(TrainingConfigError, match='stage 3: use_labels must be true or false'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('3: {use_labels: 1,', '3: {')
                   .replace('1: {steps: 1,', '1: {use_labels: true, steps: 1,'))
    with pytest.raises(TrainingConfigError, match='stage 1: use_labels is for stage 3'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('1: {use_labels: true, steps: 1,',
                                           '1: {balance_datasets: yes please, steps: 1,'))
    with pytest.raises(TrainingConfigError, match='stage 1: balance_datasets must be true or'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('1: {balance_datasets: yes please, steps: 1,',
                                           '1: {steps: 1,')
                   .replace('losses: {intensity: 1}}}', 'losses: {gate_bound: 1}}}')
                   .replace('model:', 'model: {gate: constant}'))
    with pytest.raises(TrainingConfigError, match='gate_bound needs the learned gate'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('{gate_bound: 1}', '{source: 1}'))
    with pytest.raises(TrainingConfigError, match='source needs the learned gate'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('3: {', '3: {source_on: visible, '))
    with pytest.raises(TrainingConfigError, match='stage 3: source_on must be one of both, '
                       'infrared'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('3: {source_on: visible, ', '3: {')
                   .replace('{source: 1}', '{textur: 1}'))
    with pytest.raises(TrainingConfigError, match=r"stage 3: unknown loss terms \['textur'\]"):
        load_config(bad)
    bad.write_text(bad.read_text().replace('{textur: 1}', '{texture: -1}'))
    with pytest.raises(TrainingConfigError, match='stage 3: the weight of texture must be'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('{texture: -1}', '{intensity: 1}').replace(
        '2: {steps: 1, batch: 1,', '2: {steps: 0, batch: 1,'))
    with pytest.raises(TrainingConfigError, match='stage 2: steps must be an integer >= 1'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('2: {steps: 0,', '2: {steps: 1,')
                   + 'log_every: 0\n')
    with pytest.raises(TrainingConfigError, match='log_every must be an integer >= 1'):
        load_config(bad)
    bad.write_text(bad.read_text().replace('log_every: 0\n', '').replace(
        '2: {steps: 1, batch: 1, lr: 0.1,', '2: {steps: 1, batch: 1, lr: 1e-3,'))
    with pytest.raises(TrainingConfigError, match='reads 1e-3 as text: write 0.001'):
        load_config(bad)
    bad.write_text('stages:\n')
    with pytest.raises(TrainingConfigError, match='expected a mapping with a stages'):
        load_config(bad)


def valid_config() -> dict:
    """Return a tiny config that loads, as a dict to write with yaml.safe_dump."""
    def stage(losses: str) -> dict:
        return {'steps': 1, 'batch': 1, 'lr': 0.001, 'losses': yaml.safe_load(losses)}

    return {'seed': 0, 'crop': 32, 'checkpoint_every': 1, 'log_every': 1,
            'model': dict(SMALL_MODEL),
            'stages': {1: stage(STAGE1_LOSSES), 2: stage(STAGE2_LOSSES),
                       3: stage('{intensity: 1, texture: 1}')}}


CONFIG_CASES = [
    ('nan_weight', lambda c: c['stages'][1]['losses'].update(exposure=float('nan')),
     'stage 1: the weight of exposure must be a finite number >= 0, got nan'),
    ('inf_lr', lambda c: c['stages'][2].update(lr=float('inf')),
     'stage 2: lr must be a finite number above 0, got inf'),
    ('exposure_text', lambda c: c['stages'][1].update(exposure_level='bright'),
     r'stage 1: exposure_level must be a number in \[0, 1\]'),
    ('detector_number', lambda c: c.update(detector=5), 'detector must be a file path or null'),
    ('stage_4', lambda c: c['stages'].update({4: c['stages'][3]}),
     r'stages: unknown stage\(s\) 4 \(the stages are 1, 2, 3\)'),
    ('stage_twice', lambda c: c['stages'].update({'1': c['stages'][1]}),
     'stages: stage 1 is given twice'),
    ('top_typo', lambda c: c.update(chekpoint_every=1),
     r'unknown key\(s\) chekpoint_every \(known: seed'),
    ('stage_typo', lambda c: c['stages'][3].update(warmpu=1),
     r'stage 3: unknown key\(s\) warmpu \(known: steps'),
    ('model_number_key', lambda c: c['model'].update({1: 2}), r'model: unknown key\(s\) 1'),
    ('unweighted_term', lambda c: c['stages'][2]['losses'].pop('gradient'),
     'stage 2: losses has no weight for gradient'),
    ('no_stage3_term', lambda c: c['stages'][3].update(losses={}),
     'stage 3: losses must give at least one term a weight above 0'),
    ('zero_weights', lambda c: c['stages'][3].update(losses={'intensity': 0}),
     'stage 3: losses must give at least one term a weight above 0'),
    ('seed_too_large', lambda c: c.update(seed=2**64),
     r'seed must be an integer in \[0, 4294967295\]'),
]


@pytest.mark.parametrize('case, change, expected', CONFIG_CASES,
                         ids=[case for case, _, _ in CONFIG_CASES])
def test_config_values_that_would_fail_or_spoil_training_are_named(
        tmp_path: Path, case: str, change: Callable[[dict], object], expected: str) -> None:
    # Each of these was accepted: NaN/inf trained NaN weights, text or a number where a path
    # belongs failed mid-training with a traceback, an unweighted stage 2 term stopped the run
    # after stage 1 had trained, stage 3 without weighted terms raised StopIteration, and a
    # misspelt key or a stage 4 was ignored.
    config = valid_config()
    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert load_config(path).stages[3].losses == {'intensity': 1, 'texture': 1}
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(TrainingConfigError, match=expected):
        load_config(path)


def test_a_key_given_twice_in_the_config_is_named(tmp_path: Path) -> None:
    # A 'steps: 500' added above a forgotten 'steps: 2000' was silently overruled by it.
    path = tmp_path / 'train.yaml'
    text = (REPO / 'config' / 'train.yaml').read_text()
    assert '    steps: 2000\n' in text
    path.write_text(text.replace('    steps: 2000\n', '    steps: 500\n    steps: 2000\n'))
    with pytest.raises(TrainingConfigError, match="found the key 'steps' twice"):
        load_config(path)
    assert load_config(REPO / 'config' / 'train.yaml').stages[3].steps == 2000


def test_a_config_without_enhancement_weights_only_the_render_term(tmp_path: Path) -> None:
    # Without the tone curve stage 1 computes the render term alone (scripts/ablations.py).
    config = valid_config()
    config['model']['enhance'] = False
    config['stages'][1]['losses'] = {'render': 1.0}
    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert load_config(path).stages[1].losses == {'render': 1.0}
    config['model']['enhance'] = True
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(TrainingConfigError, match='stage 1: losses has no weight for exposure'):
        load_config(path)


def test_a_foreign_stage_file_is_a_clear_short_error(tmp_path: Path) -> None:
    first = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                    show_progress=False)
    first.run([1, 2])
    state = torch.load(tmp_path / 'stage2.pt', weights_only=True)
    later = Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
                    show_progress=False)
    torch.save({'state_dict': 'not tensors'}, tmp_path / 'stage2.pt')
    with pytest.raises(trainer_module.CheckpointError, match='stage2.pt is not an ivf_ros'):
        later.run([3])
    # One tensor missing, one extra: named, not every key of the network on one line.
    removed = next(iter(state['state_dict']))
    state['state_dict'].pop(removed)
    state['state_dict']['extra.weight'] = torch.zeros(1)
    torch.save(state, tmp_path / 'stage2.pt')
    with pytest.raises(trainer_module.CheckpointError) as error:
        later.run([3])
    message = str(error.value)
    assert f'1 missing ({removed}); 1 unexpected (extra.weight)' in message
    assert len(message) < 300, message


def test_a_stage_file_of_other_model_settings_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(tiny_config(), tiny_bank(), tmp_path, torch.device('cpu'),
            show_progress=False).run([1])
    capsys.readouterr()
    other = tiny_config()
    other.model = SMALL_MODEL | {'downscale': 8}   # same layers: it would load silently
    Trainer(other, tiny_bank(), tmp_path, torch.device('cpu'), show_progress=False).run([2])
    error = capsys.readouterr().err
    assert 'stage1.pt was trained with other model settings' in error
    assert 'downscale 4 -> 8' in error


def test_train_help_gives_each_default_once() -> None:
    from ivf_ros.cli.train import build_parser

    text = ' '.join(build_parser().format_help().split())
    # '--config ... (default: the package config/train.yaml) (default: None)' contradicted itself.
    assert '(default: None)' not in text and '(default: False)' not in text
    assert '(default: runs/train)' in text and '(default: the package config/train.yaml)' in text


def write_pair(folder: Path, name: str, size: int = 64, visible_name: str | None = None) -> None:
    (folder / 'vi').mkdir(parents=True, exist_ok=True)
    (folder / 'ir').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / 'vi' / f'{visible_name or name}.png'),
                rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / 'ir' / f'{name}.png'),
                rng.integers(0, 255, (size, size), dtype=np.uint8))


@pytest.mark.parametrize('case', ['empty', 'mismatched', 'corrupt', 'tiny', 'bad_config',
                                  'resume_without_checkpoint', 'corrupt_checkpoint',
                                  'start_from_stage_1', 'start_from_stage_all',
                                  'start_from_resume', 'start_from_missing',
                                  'start_from_not_weights', 'start_from_other_network',
                                  'missing_teacher', 'bad_steps_scale', 'bad_seed'])
def test_bad_training_input_is_one_clear_line_and_exit_2(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    data, output = tmp_path / 'data', tmp_path / 'run'
    args = ['--data', str(data), '--output', str(output), '--stage', '1', '--no-progress',
            '--steps-scale', '0.001', '--device', 'cpu']
    expected = {'empty': 'no training pairs', 'mismatched': 'names do not match',
                'corrupt': 'cannot read image', 'tiny': 'at least 32 px',
                'bad_config': 'cannot read training config',
                'resume_without_checkpoint': 'no checkpoint at',
                'corrupt_checkpoint': 'cannot resume from',
                'start_from_stage_1': '--start-from needs --stage 3',
                'start_from_stage_all': '--start-from needs --stage 3',
                'start_from_resume': 'drop it to --resume',
                'start_from_missing': 'fusion weights not found',
                'start_from_not_weights': 'cannot read fusion weights',
                'start_from_other_network': "does not fit this run's network",
                'missing_teacher': "stage 3's detector",
                'bad_steps_scale': '--steps-scale must be a finite number above 0',
                'bad_seed': '--seed must be an integer in [0, 4294967295]'}[case]
    data.mkdir()
    if case == 'mismatched':
        write_pair(data, 'a', visible_name='b')
    elif case == 'corrupt':
        write_pair(data, 'a')
        (data / 'vi' / 'a.png').write_bytes(b'not a png')
    elif case == 'tiny':
        write_pair(data, 'a', size=4)
    elif case != 'empty':
        write_pair(data, 'a')
    if case == 'bad_steps_scale':   # was an OverflowError traceback
        args[args.index('--steps-scale') + 1] = 'inf'
    if case == 'bad_seed':          # was accepted, though the config refuses a negative seed
        args += ['--seed', '-1']
    if case == 'bad_config':
        (tmp_path / 'bad.yaml').write_text('stages: [\n')
        args += ['--config', str(tmp_path / 'bad.yaml')]
    if case in ('resume_without_checkpoint', 'corrupt_checkpoint'):
        args.append('--resume')
    if case == 'corrupt_checkpoint':
        output.mkdir()
        (output / 'checkpoint.pt').write_bytes(b'\x80\x04 truncated')
    if case.startswith('start_from') or case == 'missing_teacher':
        # The shipped config with its teacher elsewhere: absent, or a file that is there (the
        # --start-from errors come before the teacher is loaded, with or without ../shared).
        config = yaml.safe_load((REPO / 'config' / 'train.yaml').read_text())
        config['detector'] = str(tmp_path / 'teacher.pt')
        if case != 'missing_teacher':
            (tmp_path / 'teacher.pt').write_bytes(b'')
        (tmp_path / 'train.yaml').write_text(yaml.safe_dump(config))
        args += ['--config', str(tmp_path / 'train.yaml')]
        args[args.index('--stage') + 1] = '3'
    if case.startswith('start_from'):
        weights = tmp_path / 'weights.pt'
        if case == 'start_from_not_weights':
            weights.write_bytes(b'\x80\x04 truncated')
        elif case == 'start_from_other_network':   # narrower than the default config's
            save_weights(IVFNet(ModelConfig(channels=[4, 4, 4, 4])), weights)
        args += ['--start-from', str(weights)]
        stage = {'start_from_stage_1': '1', 'start_from_stage_all': 'all'}.get(case, '3')
        args[args.index('--stage') + 1] = stage
        if case == 'start_from_resume':
            args.append('--resume')
    assert train_main(args) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error and len(error.splitlines()) == 1, error
