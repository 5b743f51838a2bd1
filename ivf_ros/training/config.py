"""Training configuration: config/train.yaml read into typed, validated stage schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
from typing import Any

import yaml

from ivf_ros.fusion.model import ModelConfig
from ivf_ros.training.losses import GATE_LOGIT_BOUND, TERM_NAMES

STAGES = (1, 2, 3)
SALIENCE_REGIONS = ('warm', 'detected')
SOURCE_SIDES = ('both', 'infrared')


class TrainingConfigError(ValueError):
    """The training configuration is malformed."""


@dataclass
class StageConfig:
    """Schedule and loss weights of one stage."""

    steps: int
    batch: int
    lr: float
    losses: dict[str, float]
    data: str = 'all'            # 'night' (dark frames only) or 'all'
    warmup: int = 50
    exposure_level: float = 0.5  # stage 1 target mean brightness
    # Stage 3's salience term on every warm pixel ('warm') or only on the warm pixels inside
    # the boxes the frozen detector finds on the infrared ('detected': people, cars, bicycles).
    salience_on: str = 'warm'
    salience_confidence: float = 0.25  # 'detected': the infrared boxes scored above this
    # Stage 3's source term: the objects each source finds better ('both') or only those the
    # infrared finds better ('infrared': the gate's w = 0 is the infrared plus the visible's
    # extra light, not the visible image, so it cannot give a visible-found object its look).
    source_on: str = 'both'
    gate_logit_bound: float = GATE_LOGIT_BOUND  # the gate_bound term: |logit| above this
    # Stage 3: frames with a label file add their boxes to the detector's targets (detection
    # term, detected salience). Off unless asked, so older configs train as they did.
    use_labels: bool = False
    # Draw crops with each dataset folder's share growing as the square root of its pair count
    # (PairBank.pool_weights) instead of its count. Off unless asked, as use_labels.
    balance_datasets: bool = False


@dataclass
class TrainConfig:
    """Everything a run needs besides the data."""

    seed: int = 0
    crop: int = 256
    max_side: int = 800          # larger frames are downscaled once at load (LLVIP 1280x1024)
    checkpoint_every: int = 200
    log_every: int = 10
    model: dict[str, Any] = field(default_factory=dict)
    # Frozen COCO detector for stage 3's detection term and detected-salience targets: a path,
    # absolute or relative to ../shared (ivf_ros.io.paths.shared_dir); None when unused.
    detector: str | None = None
    stages: dict[int, StageConfig] = field(default_factory=dict)


def _is_real(value: Any) -> bool:
    """Return whether a YAML value is a number (true/false are not, though bool is an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    """Return whether a YAML value is an integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number_hint(value: Any) -> str:
    """Return a hint for a number YAML read as text ('1e-3': YAML 1.1 needs a dot), or ''."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ''
        if math.isfinite(number):  # YAML spells the others .inf and .nan: no hint for those
            return f' (YAML reads {value} as text: write {number!r})'
    return ''


def _check_schedule(path: Path, stage: int, config: StageConfig) -> None:
    """Raise TrainingConfigError for a stage's steps, batch, lr, warm-up or loss weights."""
    where = f'{path}: stage {stage}'
    for name, lowest in (('steps', 1), ('batch', 1), ('warmup', 0)):
        value = getattr(config, name)
        if not _is_integer(value) or value < lowest:
            raise TrainingConfigError(f'{where}: {name} must be an integer >= {lowest}, '
                                      f'got {value!r}')
    if not _is_real(config.lr) or not config.lr > 0:
        raise TrainingConfigError(f'{where}: lr must be a number above 0, got {config.lr!r}'
                                  + _number_hint(config.lr))
    if not isinstance(config.losses, dict):
        raise TrainingConfigError(f'{where}: losses must be a mapping of term weights')
    known = TERM_NAMES[stage]
    unknown = sorted(str(name) for name in config.losses if name not in known)
    if unknown:
        raise TrainingConfigError(f'{where}: unknown loss terms {unknown} (stage {stage} has '
                                  f'{", ".join(known)})')
    for name, weight in config.losses.items():
        if not _is_real(weight) or weight < 0:
            raise TrainingConfigError(f'{where}: the weight of {name} must be a number >= 0, '
                                      f'got {weight!r}' + _number_hint(weight))


def load_config(path: str | Path) -> TrainConfig:
    """Read config/train.yaml into a TrainConfig, naming the first problem found."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise TrainingConfigError(f'cannot read training config {path}: {error}') from error
    if not isinstance(raw, dict) or not isinstance(raw.get('stages'), dict):
        raise TrainingConfigError(f'{path}: expected a mapping with a stages: section')
    stages = {}
    for stage in STAGES:
        section = raw['stages'].get(stage, raw['stages'].get(str(stage)))
        if not isinstance(section, dict):
            raise TrainingConfigError(f'{path}: stage {stage} is missing')
        try:
            stages[stage] = StageConfig(**section)
        except TypeError as error:
            raise TrainingConfigError(f'{path}: stage {stage}: {error}') from error
        _check_schedule(path, stage, stages[stage])
        if stages[stage].data not in ('night', 'all'):
            raise TrainingConfigError(f'{path}: stage {stage}: data must be night or all')
        if stages[stage].salience_on not in SALIENCE_REGIONS:
            raise TrainingConfigError(f'{path}: stage {stage}: salience_on must be one of '
                                      f'{", ".join(SALIENCE_REGIONS)}')
        if stages[stage].source_on not in SOURCE_SIDES:
            raise TrainingConfigError(f'{path}: stage {stage}: source_on must be one of '
                                      f'{", ".join(SOURCE_SIDES)}')
        confidence = stages[stage].salience_confidence
        if not _is_real(confidence) or not 0.0 <= confidence <= 1.0:
            raise TrainingConfigError(f'{path}: stage {stage}: salience_confidence must be in '
                                      '[0, 1]')
        if not isinstance(stages[stage].use_labels, bool):
            raise TrainingConfigError(f'{path}: stage {stage}: use_labels must be true or false')
        if stages[stage].use_labels and stage != 3:
            raise TrainingConfigError(f'{path}: stage {stage}: use_labels is for stage 3 (the '
                                      'detector teacher); stages 1 and 2 use no labels')
        if not isinstance(stages[stage].balance_datasets, bool):
            raise TrainingConfigError(f'{path}: stage {stage}: balance_datasets must be true or '
                                      'false')
        bound = stages[stage].gate_logit_bound
        if not _is_real(bound) or not bound > 0:
            raise TrainingConfigError(f'{path}: stage {stage}: gate_logit_bound must be above 0')
    top = {key: value for key, value in raw.items() if key != 'stages'}
    try:
        config = TrainConfig(**top, stages=stages)
    except TypeError as error:
        raise TrainingConfigError(f'{path}: {error}') from error
    for name, lowest in (('seed', 0), ('crop', 32), ('max_side', 32), ('checkpoint_every', 1),
                         ('log_every', 1)):
        value = getattr(config, name)
        if not _is_integer(value) or value < lowest:
            raise TrainingConfigError(f'{path}: {name} must be an integer >= {lowest}, '
                                      f'got {value!r}')
    if config.model is None:   # 'model:' with every key commented out
        config.model = {}
    if not isinstance(config.model, dict):
        raise TrainingConfigError(f'{path}: model: must be a mapping, got {config.model!r}')
    try:
        model = ModelConfig.from_dict(config.model, strict=True)  # fail here, not after loading
    except (TypeError, ValueError) as error:
        raise TrainingConfigError(f'{path}: model: {error}') from error
    for term in ('gate_bound', 'source'):
        if config.stages[3].losses.get(term) and not model.learned_gate:
            # A constant gate has logit 0 and the max rule +-30: nothing for the term to train.
            raise TrainingConfigError(f'{path}: stage 3: {term} needs the learned gate '
                                      f'(model: gate is {model.gate!r})')
    return config
