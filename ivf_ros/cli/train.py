"""ivf-train: three-stage training of the fusion network on paired visible/infrared folders."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
import shutil
import sys
import time

import torch

from ivf_ros.cli.help import DefaultsHelpFormatter
from ivf_ros.fusion.inference import ModelLoadError, resolve_device
from ivf_ros.io.datasets import all_pairs, DatasetError, is_validation, list_pairs, PairedImage
from ivf_ros.io.paths import datasets_dir, share_file
from ivf_ros.pipeline.detector import DetectorLoadError
from ivf_ros.training.config import check_seed, load_config, STAGES, TrainingConfigError
from ivf_ros.training.trainer import (
    CheckpointError,
    detector_path,
    needs_teacher,
    PairBank,
    Trainer,
)


def gather_pairs(folders: list[Path]) -> list[PairedImage]:
    """Pairs of paired folders (vi/ + ir/) or roots of them; the validation split is excluded."""
    pairs: list[PairedImage] = []
    for folder in folders:
        found = list_pairs(folder) if (folder / 'vi').is_dir() else all_pairs(folder)
        pairs.extend(pair for pair in found if not is_validation(pair))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog='ivf-train', description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--stage', default='all', choices=['1', '2', '3', 'all'],
                        help='stage to train (2 and 3 start from the previous stage weights, '
                             '3 from --start-from if given)')
    parser.add_argument('--data', type=Path, nargs='+', default=None,
                        help='paired folders or roots of them (default: ../shared/datasets, '
                             'training split; the validation split is always held out)')
    parser.add_argument('--config', type=Path, default=None,
                        help='training config (default: the package config/train.yaml)')
    parser.add_argument('--output', type=Path, default=Path('runs/train'),
                        help='folder for checkpoints, CSV logs, loss plots and weights')
    parser.add_argument('--device', default='auto', help='auto, cpu or cuda:N')
    parser.add_argument('--seed', type=int, default=None, help='override the config seed')
    parser.add_argument('--steps-scale', type=float, default=1.0,
                        help='multiply every stage length (quick trials: 0.1)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from OUTPUT/checkpoint.pt')
    parser.add_argument('--start-from', type=Path, default=None, metavar='WEIGHTS',
                        help="--stage 3 starts from this weights file's stages 1 and 2 (e.g. "
                             'the shipped models/ivf_fusion.pt) instead of OUTPUT/stage2.pt, '
                             'with the seeded fusion block that stage 2 would hand over')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bars')
    parser.add_argument('--export', type=Path, default=None,
                        help='copy the final weights here (e.g. models/ivf_fusion.pt)')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ivf-train: one clear line and exit 2 for bad data, config or checkpoint."""
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except (DatasetError, TrainingConfigError, CheckpointError, ModelLoadError,
            DetectorLoadError, OSError, ValueError) as error:
        print(f'ivf-train: error: {" ".join(str(error).split())}', file=sys.stderr)
        return 2


def train(args: argparse.Namespace) -> int:
    """Train what args ask for; raise the errors main() reports."""
    # The flags are checked before any config or data is read.
    stages = list(STAGES) if args.stage == 'all' else [int(args.stage)]
    if args.start_from is not None and stages != [3]:
        raise ValueError('--start-from needs --stage 3 (stages 1 and 2 start from the seed)')
    if args.start_from is not None and args.resume:
        raise ValueError('--start-from starts stage 3 afresh; drop it to --resume from '
                         'OUTPUT/checkpoint.pt')
    if args.seed is not None:
        check_seed(args.seed, '--seed')
    if not (math.isfinite(args.steps_scale) and args.steps_scale > 0):
        # round() would fail on inf/nan, and a scale <= 0 would silently train 1 step a stage.
        raise ValueError(f'--steps-scale must be a finite number above 0, got {args.steps_scale}')
    config = load_config(args.config or share_file('config', 'train.yaml'))
    if args.seed is not None:
        config.seed = args.seed
    for stage_config in config.stages.values():
        stage_config.steps = max(1, round(stage_config.steps * args.steps_scale))
        stage_config.warmup = min(stage_config.warmup, stage_config.steps // 4 + 1)
    if 3 in stages and needs_teacher(config.stages[3]):
        # Stage 3's teacher is loaded when stage 3 starts: a missing file must fail now, not
        # after stages 1 and 2 have trained.
        if not config.detector:
            raise TrainingConfigError('stage 3 needs the frozen detector (detection or source '
                                      'term, detected salience) but the config names no '
                                      'detector')
        teacher_file = detector_path(config.detector)
        if not teacher_file.is_file():
            raise DetectorLoadError(f"stage 3's detector {teacher_file} is missing (the "
                                    "config's detector, relative to ../shared): put the COCO "
                                    'YOLO11n weights there or name another file')
    folders = args.data or [datasets_dir()]
    pairs = gather_pairs(folders)
    if not pairs:
        print(f'ivf-train: no training pairs under {[str(f) for f in folders]}', file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    # The seed fixes the run only for one device and CPU thread count: reductions split over
    # other threads round differently, and 2000 steps grow that into other weights.
    print(f'ivf-train: {len(pairs)} pairs, stages {stages}, device {device} '
          f'({torch.get_num_threads()} CPU threads), seed {config.seed}, output {args.output}')
    started = time.perf_counter()
    bank = PairBank(pairs, device, config.max_side, config.crop,
                    show_progress=not args.no_progress)
    trainer = Trainer(config, bank, args.output, device,
                      show_progress=not args.no_progress)
    weights = trainer.run(stages, resume=args.resume, start_from=args.start_from)
    print(f'ivf-train: done in {time.perf_counter() - started:.1f} s, weights {weights}')
    if args.export is not None:
        # Copied beside the target and renamed over it: an interrupted copy never leaves a
        # half file where the nodes load their weights (a link is followed, not replaced).
        target = args.export.resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f'.{target.name}.tmp')
        shutil.copyfile(weights, temporary)
        temporary.replace(target)
        print(f'ivf-train: exported {args.export}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
