#!/usr/bin/env python3
"""Print the fusion network's size, MACs at 640x512 and fusion latency (CPU; CUDA fp16 too)."""

from __future__ import annotations

import argparse
from pathlib import Path
import statistics
import time

from benchlib import positive_int
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ivf_ros.fusion.inference import default_weights_path, FusionModel, load_network
from ivf_ros.fusion.model import count_parameters, IVFNet


def count_macs(network: IVFNet, height: int, width: int) -> float:
    """Return the multiply-accumulates of one fusion pass (convolutions, matmuls)."""
    visible = torch.rand(1, 3, height, width)
    infrared = torch.rand(1, 1, height, width)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network.float().cpu()(visible, infrared)
    return counter.get_total_flops() / 2.0  # the counter reports 2 FLOPs per MAC


def time_fusion(model: FusionModel, height: int, width: int, repeats: int) -> list[float]:
    """Return wall times (ms) of FusionModel.fuse on a random uint8 pair, after a warm-up."""
    rng = np.random.default_rng(0)
    visible = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    infrared = rng.integers(0, 256, (height, width), dtype=np.uint8)
    model.fuse(visible, infrared)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.fuse(visible, infrared)  # returns host arrays: includes upload and download
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def time_network_cuda(model: FusionModel, height: int, width: int, repeats: int) -> list[float]:
    """Return GPU times (ms) of the network alone on device tensors (CUDA events)."""
    visible = torch.rand(1, 3, height, width, device=model.torch_device, dtype=model.dtype)
    infrared = torch.rand(1, 1, height, width, device=model.torch_device, dtype=model.dtype)
    times = []
    with torch.inference_mode():
        for _ in range(10):
            model.network(visible, infrared)
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            model.network(visible, infrared)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return times


def time_graph_cuda(model: FusionModel, height: int, width: int, repeats: int) -> list[float]:
    """Return GPU times (ms) of one CUDA-graph replay of the whole uint8 pipeline."""
    visible = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8,
                            device=model.torch_device)
    infrared = torch.randint(0, 256, (height, width, 1), dtype=torch.uint8,
                             device=model.torch_device)
    times = []
    with torch.inference_mode():
        model._graphed(visible, infrared, ('fused',))  # capture
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            model._graphed(visible, infrared, ('fused',))
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return times


def main() -> None:
    """Print parameters, GMACs and latencies."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--weights', type=Path, default=None,
                        help='weights file (default: the shipped models/ivf_fusion.pt)')
    parser.add_argument('--width', type=positive_int, default=640)
    parser.add_argument('--height', type=positive_int, default=512)
    parser.add_argument('--repeats', type=positive_int, default=50)
    parser.add_argument('--threads', type=positive_int, default=None, help='torch CPU threads')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.weights or default_weights_path()
    network = load_network(path)
    print(f'weights: {path} ({path.stat().st_size / 1e6:.2f} MB)')
    print(f'parameters: {count_parameters(network):,}')
    macs = count_macs(network, args.height, args.width)
    print(f'GMACs at {args.width}x{args.height}: {macs / 1e9:.3f}')
    cpu = FusionModel(load_network(path), device='cpu')
    times = time_fusion(cpu, args.height, args.width, args.repeats)
    print(f'CPU ({torch.get_num_threads()} threads) fuse {args.width}x{args.height}: '
          f'median {statistics.median(times):.1f} ms, min {min(times):.1f} ms')
    if torch.cuda.is_available():
        print(f'GPU: {torch.cuda.get_device_name(0)}')
        for half in (False, True):
            gpu = FusionModel(load_network(path), device='cuda:0', half=half)
            label = 'fp16' if half else 'fp32'
            eager_ms = time_network_cuda(gpu, args.height, args.width, args.repeats * 4)
            graph_ms = time_graph_cuda(gpu, args.height, args.width, args.repeats * 4)
            fuse_ms = time_fusion(gpu, args.height, args.width, args.repeats * 4)
            print(f'CUDA {label} {args.width}x{args.height}: network eager median '
                  f'{statistics.median(eager_ms):.2f} ms; CUDA-graph replay (uint8 in/out on '
                  f'the GPU) median {statistics.median(graph_ms):.3f} ms; fuse() with host '
                  f'upload/download median {statistics.median(fuse_ms):.2f} ms')


if __name__ == '__main__':
    main()
