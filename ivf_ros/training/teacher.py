"""The frozen COCO detector as a teacher of the fusion network (stage 3's detection term).

A YOLO detection model (loaded through :class:`ivf_ros.pipeline.detector.YoloDetector`, the one
loading path) is run on both sources and on the fused image. Its dense class scores (one per
anchor and class, after the sigmoid, before NMS) of the classes the fusion is for (person, car,
bicycle) are what the term compares: an object the detector finds confidently on either source
should be found at least as confidently on the fused image. The max over the two sources merges
their detections per anchor (the same anchor sees the same place at the same scale), so no box
matching is needed and the term is smooth. The detector's parameters never train.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812

# COCO names of the classes the labelled night sets hold (person, car, bicycle).
TEACHER_CLASSES = ('person', 'car', 'bicycle')
STRIDE = 32   # YOLO's largest stride: inputs are padded to multiples of it
PAD_VALUE = 114 / 255   # Ultralytics' letterbox grey


class DetectionTeacher(nn.Module):
    """Frozen detector -> (n, k, anchors) class probabilities of the chosen classes."""

    def __init__(self, network: nn.Module, class_ids: Sequence[int]) -> None:
        super().__init__()
        self.network = network.eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.register_buffer('class_rows', torch.tensor([4 + c for c in class_ids]),
                             persistent=False)

    def train(self, mode: bool = True) -> DetectionTeacher:
        """Keep the detector in eval mode (frozen batch-norm statistics) whatever is asked."""
        super().train(mode)
        self.network.eval()
        return self

    def predict(self, rgb: torch.Tensor) -> torch.Tensor:
        """Return boxes and class probabilities (n, 4 + k, anchors): xywh pixels, then scores."""
        pad_h, pad_w = (-rgb.shape[-2]) % STRIDE, (-rgb.shape[-1]) % STRIDE
        if pad_h or pad_w:   # right and bottom, as a letterbox would: anchors stay aligned
            rgb = F.pad(rgb, (0, pad_w, 0, pad_h), value=PAD_VALUE)
        output = self.network(rgb)
        prediction = output[0] if isinstance(output, (list, tuple)) else output  # (n, 4+C, A)
        rows = torch.cat([torch.arange(4, device=prediction.device),
                          self.class_rows.to(prediction.device)])
        return prediction.index_select(1, rows)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Return the class probabilities (n, k, anchors) of (n, 3, h, w) RGB in [0, 1]."""
        return self.predict(rgb)[:, 4:]

    def sources(self, visible: torch.Tensor, infrared: torch.Tensor,
                confidence: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (max of both sources' scores (n, k, A), infrared target mask (n, 1, h, w)).

        The mask (None when ``confidence`` is None) is 1 inside every box the detector finds on
        the infrared image with a score above ``confidence``: the warm targets (people, cars,
        bicycles). No gradient.
        """
        with torch.no_grad():
            both = self.predict(torch.cat([visible, infrared.expand(-1, 3, -1, -1)], dim=0))
        batch = visible.shape[0]
        scores = torch.maximum(both[:batch, 4:], both[batch:, 4:])
        if confidence is None:
            return scores, None
        return scores, box_mask(both[batch:], infrared.shape[-2:], confidence)


def box_mask(prediction: torch.Tensor, size: Sequence[int], confidence: float) -> torch.Tensor:
    """Return (n, 1, h, w): 1 inside the boxes of (n, 4 + k, A) predictions scored > confidence."""
    height, width = int(size[0]), int(size[1])
    rows = torch.arange(height, device=prediction.device, dtype=prediction.dtype) + 0.5
    columns = torch.arange(width, device=prediction.device, dtype=prediction.dtype) + 0.5
    masks = []
    for image in prediction:                                    # (4 + k, A)
        boxes = image[:4, image[4:].amax(dim=0) > confidence].T  # (b, 4) xywh, pre-NMS
        half_w, half_h = boxes[:, 2:3] / 2, boxes[:, 3:4] / 2
        inside_x = ((columns >= boxes[:, 0:1] - half_w)
                    & (columns <= boxes[:, 0:1] + half_w)).to(prediction.dtype)  # (b, w)
        inside_y = ((rows >= boxes[:, 1:2] - half_h)
                    & (rows <= boxes[:, 1:2] + half_h)).to(prediction.dtype)     # (b, h)
        # Box b covers (y, x) iff inside_y[b, y] and inside_x[b, x]: one matrix product ORs
        # every box's rectangle into the mask.
        masks.append((inside_y.T @ inside_x > 0).to(prediction.dtype))           # (h, w)
    return torch.stack(masks)[:, None]


def load_teacher(weights: str, device: torch.device | str = 'cpu',
                 classes: Sequence[str] = TEACHER_CLASSES) -> DetectionTeacher:
    """Load YOLO weights through the detector's public API; return the frozen teacher."""
    from ivf_ros.pipeline.detector import YoloDetector

    detector = YoloDetector(weights, device='cpu')
    ids_by_name = {name: class_id for class_id, name in detector.names.items()}
    missing = [name for name in classes if name not in ids_by_name]
    if missing:
        raise ValueError(f'detector {weights} has no class {missing}')
    teacher = DetectionTeacher(detector.network.float(), [ids_by_name[n] for n in classes])
    return teacher.to(device)
