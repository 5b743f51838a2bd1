"""A tiny random-weight YOLO built from yaml and saved to disk (tests never download weights)."""

from __future__ import annotations

from pathlib import Path

# The first COCO names, so class filters by name ('person', 'car') work on the random model.
TINY_NAMES = ['person', 'bicycle', 'car', 'motorcycle']


def build_tiny_yolo(path: Path) -> Path:
    """Build yolo11n from yaml with COCO-like class names, save it at path, return path."""
    from ultralytics import YOLO

    yolo = YOLO('yolo11n.yaml', task='detect')
    yolo.model.names = {i: (TINY_NAMES[i] if i < len(TINY_NAMES) else f'class{i}')
                        for i in range(len(yolo.names))}
    path.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(path)
    return path


def build_fusion_weights(path: Path) -> Path:
    """Save a freshly initialised fusion network (seed 0, the current architecture) at path."""
    import torch

    from ivf_ros.fusion.inference import save_weights
    from ivf_ros.fusion.model import IVFNet

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(IVFNet(), path)
    return path


def cached_tiny_yolo(base: Path) -> Path:
    """Return base/tiny_yolo11n.pt, building it once per test session (base: pytest basetemp)."""
    path = base / 'tiny_yolo11n.pt'
    return path if path.is_file() else build_tiny_yolo(path)
