#!/usr/bin/env python3
"""Train the ablations and print one table: detection AP (validation) and fusion metrics.

Variants: the full model; constant gate (the fusion block replaced by w = 0.5 everywhere,
details too: nothing to train); max rule (w = 1 where the infrared base is brighter, the larger
detail per pixel: nothing to train); no detection term (the detection term and the source
term, its per-object form, both off; salience still takes its targets from the detector's
boxes), no source term and no salience term (stage 3 retrained without it, from the full run's
stage 2); no stage 1 (no enhancement is learnt: the decoder
only renders the raw visible image; all three stages retrained).

``--reuse RUN`` takes a finished full run (ivf-train --stage all): 'full', 'constant_gate' and
'max_rule' are its stage3.pt (re-saved with the variant's model config), and the variants that
differ only in stage 3's losses start from its stage2.pt, which they would reproduce exactly
(same seed, same data order; stages 1 and 2 never touch the fusion block).

Detection: ``ivf-eval detect`` on the validation split's labelled pairs (person/car AP@0.5);
fusion metrics: ``ivf-eval`` on its MSRS night pairs.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import csv
from pathlib import Path
import shutil
import subprocess
import sys

import yaml

from ivf_ros.fusion.inference import load_network, save_weights
from ivf_ros.fusion.model import IVFNet, ModelConfig
from ivf_ros.io.datasets import VALIDATION_FUSION_FOLDER
from ivf_ros.io.paths import datasets_dir, share_file

VARIANTS: dict[str, dict] = {
    'full': {},
    # A gate that does not learn has no logits for the source term (load_config refuses it).
    'constant_gate': {'model': {'gate': 'constant'}, 'losses': {'source': 0.0}},
    'max_rule': {'model': {'gate': 'max'}, 'losses': {'source': 0.0}},
    'no_detection': {'losses': {'detection': 0.0, 'source': 0.0}},
    'no_source': {'losses': {'source': 0.0}},
    'no_salience': {'losses': {'salience': 0.0}},
    'no_stage1': {'model': {'enhance': False}},
}
# Variants whose stages 1 and 2 equal the full model's (only stage 3's losses differ).
FUSION_ONLY = ('no_detection', 'no_source', 'no_salience')
# Variants that are the full model's weights rendered with another gate: nothing to train.
RENDER_ONLY = ('constant_gate', 'max_rule')
COLUMNS = ('EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'PSNR', 'CC',
           'noise', 'hue_shift', 'chroma_ratio', 'clipped_rgb')


def variant_config(base: dict, name: str) -> dict:
    """Return the training config of one ablation variant."""
    config = yaml.safe_load(yaml.safe_dump(base))
    config['model'].update(VARIANTS[name].get('model', {}))
    config['stages'][3]['losses'].update(VARIANTS[name].get('losses', {}))
    if name == 'no_stage1':
        # Only the render term is defined without the curve; keep its weight.
        config['stages'][1]['losses'] = {'render': 1.0}
    return config


def reuse_with_config(source: Path, target: Path, model_config: dict) -> None:
    """Save source's learnt parameters as target, built with the variant's model config."""
    network = IVFNet(ModelConfig.from_dict(model_config))
    network.load_state_dict(load_network(source).state_dict())
    save_weights(network, target)


def run_in_order(commands: list[list[str]], log_path: Path) -> int:
    """Run argument lists one after the other into one log; return the first failing code."""
    with log_path.open('w') as log:
        for command in commands:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  check=False).returncode
            if code != 0:
                return code
    return 0


def main() -> int:
    """Train every variant (in parallel), evaluate them with ivf-eval, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', type=Path, default=share_file('config', 'train.yaml'))
    parser.add_argument('--output', type=Path, default=Path('runs/ablations'))
    parser.add_argument('--device', default='auto')
    parser.add_argument('--steps-scale', type=float, default=1.0)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--reuse', type=Path, default=None,
                        help='finished full run folder (stage1.pt .. stage3.pt) to reuse')
    parser.add_argument('--imgsz', type=int, default=640, help='detector input size')
    parser.add_argument('--stage3-steps', type=int, default=None,
                        help="override stage 3's length in every variant (and 'full' when it "
                             'is trained here)')
    parser.add_argument('--keep', action='store_true',
                        help="don't retrain a variant whose folder already holds stage3.pt "
                             "(it is evaluated as rendered.pt: those weights with this "
                             "config's model settings)")
    parser.add_argument('--train-only', action='store_true', help='train, evaluate nothing')
    args = parser.parse_args()
    if args.imgsz < 32:   # ivf-eval detect takes 0 and scores every input AP 0
        parser.error(f'--imgsz must be at least 32, got {args.imgsz}')
    if not args.steps_scale > 0:
        parser.error(f'--steps-scale must be above 0, got {args.steps_scale}')
    if args.stage3_steps is not None and args.stage3_steps < 1:
        parser.error(f'--stage3-steps must be at least 1, got {args.stage3_steps}')
    if any(name in RENDER_ONLY for name in args.variants) and not (
            'full' in args.variants or args.reuse is not None):
        parser.error(f'{", ".join(RENDER_ONLY)} need the full model: add "full" or --reuse RUN')
    base = yaml.safe_load(args.config.read_text())
    args.output.mkdir(parents=True, exist_ok=True)
    jobs = []
    pool = ThreadPoolExecutor(max_workers=max(1, len(args.variants)))
    weights: dict[str, Path] = {}
    full_weights = (args.reuse or args.output / 'full') / 'stage3.pt'
    for name in args.variants:
        folder = args.output / name
        folder.mkdir(parents=True, exist_ok=True)
        config = variant_config(base, name)
        if args.stage3_steps is not None:
            config['stages'][3]['steps'] = args.stage3_steps
        config_path = folder / 'train.yaml'
        config_path.write_text(yaml.safe_dump(config))
        if name in RENDER_ONLY:
            weights[name] = folder / 'stage3.pt'               # written once 'full' is trained
            continue
        stages = ['all']
        weights[name] = folder / 'stage3.pt'
        if args.reuse is not None and name == 'full':
            # This config's model settings, as every other row: a run saved before a setting
            # existed would otherwise render without it.
            reuse_with_config(full_weights, weights[name], config['model'])
            continue
        if args.reuse is not None and name in FUSION_ONLY:
            shutil.copyfile(args.reuse / 'stage2.pt', folder / 'stage2.pt')  # stage 3 starts here
            stages = ['3']
        if args.keep and weights[name].is_file():
            # Rendered with this config's model settings, as 'full' is: a kept run trained
            # before a rendering setting (chroma_coring) existed would otherwise render without
            # it. A separate file: the trained one keeps its own config and metadata.
            weights[name] = folder / 'rendered.pt'
            reuse_with_config(folder / 'stage3.pt', weights[name], config['model'])
            continue
        command = [sys.executable, '-m', 'ivf_ros.cli.train', '--config', str(config_path),
                   '--output', str(folder), '--device', args.device, '--no-progress',
                   '--steps-scale', str(args.steps_scale)]
        # A variant's stages run in order, variants side by side; argument lists, never a
        # shell, so paths with spaces or shell characters stay one argument.
        stage_commands = [command + ['--stage', stage] for stage in stages]
        jobs.append((name, pool.submit(run_in_order, stage_commands, folder / 'train.log')))
    failed = [name for name, job in jobs if job.result() != 0]
    pool.shutdown()
    if failed:
        print(f'ablations: training failed for {failed} (see their train.log)', file=sys.stderr)
        return 1
    if args.train_only:
        return 0
    for name in args.variants:
        if name in RENDER_ONLY:
            reuse_with_config(full_weights, weights[name],
                              variant_config(base, name)['model'])
    methods = [f'{name}={weights[name]}' for name in args.variants]
    subprocess.run([sys.executable, '-m', 'ivf_ros.cli.eval', 'detect', '--no-progress',
                    '--imgsz', str(args.imgsz), '-o', str(args.output / 'detect'),
                    '--device', args.device, '--no-figures', '--fused', *args.variants,
                    '-m', *methods], check=True)
    subprocess.run([sys.executable, '-m', 'ivf_ros.cli.eval',
                    str(datasets_dir() / VALIDATION_FUSION_FOLDER), '--split', 'validation',
                    '--no-progress', '--no-figures', '-o', str(args.output / 'eval'),
                    '--device', args.device, '-m', 'max', 'clahe_laplacian', *methods],
                   check=True)
    with (args.output / 'detect' / 'detection.csv').open() as handle:
        ap = {(row['input'], row['class']): row for row in csv.DictReader(handle)
              if row.get('group', 'all') == 'all'}   # the whole split, not its per-dataset rows
    with (args.output / 'eval' / 'summary.csv').open() as handle:
        rows = list(csv.DictReader(handle))
    print('| variant | person AP@0.5 [95 %] | car AP@0.5 [95 %] | ' + ' | '.join(COLUMNS) + ' |')
    print('|---' * (len(COLUMNS) + 3) + '|')
    for row in rows:
        cells = []
        for name in ('person', 'car'):
            entry = ap.get((row['method'], name))
            cells.append(f"{float(entry['ap50']):.3f} [{float(entry['ap50_low']):.3f}, "
                         f"{float(entry['ap50_high']):.3f}]" if entry else '-')
        values = ' | '.join(f"{float(row[f'{column}_mean']):.3f}" for column in COLUMNS)
        print(f"| {row['method']} | {' | '.join(cells)} | {values} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
