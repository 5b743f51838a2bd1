#!/usr/bin/env python3
"""Which stage-3 loss term pulls the fusion gate towards which source, per group of frames.

For trained weights, draws stage-3 crops (as ``ivf-train`` does) from the training night pairs of
each group (by default the LLVIP street ``llvip_train`` against every other night folder), runs
the config's stage-3 terms with the frozen detector, and prints per term the net push of one
descent step on the working-grid gate logits (the negative gradient of the weighted term, summed
over the batch's cells; above 0 moves the gate towards the infrared) and the share of the moved
cells pushed towards the infrared. Nothing is trained. Usage:
``python scripts/gate_pull.py WEIGHTS [--config config/train.yaml] [--batches 25]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ivf_ros.fusion.inference import load_network
from ivf_ros.io.datasets import is_night, training_pairs
from ivf_ros.io.paths import share_file
from ivf_ros.training.config import load_config
from ivf_ros.training.teacher import load_teacher
from ivf_ros.training.trainer import detector_path, output_terms, PairBank, stage_outputs


def main() -> int:
    """Print one Markdown table per group of frames."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('weights', type=Path, help='fusion weights (after stage 3)')
    parser.add_argument('--config', type=Path, default=share_file('config', 'train.yaml'))
    parser.add_argument('--batches', type=int, default=25, help='crop batches per group')
    parser.add_argument('--street', default='llvip_train',
                        help='the dataset folder set against all other night folders')
    args = parser.parse_args()
    if args.batches < 2:
        parser.error(f'--batches must be at least 2 (a 95 % interval), got {args.batches}')
    config = load_config(args.config)
    stage = config.stages[3]
    weights = {name: weight for name, weight in stage.losses.items() if weight}
    stage.losses = weights   # the terms weighted 0 are not computed (nor pushed)
    pairs = [pair for pair in training_pairs() if is_night(pair)]
    bank = PairBank(pairs, torch.device('cpu'), config.max_side, config.crop,
                    show_progress=False)
    model = load_network(args.weights).eval()
    teacher = load_teacher(str(detector_path(config.detector)))
    groups = {args.street: [i for i, name in enumerate(bank.datasets) if name == args.street],
              'other night folders': [i for i, name in enumerate(bank.datasets)
                                      if name != args.street]}
    for group, pool in groups.items():
        if not pool:
            print(f'{group}: no pairs')
            continue
        bank.night = pool     # sample() draws night crops from this pool
        generator = torch.Generator().manual_seed(config.seed)
        pushes: dict[str, list[float]] = {name: [] for name in weights}
        towards_infrared: dict[str, list[float]] = {name: [] for name in weights}
        for _ in tqdm(range(args.batches), desc=group, leave=False):
            visible, infrared, labels = bank.sample(stage.batch, generator, night_only=True,
                                                    balance_datasets=stage.balance_datasets)
            outputs = stage_outputs(model, 3, visible, infrared)
            logits = outputs['weight_logits_low']            # (b, 1, h/4, w/4)
            terms = output_terms(outputs, 3, visible, infrared, stage, teacher, labels,
                                 grid_stride=model.config.downscale)
            for name, value in terms.items():
                gradient, = torch.autograd.grad(weights[name] * value, logits,
                                                retain_graph=True, allow_unused=True)
                push = torch.zeros_like(logits) if gradient is None else -gradient
                pushes[name].append(float(push.sum()))
                moved = push.abs() > 1e-12
                towards_infrared[name].append(float((push[moved] > 0).float().mean())
                                              if moved.any() else float('nan'))
        print(f'\n## {group} ({len(pool)} pairs, {args.batches} batches of {stage.batch})\n')
        print('| term | net push on the gate logits per batch, mean ± 95 % of the mean (> 0: '
              'towards the infrared) | moved cells pushed towards the infrared |')
        print('|---|---|---|')
        for name in weights:
            share = np.array(towards_infrared[name])
            share_text = f'{np.nanmean(share):.2f}' if np.isfinite(share).any() else '-'
            half_width = 1.96 * np.std(pushes[name], ddof=1) / np.sqrt(len(pushes[name]))
            print(f'| {name} | {np.mean(pushes[name]):+.4f} ± {half_width:.4f} | {share_text} |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
