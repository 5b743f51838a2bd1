"""The frozen COCO detector as a teacher of the fusion network (stage 3's detection term).

A YOLO detection model (loaded through :class:`ivf_ros.pipeline.detector.YoloDetector`, the one
loading path) is run on both sources and on the fused image. Its dense class scores (one per
anchor and class, after the sigmoid, before NMS) of the classes the fusion is for (person, car,
bicycle) are what the term compares: an object the detector finds confidently on either source
should be found at least as confidently on the fused image. The max over the two sources merges
their detections per anchor (the same anchor sees the same place at the same scale), so no box
matching is needed and the term is smooth. Where a frame has a label file, its boxes add what
both sources missed: every anchor whose box (predicted on either source) overlaps a labelled
object of its class by IoU >= ``LABEL_IOU`` is a target of at least ``LABEL_SCORE``. The
detector's parameters never train.
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
# A labelled object is found at an anchor whose box overlaps it by this IoU (Ultralytics' mAP@0.5
# counts such a box a match); the fused score there must reach LABEL_SCORE, above the
# detection term's 0.25 confidence: the label says the object is there.
LABEL_IOU = 0.5
LABEL_SCORE = 0.5


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
                confidence: float | None = None,
                labels: Sequence[torch.Tensor | None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (max of both sources' scores (n, k, A), infrared target mask (n, 1, h, w)).

        The mask (None when ``confidence`` is None) is 1 inside every box the detector finds on
        the infrared image with a score above ``confidence``: the warm targets (people, cars,
        bicycles). ``labels``: per image None (unlabelled) or (b, 5) class, x1, y1, x2, y2 in
        pixels, class = index into the teacher's classes; labelled boxes raise the scores (see
        :func:`label_scores`) and join the mask. No gradient.
        """
        with torch.no_grad():
            both = self.predict(torch.cat([visible, infrared.expand(-1, 3, -1, -1)], dim=0))
        batch = visible.shape[0]
        scores = torch.maximum(both[:batch, 4:], both[batch:, 4:])
        if labels is not None:
            scores = label_scores(scores, both[:batch, :4], both[batch:, :4], labels)
        if confidence is None:
            return scores, None
        mask = box_mask(both[batch:], infrared.shape[-2:], confidence)
        if labels is not None:
            classes = scores.shape[1]
            labelled = torch.stack([
                rectangles_mask(mask.new_zeros(0, 4) if boxes is None else
                                boxes[(boxes[:, 0] >= 0) & (boxes[:, 0] < classes), 1:].to(mask),
                                infrared.shape[-2:])
                for boxes in labels])[:, None]                             # (n, 1, h, w)
            mask = torch.maximum(mask, labelled)
        return scores, mask


def label_scores(scores: torch.Tensor, visible_boxes: torch.Tensor, infrared_boxes: torch.Tensor,
                 labels: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Return (n, k, A) scores raised to LABEL_SCORE where an anchor's box finds a label.

    visible_boxes, infrared_boxes: (n, 4, A) xywh boxes the detector predicts per anchor on each
    source. An anchor finds a labelled object of class c when either source's box there
    overlaps it by IoU >= LABEL_IOU: the anchor already looks at the object at the right scale,
    so only its score is asked for. Classes outside the teacher's are skipped.
    """
    # Ultralytics' own box helpers (the evaluation matches with the same box_iou); imported
    # here, as the detector is, so that importing the trainer does not load Ultralytics.
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    raised = scores.clone()
    for index, boxes in enumerate(labels):
        if boxes is None or not len(boxes):
            continue
        corners = boxes[:, 1:].to(scores)                                    # (b, 4)
        overlap = torch.maximum(box_iou(xywh2xyxy(visible_boxes[index].T), corners),
                                box_iou(xywh2xyxy(infrared_boxes[index].T), corners))
        for box, class_id in enumerate(boxes[:, 0].long().tolist()):
            if 0 <= class_id < scores.shape[1]:
                found = overlap[:, box] >= LABEL_IOU                           # (A,)
                raised[index, class_id, found] = raised[index, class_id, found].clamp_min(
                    LABEL_SCORE)
    return raised


def box_mask(prediction: torch.Tensor, size: Sequence[int], confidence: float) -> torch.Tensor:
    """Return (n, 1, h, w): 1 inside the boxes of (n, 4 + k, A) predictions scored > confidence."""
    from ultralytics.utils.ops import xywh2xyxy

    return torch.stack([
        rectangles_mask(xywh2xyxy(image[:4, image[4:].amax(dim=0) > confidence].T), size)
        for image in prediction])[:, None]                       # pre-NMS boxes, (b, 4) each


def rectangles_mask(corners: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Return (h, w): 1 at the pixels whose centres lie inside any (b, 4) x1, y1, x2, y2 box."""
    height, width = int(size[0]), int(size[1])
    rows = torch.arange(height, device=corners.device, dtype=corners.dtype) + 0.5
    columns = torch.arange(width, device=corners.device, dtype=corners.dtype) + 0.5
    inside_x = ((columns >= corners[:, 0:1]) & (columns <= corners[:, 2:3])).to(corners.dtype)
    inside_y = ((rows >= corners[:, 1:2]) & (rows <= corners[:, 3:4])).to(corners.dtype)
    # Box b covers (y, x) iff inside_y[b, y] and inside_x[b, x]: one matrix product ORs every
    # box's rectangle into the mask.
    return (inside_y.T @ inside_x > 0).to(corners.dtype)                  # (h, w)


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
