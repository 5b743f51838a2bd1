"""ONNX export: ONNX Runtime reproduces torch (export sizes: multiples of 32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ivf_ros.core.export_onnx import export, parity
from ivf_ros.core.model import IVFNet

pytest.importorskip('onnxruntime')


def test_onnx_runtime_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = IVFNet()
    path = export(network, tmp_path / 'ivf.onnx', height=64, width=96)
    assert path.stat().st_size < 2_000_000
    assert parity(network, path, height=64, width=96) < 1e-4
