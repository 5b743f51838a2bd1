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
from typing import NamedTuple

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
# An object counts for the source term where either source scores it above this: the
# detection term's own confidence (losses.detection_loss).
SOURCE_CONFIDENCE = 0.25


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
                labels: Sequence[torch.Tensor | None] | None = None,
                preference_grid: tuple[Sequence[int], int] | None = None) -> TeacherTargets:
        """Return what the detector finds on the two sources (:class:`TeacherTargets`).

        ``scores``: max of both sources' scores (n, k, A). ``warm`` (None when ``confidence``
        is None): 1 inside every box the detector finds on the infrared image with a score
        above ``confidence``, (n, 1, h, w): the warm targets (people, cars, bicycles).
        ``labels``: per image None (unlabelled) or (b, 5) class, x1, y1, x2, y2 in pixels,
        class = index into the teacher's classes; labelled boxes raise the scores (see
        :func:`label_scores`) and join the warm mask. ``preference_grid`` ((h, w), stride), when
        given, adds :func:`source_preference` on that grid. No gradient.
        """
        with torch.no_grad():
            both = self.predict(torch.cat([visible, infrared.expand(-1, 3, -1, -1)], dim=0))
        batch = visible.shape[0]
        scores = torch.maximum(both[:batch, 4:], both[batch:, 4:])
        if labels is not None:
            scores = label_scores(scores, both[:batch, :4], both[batch:, :4], labels)
        preferred = preference_weight = None
        if preference_grid is not None:
            preferred, preference_weight = source_preference(both[:batch], both[batch:],
                                                             *preference_grid)
        if confidence is None:
            return TeacherTargets(scores, None, preferred, preference_weight)
        mask = box_mask(both[batch:], infrared.shape[-2:], confidence)
        if labels is not None:
            classes = scores.shape[1]
            labelled = torch.stack([
                rectangles_mask(mask.new_zeros(0, 4) if boxes is None else
                                boxes[(boxes[:, 0] >= 0) & (boxes[:, 0] < classes), 1:].to(mask),
                                infrared.shape[-2:])
                for boxes in labels])[:, None]                             # (n, 1, h, w)
            mask = torch.maximum(mask, labelled)
        return TeacherTargets(scores, mask, preferred, preference_weight)


class TeacherTargets(NamedTuple):
    """What the frozen detector finds on the sources (:meth:`DetectionTeacher.sources`)."""

    scores: torch.Tensor                      # (n, k, A) max of both sources' class scores
    warm: torch.Tensor | None                 # (n, 1, h, w) 1 inside the infrared's boxes
    preferred: torch.Tensor | None            # (n, 1, h', w') 1: infrared, 0: visible
    preference_weight: torch.Tensor | None    # (n, 1, h', w') score gap, 0 outside objects


def source_preference(visible_prediction: torch.Tensor, infrared_prediction: torch.Tensor,
                      size: Sequence[int], stride: int, confidence: float = SOURCE_CONFIDENCE
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (preferred, weight) (n, 1, h, w): the source the detector finds each object on.

    visible_prediction, infrared_prediction: (n, 4 + k, A) predictions, boxes in pixels; the
    (h, w) grid has a cell per ``stride`` x ``stride`` pixels from the top left (the fusion's
    working grid, padded right and bottom). Every anchor whose best class score on either
    source exceeds ``confidence`` is an object seen best on the source with the higher score:
    inside that source's box, on the grid, ``preferred`` is 1 (the infrared) or 0 (the
    visible) and ``weight`` is the score gap (an object both sources show equally well asks
    for nothing). Where boxes overlap, the most confident anchor decides; outside every box
    the weight is 0.
    """
    from ultralytics.utils.ops import xywh2xyxy

    height, width = int(size[0]), int(size[1])
    preferred, weight = [], []
    for seen_visible, seen_infrared in zip(visible_prediction, infrared_prediction,
                                           strict=True):
        visible_score = seen_visible[4:].amax(dim=0)                       # (A,)
        infrared_score = seen_infrared[4:].amax(dim=0)
        best = torch.maximum(visible_score, infrared_score)
        found = best > confidence
        infrared_better = infrared_score >= visible_score
        on_infrared = infrared_better[found]                               # (b,)
        boxes = torch.where(infrared_better, seen_infrared[:4],
                            seen_visible[:4])[:, found]                    # (4, b) xywh
        cover = rectangle_cover(xywh2xyxy(boxes.T) / stride, (height, width))  # (b, h, w)
        # The most confident anchor covering a cell decides it; a plane of zeros after the
        # b anchors' decides the cells no box covers (every covering score is above 0).
        ranked = torch.where(cover, best[found][:, None, None], -1.0)
        ranked = torch.cat([ranked, ranked.new_zeros((1, height, width))])
        decider = ranked.argmax(dim=0)                                     # (h, w) in [0, b]
        # Index b (the padding plane) decides the uncovered cells: its gap and side are 0.
        none = best.new_zeros(1)
        gap = torch.cat([(infrared_score - visible_score).abs()[found], none])
        side = torch.cat([on_infrared.to(best.dtype), none])
        preferred.append(side[decider])
        weight.append(gap[decider])
    return torch.stack(preferred)[:, None], torch.stack(weight)[:, None]


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


def _inside(corners: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return bool (b, h) rows and (b, w) columns whose pixel centres lie in each box's span."""
    rows = torch.arange(int(size[0]), device=corners.device, dtype=corners.dtype) + 0.5
    columns = torch.arange(int(size[1]), device=corners.device, dtype=corners.dtype) + 0.5
    return ((rows >= corners[:, 1:2]) & (rows <= corners[:, 3:4]),
            (columns >= corners[:, 0:1]) & (columns <= corners[:, 2:3]))


def rectangle_cover(corners: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Return (b, h, w) bool: the pixels whose centres lie inside each x1, y1, x2, y2 box."""
    inside_y, inside_x = _inside(corners, size)
    return inside_y[:, :, None] & inside_x[:, None, :]


def rectangles_mask(corners: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Return (h, w): 1 at the pixels whose centres lie inside any (b, 4) x1, y1, x2, y2 box."""
    inside_y, inside_x = _inside(corners, size)
    # Box b covers (y, x) iff inside_y[b, y] and inside_x[b, x]: one matrix product ORs every
    # box's rectangle into the mask (without rectangle_cover's (b, h, w) tensor).
    return (inside_y.to(corners.dtype).T @ inside_x.to(corners.dtype) > 0).to(corners.dtype)


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
