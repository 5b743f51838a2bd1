"""Three-stage training of the fusion network (config/train.yaml holds every weight and schedule).

Stage 1 trains the visible encoder and the shared decoder on dark visible crops with reference-
free losses. Stage 2 trains the infrared encoder through the *frozen* decoder: the decoder then
already renders good enhanced images, and freezing it makes the infrared encoder map into the
feature space the decoder understands (so stage 3 can mix the two branches' features), while the
enhancement learnt in stage 1 cannot be undone. Stage 3 trains the fusion block only.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
import sys
import time
from typing import Any, TextIO

import numpy as np
import torch
from tqdm import tqdm

from ivf_ros.evaluation.detection import DATASET_CLASSES, read_yolo_labels
from ivf_ros.evaluation.plots import save_loss_curves
from ivf_ros.fusion.inference import load_network, save_weights
from ivf_ros.fusion.model import IVFNet, ModelConfig
from ivf_ros.io.datasets import (
    DatasetError,
    is_labelled,
    is_night,
    label_path,
    load_pair,
    PairedImage,
    resize_to,
)
from ivf_ros.io.errors import first_line
from ivf_ros.io.paths import shared_dir
from ivf_ros.training import losses
from ivf_ros.training.config import StageConfig, TrainConfig
from ivf_ros.training.teacher import (
    DetectionTeacher,
    load_teacher,
    TEACHER_CLASSES,
    TeacherTargets,
)

# Which sub-modules each stage trains; everything else is frozen.
TRAINABLE = {
    1: ('visible_encoder', 'decoder'),
    2: ('infrared_encoder',),
    3: ('fusion',),
}
CHECKPOINT = 'checkpoint.pt'
# The smallest image side training can crop from: the losses pool 4x4 and 8x8 windows of the
# working grid, which is 1/4 of the crop.
MIN_TRAIN_SIDE = 32
# A labelled box cut by a crop stays a target only if this share of its area is in the crop:
# the detector is not asked to find an object from a sliver of it.
MIN_BOX_SHARE = 0.5
# A gate logit beyond logit(0.99) saturates the sigmoid (w within 1 % of 0 or 1, slope < 0.01):
# stage 3 logs the share of such cells and warns when it ends with most of the gate saturated.
SATURATED_LOGIT = math.log(0.99 / 0.01)
SATURATED_WARNING = 0.5


class CheckpointError(RuntimeError):
    """A training checkpoint that is missing, unreadable or of another network."""


class PairBank:
    """All training pairs held as uint8 tensors on the training device; samples crops.

    A pair with a label file also holds its boxes, (b, 5) class, x1, y1, x2, y2 in the held
    image's pixels, class = index into the teacher's TEACHER_CLASSES (None: unlabelled, which
    is not the same as empty).
    """

    def __init__(self, pairs: list[PairedImage], device: torch.device, max_side: int,
                 crop: int, show_progress: bool = True) -> None:
        if not pairs:
            raise ValueError('no training pairs')
        self.device = device
        self.images: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.labels: list[torch.Tensor | None] = []
        self.night: list[int] = []
        self.datasets: list[str] = []   # per pair, its dataset folder (balanced sampling)
        self.pair_names: list[str] = []  # per pair, dataset/name (what a checkpoint checks)
        for index, pair in enumerate(tqdm(pairs, desc='loading pairs', leave=False,
                                               disable=not show_progress)):
            visible, infrared = load_pair(pair)
            if min(visible.shape[:2]) < MIN_TRAIN_SIDE:
                raise DatasetError(
                    f'{pair.visible_path} is {visible.shape[1]}x{visible.shape[0]}: training '
                    f'needs at least {MIN_TRAIN_SIDE} px per side')
            scale = max_side / max(visible.shape[:2])
            if scale < 1.0:
                height = round(visible.shape[0] * scale)
                width = round(visible.shape[1] * scale)
                visible = resize_to(visible, height, width)
                infrared = resize_to(infrared, height, width)
            boxes = (teacher_classes(read_yolo_labels(label_path(pair), visible.shape[1],
                                                      visible.shape[0]))
                     if is_labelled(pair) else None)
            self.add(visible, infrared, boxes, pair.dataset, pair.name)
            if is_night(pair):
                self.night.append(index)
        smallest = min(min(vis.shape[-2:]) for vis, _ in self.images)
        self.crop = min(crop, smallest)

    def add(self, visible: np.ndarray, infrared: np.ndarray,
            boxes: np.ndarray | None = None, dataset: str = 'arrays', name: str = '') -> None:
        """Add one (h, w, 3) uint8 RGB + (h, w) uint8 pair [+ its (b, 5) labelled boxes]."""
        self.pair_names.append(f'{dataset}/{name or len(self.images)}')
        self.datasets.append(dataset)
        vis = torch.from_numpy(np.ascontiguousarray(visible)).permute(2, 0, 1)   # (3, h, w)
        ir = torch.from_numpy(np.ascontiguousarray(infrared)).unsqueeze(0)      # (1, h, w)
        self.images.append((vis.to(self.device), ir.to(self.device)))
        self.labels.append(None if boxes is None else torch.as_tensor(
            boxes, dtype=torch.float32, device=self.device).reshape(-1, 5))

    @classmethod
    def from_arrays(cls, arrays: list[tuple[np.ndarray, np.ndarray]], device: torch.device,
                    crop: int, night: bool = True,
                    labels: list[np.ndarray | None] | None = None) -> PairBank:
        """Build a bank from in-memory pairs [and their boxes] (tests, synthetic data)."""
        bank = cls.__new__(cls)
        bank.device, bank.images, bank.labels, bank.datasets = device, [], [], []
        bank.pair_names = []
        for index, (visible, infrared) in enumerate(arrays):
            bank.add(visible, infrared, None if labels is None else labels[index])
        bank.night = list(range(len(bank.images))) if night else []
        bank.crop = min(crop, min(min(vis.shape[-2:]) for vis, _ in bank.images))
        return bank

    def pool_weights(self, pool: list[int]) -> torch.Tensor:
        """Return (len(pool),) sampling weights: each dataset's share grows as sqrt(its size).

        A pair of a dataset with n pairs in the pool weighs 1 / sqrt(n), so one street filmed
        32 times no longer makes two thirds of the crops, and a single frame is not repeated
        as often as a whole camera's set.
        """
        sizes: dict[str, int] = {}
        for index in pool:
            sizes[self.datasets[index]] = sizes.get(self.datasets[index], 0) + 1
        return torch.tensor([sizes[self.datasets[index]] ** -0.5 for index in pool],
                            dtype=torch.float64)

    def sample(self, batch: int, generator: torch.Generator, night_only: bool,
               balance_datasets: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Return random flipped crops and their boxes.

        visible (b, 3, c, c) and infrared (b, 1, c, c) in [0, 1]; per crop None (unlabelled
        frame) or its labelled boxes (k, 5) in crop pixels, those with at least
        MIN_BOX_SHARE of their area inside. Pairs are drawn uniformly, or with
        balance_datasets by :meth:`pool_weights`.
        """
        pool = self.night if night_only and self.night else list(range(len(self.images)))
        crop = self.crop
        visibles, infrareds, boxes = [], [], []
        if balance_datasets:
            picks = torch.multinomial(self.pool_weights(pool), batch, replacement=True,
                                      generator=generator).tolist()
        else:
            picks = torch.randint(len(pool), (batch,), generator=generator).tolist()
        for pick in picks:
            vis, ir = self.images[pool[pick]]
            labels = self.labels[pool[pick]]
            top = int(torch.randint(vis.shape[1] - crop + 1, (1,), generator=generator))
            left = int(torch.randint(vis.shape[2] - crop + 1, (1,), generator=generator))
            vis = vis[:, top:top + crop, left:left + crop]
            ir = ir[:, top:top + crop, left:left + crop]
            if labels is not None:
                labels = crop_boxes(labels, top, left, crop)
            if bool(torch.rand((), generator=generator) < 0.5):
                vis, ir = vis.flip(-1), ir.flip(-1)
                labels = None if labels is None else flip_boxes(labels, crop, horizontal=True)
            if bool(torch.rand((), generator=generator) < 0.2):
                vis, ir = vis.flip(-2), ir.flip(-2)
                labels = None if labels is None else flip_boxes(labels, crop, horizontal=False)
            visibles.append(vis)
            infrareds.append(ir)
            boxes.append(labels)
        visible = torch.stack(visibles).float().div_(255.0)
        infrared = torch.stack(infrareds).float().div_(255.0)
        return visible, infrared, boxes


def teacher_classes(targets: np.ndarray) -> np.ndarray:
    """Return (b, 5) label rows renumbered by name to TEACHER_CLASSES; other classes left out."""
    # Label files number person, car, bicycle as DATASET_CLASSES does; the teacher's score rows
    # follow TEACHER_CLASSES. Matching by name keeps the two free to differ in order.
    index = {name: position for position, name in enumerate(TEACHER_CLASSES)}
    names = [DATASET_CLASSES.get(int(class_id)) for class_id in targets[:, 0]]
    keep = np.array([name in index for name in names], dtype=bool)
    renumbered = targets[keep].copy()
    renumbered[:, 0] = [index[name] for name in names if name in index]
    return renumbered


def flip_boxes(boxes: torch.Tensor, size: int, horizontal: bool) -> torch.Tensor:
    """Return (k, 5) class, x1, y1, x2, y2 boxes mirrored in a size x size crop."""
    low, high = (1, 3) if horizontal else (2, 4)
    flipped = boxes.clone()
    flipped[:, low], flipped[:, high] = size - boxes[:, high], size - boxes[:, low]
    return flipped


def crop_boxes(boxes: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """Return (k, 5) boxes moved into a size x size crop at (top, left), clipped to it.

    Boxes with less than MIN_BOX_SHARE of their area inside the crop are left out.
    """
    offset = boxes.new_tensor([0, left, top, left, top])
    moved = boxes - offset
    clipped = torch.cat([moved[:, :1], moved[:, 1:].clamp(0, size)], dim=1)
    area = (moved[:, 3] - moved[:, 1]) * (moved[:, 4] - moved[:, 2])
    inside = (clipped[:, 3] - clipped[:, 1]) * (clipped[:, 4] - clipped[:, 2])
    return clipped[inside >= MIN_BOX_SHARE * area.clamp_min(1e-9)]


def set_trainable(model: IVFNet, stage: int) -> list[torch.nn.Parameter]:
    """Freeze everything except the stage's modules; return the trainable parameters."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = []
    for name in TRAINABLE[stage]:
        for parameter in getattr(model, name).parameters():
            parameter.requires_grad_(True)
            trainable.append(parameter)
    return trainable


def stage_outputs(model: IVFNet, stage: int, visible: torch.Tensor, infrared: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
    """Run the forward path a stage needs."""
    paths = {1: ('enhanced', 'rendered'), 2: ('infrared',), 3: ('fused', 'fused_base')}[stage]
    # The rendering steps are fixed, like the frozen curve, and stage 3 trains without them:
    # - local contrast: stage 3's losses measure the fused image against the sources, and
    #   trained through that step they teach the fusion heads to undo it (measured with the
    #   step's first, unbounded version on the training split's night pairs: VIF 1.108 ->
    #   1.035, SF and AG lower too);
    # - the fused image's own noise threshold: trained through it, the texture term loses the
    #   visible's texture and the gate went to the infrared everywhere (w 1.00, round 6).
    return model.forward_all(visible, infrared if stage > 1 else None, outputs=paths,
                             with_rendering_steps=False)


def stage_terms(model: IVFNet, stage: int, visible: torch.Tensor, infrared: torch.Tensor,
                stage_config: StageConfig, amp: bool = False,
                teacher: DetectionTeacher | None = None,
                labels: list[torch.Tensor | None] | None = None,
                gauges: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Return the stage's unweighted loss terms (forward in bf16 under AMP, losses in fp32).

    ``labels``: the crops' labelled boxes (PairBank.sample), used by stage 3's teacher when
    the stage's ``use_labels`` is on. ``gauges``, if given, receives stage 3's
    :func:`gate_gauges` of this batch (logged, not trained on).
    """
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
        outputs = stage_outputs(model, stage, visible, infrared)
    # SSIM and variance terms cancel catastrophically in bf16: always compute them in fp32.
    outputs = {name: value.float() for name, value in outputs.items()}
    if gauges is not None and stage == 3:
        gauges.update(gate_gauges(outputs['weight_logits_low']))
    return output_terms(outputs, stage, visible, infrared, stage_config, teacher, labels,
                        grid_stride=model.config.downscale)


def output_terms(outputs: dict[str, torch.Tensor], stage: int, visible: torch.Tensor,
                 infrared: torch.Tensor, stage_config: StageConfig,
                 teacher: DetectionTeacher | None = None,
                 labels: list[torch.Tensor | None] | None = None, *,
                 grid_stride: int) -> dict[str, torch.Tensor]:
    """Return the stage's unweighted loss terms of its :func:`stage_outputs` (fp32).

    ``grid_stride``: pixels per working-grid cell (the model's downscale), for the source term.
    """
    if stage == 1:
        return losses.stage1_terms(outputs, stage_config.exposure_level)
    if stage == 2:
        return losses.stage2_terms(outputs)
    found = None
    if needs_teacher(stage_config):
        if teacher is None:
            raise ValueError('stage 3 needs the frozen detector (config: detector) for its '
                             'detection or source term or detected salience targets')
        # What the detector finds on either source (no gradient) and what the labels say is
        # there: the fused image must keep it; the boxes found on the infrared (and the
        # labelled ones) are the targets salience protects; which source finds each object
        # is what the source term teaches the gate.
        found = teacher.sources(
            visible, infrared,
            stage_config.salience_confidence if detected_salience(stage_config) else None,
            labels if stage_config.use_labels else None,
            preference_grid=((outputs['weight_logits_low'].shape[-2:], grid_stride)
                             if stage_config.losses.get('source') else None))
    return losses.stage3_terms(
        outputs, infrared, stage_config.losses, detection=teacher,
        teacher_scores=None if found is None else found.scores,
        salience_targets=None if found is None else found.warm,
        gate_logit_bound=stage_config.gate_logit_bound,
        source_targets=None if found is None else source_targets(found, stage_config))


def source_targets(found: TeacherTargets, stage_config: StageConfig
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return the source term's (preferred, weight) for the stage's ``source_on`` side.

    The most confident object decides each cell first (:func:`source_preference`); with
    ``source_on: infrared`` a cell decided by an object the visible finds better then asks for
    nothing, even where a less confident infrared-found box overlaps it.
    """
    if found.preferred is None:
        return None
    if stage_config.source_on == 'infrared':   # the visible's objects ask for nothing
        return found.preferred, found.preference_weight * found.preferred
    return found.preferred, found.preference_weight


def gate_gauges(logits: torch.Tensor) -> dict[str, float]:
    """Return the batch's mean working-grid gate w and the share of saturated gate cells.

    logits (b, 1, h, w): the working-grid gate logits, w = sigmoid(logit) the infrared share
    (the full-resolution detail mix adds the detail energies to it). A cell is saturated where
    |logit| > SATURATED_LOGIT (w within 1 % of 0 or 1): its sigmoid slope is below 0.01, so the
    loss terms hardly move it. A gate saturated everywhere has stopped deciding.
    """
    logits = logits.detach()
    return {'gate_w': float(torch.sigmoid(logits).mean()),
            'gate_saturated': float((logits.abs() > SATURATED_LOGIT).float().mean())}


def truncate_log(path: Path, last_step: int) -> None:
    """Drop a resumed stage's log rows after last_step (they are trained and logged again)."""
    if not path.is_file():
        return
    with path.open(newline='') as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header = rows[0]
    column = header.index('step') if 'step' in header else 0
    try:
        kept = [row for row in rows[1:] if len(row) > column and int(row[column]) <= last_step]
    except ValueError as error:
        raise CheckpointError(f'cannot resume the log {path}: a step cell is not a number '
                              f'({error}); remove the file or run without --resume') from error
    # Written beside it, then swapped in: a crash here leaves the old log, never half of one.
    temporary = path.with_name(path.name + '.tmp')
    with temporary.open('w', newline='') as handle:
        csv.writer(handle).writerows([header, *kept])
    temporary.replace(path)


def log_writer(handle: TextIO, path: Path, columns: list[str]) -> csv.DictWriter:
    """Return a CSV writer for a training log opened for appending, writing a new header.

    A log resumed from an older run keeps its own header: columns it lacks are left out of the
    new rows and columns the new rows lack stay empty, so every row stays under its header.
    """
    if handle.tell() == 0:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        return writer
    with path.open(newline='') as existing:
        header = next(csv.reader(existing), columns)
    return csv.DictWriter(handle, fieldnames=header, extrasaction='ignore', restval='')


def detected_salience(stage_config: StageConfig) -> bool:
    """Return whether stage 3's salience term acts on the detector's infrared targets."""
    return stage_config.salience_on == 'detected' and bool(stage_config.losses.get('salience'))


def needs_teacher(stage_config: StageConfig) -> bool:
    """Return whether stage 3's terms need the frozen detector (detection, source, targets)."""
    return (bool(stage_config.losses.get('detection')) or bool(stage_config.losses.get('source'))
            or detected_salience(stage_config))


def detector_path(detector: str) -> Path:
    """Return the config's ``detector`` as a path: absolute, or relative to ../shared."""
    path = Path(detector).expanduser()
    return path if path.is_absolute() else shared_dir() / path


def state_mismatch(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                   shown: int = 3) -> str:
    """Return a short account of the tensors state lacks, adds or shapes unlike own, or ''."""
    # torch's own message lists every key: hundreds of names on one line for a foreign file.
    missing = [name for name in own if name not in state]
    extra = [name for name in state if name not in own]
    shapes = [f'{name} {tuple(state[name].shape)} vs {tuple(own[name].shape)}'
              for name in own if name in state and state[name].shape != own[name].shape]
    parts = []
    for what, names in (('missing', missing), ('unexpected', extra), ('other shapes', shapes)):
        if names:
            more = f' and {len(names) - shown} more' if len(names) > shown else ''
            parts.append(f'{len(names)} {what} ({", ".join(names[:shown])}{more})')
    return '; '.join(parts)


def learning_rate(stage_config: StageConfig, step: int) -> float:
    """Linear warm-up then cosine decay to 5 % of the base rate."""
    if step < stage_config.warmup:
        return stage_config.lr * (step + 1) / stage_config.warmup
    progress = (step - stage_config.warmup) / max(1, stage_config.steps - stage_config.warmup)
    return stage_config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


class Trainer:
    """Run stages with checkpoints, resume, CSV logs, loss plots and AMP on CUDA."""

    def __init__(self, config: TrainConfig, bank: PairBank, output: Path,
                 device: torch.device, model: IVFNet | None = None,
                 show_progress: bool = True) -> None:
        self.config = config
        self.bank = bank
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.device = device
        torch.manual_seed(config.seed)
        self.model = (model or IVFNet(ModelConfig.from_dict(config.model))).to(device)
        self.completed: list[int] = []
        self.show_progress = show_progress
        self.amp = device.type == 'cuda'
        self._teacher: DetectionTeacher | None = None

    def teacher(self) -> DetectionTeacher:
        """Return the frozen detector of the config's ``detector`` (loaded once)."""
        if self._teacher is None:
            if not self.config.detector:
                raise ValueError('stage 3 needs the frozen detector (detection or source term, '
                                 'detected salience targets) but the config names no detector')
            self._teacher = load_teacher(str(detector_path(self.config.detector)), self.device)
        return self._teacher

    # -- checkpoints ---------------------------------------------------------------------------
    def _save_checkpoint(self, stage: int, step: int, optimizer: torch.optim.Optimizer,
                         generator: torch.Generator, elapsed: float) -> None:
        """Write the resumable state atomically (a crash never leaves a half file)."""
        state = {
            'stage': stage, 'step': step, 'completed': list(self.completed),
            'run': self.fingerprint(),
            'model_config': self.model.config.to_dict(),
            'model': self.model.state_dict(), 'optimizer': optimizer.state_dict(),
            'generator': generator.get_state(), 'elapsed_s': elapsed,
        }
        temporary = self.output / (CHECKPOINT + '.tmp')
        torch.save(state, str(temporary))
        temporary.replace(self.output / CHECKPOINT)

    def fingerprint(self) -> dict[str, Any]:
        """Return what a checkpoint must share with this run to resume it (config and data)."""
        # asdict gives plain dicts, lists and numbers: what torch's weights-only load reads back.
        return {'config': dataclasses.asdict(self.config), 'pairs': list(self.bank.pair_names)}

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Restore the model from output/checkpoint.pt; return the state, or None if absent."""
        path = self.output / CHECKPOINT
        if not path.is_file():
            return None
        try:
            state = torch.load(str(path), map_location=self.device, weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
            reason = first_line(error)
            raise CheckpointError(
                f'cannot resume from {path} ({type(error).__name__}: {reason})') from error
        run = state.get('run') if isinstance(state, dict) else None
        if run != self.fingerprint():
            what = ('another config (seed, steps, losses or model) or other data'
                    if isinstance(run, dict) else 'an older ivf-train, which did not record it')
            raise CheckpointError(f'cannot resume from {path}: it belongs to a run with {what}; '
                                  'train without --resume to start afresh')
        try:
            self.model.load_state_dict(state['model'])
            self.completed = list(state['completed'])
            for key in ('stage', 'step', 'optimizer', 'generator', 'elapsed_s'):
                state[key]  # noqa: B018 - a checkpoint without them cannot resume
        except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
            reason = first_line(error)
            raise CheckpointError(
                f'cannot resume from {path} ({type(error).__name__}: {reason})') from error
        return state

    def load_weights(self, path: Path, untrained_fusion: bool = False,
                     seeded_fusion: bool = False) -> None:
        """Initialise the model from a weights file (e.g. the previous stage's).

        ``untrained_fusion``: the file's fusion block was never trained (stages 1 and 2 freeze
        it), so where its layout differs from this run's (another ``fusion_depth``) the run
        keeps its own seeded fusion block, the one ``--stage all`` would reach stage 3 with.
        ``seeded_fusion``: always keep the run's seeded fusion block. The file is a finished
        weights file given by the user (``--start-from``, e.g. the shipped one) whose stages 1
        and 2 stage 3 starts from: it is read by :func:`load_network` (never runs code; errors
        name the file). A state that does not fit this run's network raises CheckpointError.
        """
        if seeded_fusion:
            # Building the file's network draws initial weights; forking keeps the run's global
            # random stream as it was (a safeguard: training draws from its own generators).
            with torch.random.fork_rng(devices=[]):
                network = load_network(path)
            state, file_config = network.state_dict(), network.config.to_dict()
        else:   # this run's own stage file, written by save_weights
            try:
                payload = torch.load(str(path), map_location=self.device, weights_only=True)
                state, file_config = payload['state_dict'], payload.get('config')
            except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
                reason = first_line(error)
                raise CheckpointError(f'cannot read {path} ({type(error).__name__}: {reason}); '
                                      'train its stage again') from error
            if not isinstance(state, dict) or not all(
                    isinstance(name, str) and isinstance(value, torch.Tensor)
                    for name, value in state.items()):
                # A foreign .pt file: its entries would fail deep in the layout checks below.
                raise CheckpointError(f'{path} is not an ivf_ros weights file (its state_dict '
                                      'is not a mapping of names to tensors); train its stage '
                                      'again')
        own = self.model.state_dict()
        fusion = {name for name in set(state) | set(own) if name.startswith('fusion.')}
        if seeded_fusion or (untrained_fusion and any(
                name not in state or name not in own or state[name].shape != own[name].shape
                for name in fusion)):
            if not seeded_fusion:
                print(f'ivf-train: {path} has another fusion-block layout; stage 3 starts from '
                      "this run's seeded fusion block (it is not trained before stage 3)",
                      file=sys.stderr)
            state = {name: value for name, value in state.items() if name not in fusion}
            state |= {name: own[name] for name in fusion if name in own}
        mismatch = state_mismatch(state, self.model.state_dict())
        if mismatch:
            raise CheckpointError(f"{path} does not fit this run's network: {mismatch}")
        try:
            self.model.load_state_dict(state)
        except RuntimeError as error:
            # The whole message: its first line is only a heading, the mismatches follow.
            reason = ' '.join(str(error).split()) or type(error).__name__
            raise CheckpointError(f"{path} does not fit this run's network: {reason}") \
                from error
        self._warn_other_config(path, file_config)   # once it loaded: an error says enough

    def _warn_other_config(self, path: Path, file_config: Any) -> None:
        """Print the model settings a weights file was trained with that this run changes."""
        # The file's layers load into this run's network whatever its settings: a stage
        # trained with another downscale or tone curve would be continued silently.
        if not isinstance(file_config, dict):
            return
        own = self.model.config.to_dict()
        changed = [f'{name} {file_config[name]!r} -> {own[name]!r}' for name in own
                   if name in file_config and file_config[name] != own[name]]
        if changed:
            print(f'ivf-train: warning: {path} was trained with other model settings than '
                  f"this run's config ({'; '.join(changed)}); the run continues with the "
                  "config's", file=sys.stderr)

    # -- one stage -----------------------------------------------------------------------------
    def train_stage(self, stage: int, resume_state: dict[str, Any] | None = None) -> Path:
        """Train one stage; return the path of its weights file."""
        stage_config = self.config.stages[stage]
        trainable = set_trainable(self.model, stage)
        optimizer = torch.optim.Adam(trainable, lr=stage_config.lr)
        generator = torch.Generator(device='cpu').manual_seed(self.config.seed * 10 + stage)
        start, elapsed_before = 0, 0.0
        csv_path = self.output / f'stage{stage}_log.csv'
        if resume_state is not None and resume_state['stage'] == stage:
            optimizer.load_state_dict(resume_state['optimizer'])
            generator.set_state(resume_state['generator'])
            start, elapsed_before = resume_state['step'], resume_state['elapsed_s']
            truncate_log(csv_path, start)   # the steps after the checkpoint run again
        elif csv_path.exists():
            csv_path.unlink()
        teacher = self.teacher() if stage == 3 and needs_teacher(stage_config) else None
        self.model.train()
        started = time.perf_counter()
        writer_handle = csv_path.open('a', newline='')
        writer = None
        gauged = stage == 3 and self.model.config.learned_gate
        last_gauges: dict[str, float] = {}
        progress = tqdm(range(start, stage_config.steps), desc=f'stage {stage}',
                        initial=start, total=stage_config.steps, disable=not self.show_progress)
        for step in progress:
            for group in optimizer.param_groups:
                group['lr'] = learning_rate(stage_config, step)
            visible, infrared, labels = self.bank.sample(
                stage_config.batch, generator, night_only=stage_config.data == 'night',
                balance_datasets=stage_config.balance_datasets)
            done = step + 1
            logged = done % self.config.log_every == 0 or done == stage_config.steps
            # Gauges only on logged steps: reading them back costs a device sync.
            gauges: dict[str, float] | None = {} if logged and gauged else None
            terms = stage_terms(self.model, stage, visible, infrared, stage_config, self.amp,
                                teacher, labels, gauges)
            total = losses.weighted_total(terms, stage_config.losses)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            if logged:
                elapsed = elapsed_before + time.perf_counter() - started
                row = {'step': done, 'total': float(total.detach())}
                row.update({name: float(value.detach()) for name, value in terms.items()})
                row.update(gauges or {})
                last_gauges = gauges or {}
                row.update({'lr': optimizer.param_groups[0]['lr'], 'elapsed_s': round(elapsed, 2)})
                if writer is None:
                    writer = log_writer(writer_handle, csv_path, list(row))
                writer.writerow(row)
                writer_handle.flush()
                progress.set_postfix(loss=f"{row['total']:.4f}",
                                     **({'w': f"{gauges['gate_w']:.2f}"} if gauges else {}))
            if done % self.config.checkpoint_every == 0 and done < stage_config.steps:
                self._save_checkpoint(stage, done, optimizer, generator,
                                      elapsed_before + time.perf_counter() - started)
        writer_handle.close()
        if last_gauges.get('gate_saturated', 0.0) > SATURATED_WARNING:
            print(f"ivf-train: stage {stage}: {last_gauges['gate_saturated']:.0%} of the "
                  'working-grid gate is saturated (w within 1 % of 0 or 1) at the end (mean w '
                  f"{last_gauges['gate_w']:.2f}; 1 = the infrared alone): the fusion block has "
                  'stopped deciding there. The gate_bound loss term keeps the gate responsive '
                  '(models/README.md)', file=sys.stderr)
        elapsed = elapsed_before + time.perf_counter() - started
        weights = self.output / f'stage{stage}.pt'
        # What reproduces these weights bit for bit on a CPU: the seed, the thread count (and
        # the CPU: models/README, "On another CPU"); CUDA runs are not bitwise deterministic.
        save_weights(self.model, weights, {'stage': stage, 'seed': self.config.seed,
                                           'device': str(self.device),
                                           'cpu_threads': torch.get_num_threads(),
                                           'train_seconds': round(elapsed, 1)})
        # Only a stage whose weights are on disk is marked done in the checkpoint.
        self.completed.append(stage)
        self._save_checkpoint(stage, stage_config.steps, optimizer, generator, elapsed)
        save_loss_curves(csv_path, self.output / f'stage{stage}_loss.png',
                         f'ivf_ros training, stage {stage}')
        self.model.eval()
        return weights

    def run(self, stages: list[int], resume: bool = False,
            start_from: Path | None = None) -> Path:
        """Train the given stages in order (resuming from output/ if asked); return weights.

        ``start_from``: a weights file stage 3 starts from instead of output/stage2.pt, with
        the run's seeded fusion block in place of the file's (what stage 2 hands over).
        """
        state = self.load_checkpoint() if resume else None
        if resume and state is None:
            raise CheckpointError(f'--resume: no checkpoint at {self.output / CHECKPOINT} '
                                  '(train without --resume to start afresh)')
        if state is not None:
            # A checkpoint of an '--stage 3' run marks only stage 3: resumed with the default
            # --stage all, stages 1 and 2 would train again from its stage 3 weights and
            # overwrite their files, and stage 3 would start over.
            earlier = [stage for stage in stages
                       if stage < state['stage'] and stage not in state['completed']]
            if earlier:
                raise CheckpointError(
                    f'--resume: {self.output / CHECKPOINT} is of a run at stage '
                    f"{state['stage']} that did not train stage(s) "
                    f'{", ".join(map(str, earlier))} before it; resuming those would start '
                    f"them from its stage {state['stage']} weights: resume with --stage "
                    f"{state['stage']}")
        if not resume:
            # An earlier run's checkpoint must not be resumed into this one's stages.
            (self.output / CHECKPOINT).unlink(missing_ok=True)
        weights = None
        for stage in stages:
            if state is not None and stage in state['completed']:
                continue
            if stage > 1 and (state is None or state['stage'] != stage) \
                    and stage - 1 not in self.completed:
                if start_from is not None and stage == 3:
                    self.load_weights(start_from, seeded_fusion=True)
                else:
                    previous = self.output / f'stage{stage - 1}.pt'
                    if not previous.is_file():
                        raise CheckpointError(f'stage {stage} starts from stage {stage - 1}: '
                                              f'{previous} is missing')
                    self.load_weights(previous, untrained_fusion=stage == 3)
            weights = self.train_stage(stage, state)
            state = None
        if weights is None:    # every stage was done before the resume
            weights = self.output / f'stage{stages[-1]}.pt'
            if not weights.is_file():
                raise CheckpointError(f'{weights} is missing although the checkpoint marks its '
                                      'stage done; train that stage again')
        return weights
