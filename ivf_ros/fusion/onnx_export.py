"""Export the fusion network to ONNX and check ONNX Runtime against torch (CLI: ivf-export).

Inputs ``visible`` (1, 3, H, W) and ``infrared`` (1, 1, H, W), float32 in [0, 1]; outputs
``fused`` (1, 3, H, W), ``weights`` (1, 1, H, W) (infrared share) and ``enhanced`` (1, 3, H, W).
The graph has one fixed input size, which may be any size (the internal padding is computed from
it); export again for another camera.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ivf_ros.fusion.model import IVFNet

INPUT_NAMES = ['visible', 'infrared']
OUTPUT_NAMES = ['fused', 'weights', 'enhanced']


def _cpu_copy(network: IVFNet) -> IVFNet:
    """Return a float32 CPU copy in eval mode: the caller's network stays on its device."""
    return copy.deepcopy(network).float().cpu().eval()


def export(network: IVFNet, path: str | Path, height: int = 512, width: int = 640,
           opset: int = 17) -> Path:
    """Write network.forward as ONNX for (height, width) inputs; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = _cpu_copy(network)
    visible = torch.rand(1, 3, height, width)
    infrared = torch.rand(1, 1, height, width)
    with torch.inference_mode():
        torch.onnx.export(network, (visible, infrared), str(path), input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, opset_version=opset, dynamo=False)
    return path


def parity(network: IVFNet, path: str | Path, height: int = 512, width: int = 640,
           seed: int = 0) -> float:
    """Return the max abs difference of ONNX Runtime and torch outputs on a random pair."""
    import onnxruntime

    generator = torch.Generator().manual_seed(seed)
    visible = torch.rand(1, 3, height, width, generator=generator)
    infrared = torch.rand(1, 1, height, width, generator=generator)
    with torch.inference_mode():
        expected = [tensor.numpy() for tensor in _cpu_copy(network)(visible, infrared)]
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    actual = session.run(OUTPUT_NAMES, {'visible': visible.numpy(),
                                        'infrared': infrared.numpy()})
    return max(float(np.abs(a - b).max()) for a, b in zip(actual, expected, strict=True))
