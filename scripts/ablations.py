#!/usr/bin/env python3
"""Train the paper's ablations and print one table on the validation split (MSRS night).

Variants: full model; no stage 1 (no enhancement is learnt: the decoder only renders the raw
visible image); single scale (one fusion head, on the working grid, instead of four scales
refined coarse to fine); fixed 0.5 weights instead of adaptive ones (stage 3 then has nothing
to learn and is skipped); no local contrast (the full model's weights without the fused
image's local-contrast step: nothing to train).

``--reuse RUN`` takes a finished full run (ivf-train --stage all): 'full' and
'no_local_contrast' are its stage3.pt (re-saved with this config's model settings, so the two
differ only in the step), and the variants that differ only in the fusion block (single_scale,
fixed_0.5) start from its stage2.pt, which they would reproduce exactly (same seed, same data
order; stages 1 and 2 never touch the fusion block). On the 2-core CPU that saves about 40
minutes.
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
from ivf_ros.io.paths import share_file

VARIANTS: dict[str, dict] = {
    'full': {},
    'no_stage1': {'model': {'enhance': False}},
    'single_scale': {'model': {'multiscale': False}},
    'fixed_0.5': {'model': {'adaptive_weights': False}},
    'no_local_contrast': {'model': {'local_contrast': 0.0}},
}
# Variants whose stages 1 and 2 equal the full model's (only the fusion block differs).
FUSION_ONLY = ('single_scale', 'fixed_0.5')
# Variants that are the full model's weights rendered differently: stage 3 trains without the
# local-contrast step, so nothing differs but the config stored with the weights.
RENDER_ONLY = ('no_local_contrast',)
COLUMNS = ('EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'PSNR', 'CC',
           'brightness', 'noise')


def variant_config(base: dict, name: str) -> dict:
    """Return the training config of one ablation variant."""
    config = yaml.safe_load(yaml.safe_dump(base))
    config['model'].update(VARIANTS[name].get('model', {}))
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
    args = parser.parse_args()
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
        config_path = folder / 'train.yaml'
        config_path.write_text(yaml.safe_dump(config))
        if name in RENDER_ONLY:
            weights[name] = folder / 'stage3.pt'               # written once 'full' is trained
            continue
        stages = ['1', '2'] if name == 'fixed_0.5' else ['all']
        weights[name] = folder / ('stage2.pt' if name == 'fixed_0.5' else 'stage3.pt')
        if args.reuse is not None and name == 'full':
            # This config's model settings, as every other row: a run saved before a setting
            # existed would otherwise render without it.
            reuse_with_config(full_weights, weights[name], config['model'])
            continue
        if args.reuse is not None and name in FUSION_ONLY:
            if name == 'fixed_0.5':
                reuse_with_config(args.reuse / 'stage2.pt', weights[name], config['model'])
                continue
            shutil.copyfile(args.reuse / 'stage2.pt', folder / 'stage2.pt')  # stage 3 starts here
            stages = ['3']
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
    for name in args.variants:
        if name in RENDER_ONLY:
            reuse_with_config(full_weights, weights[name],
                              variant_config(base, name)['model'])
    methods = [f'{name}={weights[name]}' for name in args.variants]
    subprocess.run([sys.executable, '-m', 'ivf_ros.cli.eval', '--split', 'validation',
                    '--no-progress', '-o', str(args.output / 'eval'), '--device', args.device,
                    '-m', 'clahe_laplacian', *methods], check=True)
    with (args.output / 'eval' / 'summary.csv').open() as handle:
        rows = list(csv.DictReader(handle))
    print('| variant | ' + ' | '.join(COLUMNS) + ' |')
    print('|---' * (len(COLUMNS) + 1) + '|')
    for row in rows:
        values = ' | '.join(f"{float(row[f'{column}_mean']):.3f}" for column in COLUMNS)
        print(f"| {row['method']} | {values} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
