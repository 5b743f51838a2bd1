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
# Seeds up to 2**32 - 1: each stage draws from seed * 10 + stage, which torch keeps in 64 bits.
MAX_SEED = 2**32 - 1
SALIENCE_REGIONS = ('warm', 'detected')
SOURCE_SIDES = ('both', 'infrared')


class TrainingConfigError(ValueError):
    """The training configuration is malformed."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader (builds plain data only, never runs code) that refuses repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping; raise ConstructorError for a key given twice (the last would win)."""
        # A 'steps: 500' added above a forgotten 'steps: 2000' was silently overruled.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == 'tag:yaml.org,2002:merge':   # '<<: *anchor' may repeat
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:   # an unhashable key: SafeLoader names it below
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    'while constructing a mapping', node.start_mark,
                    f'found the key {key!r} twice', key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


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


def _is_finite(value: Any) -> bool:
    """Return whether a YAML value is a finite number (.nan and .inf train NaN weights)."""
    return _is_real(value) and math.isfinite(value)


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
    if not _is_finite(config.lr) or not config.lr > 0:
        raise TrainingConfigError(f'{where}: lr must be a finite number above 0, got '
                                  f'{config.lr!r}' + _number_hint(config.lr))
    if not _is_finite(config.exposure_level) or not 0.0 <= config.exposure_level <= 1.0:
        # The exposure term pulls patch brightness (0..1) towards it; text fails mid-training.
        raise TrainingConfigError(f'{where}: exposure_level must be a number in [0, 1], got '
                                  f'{config.exposure_level!r}'
                                  + _number_hint(config.exposure_level))
    if not isinstance(config.losses, dict):
        raise TrainingConfigError(f'{where}: losses must be a mapping of term weights')
    known = TERM_NAMES[stage]
    unknown = sorted(str(name) for name in config.losses if name not in known)
    if unknown:
        raise TrainingConfigError(f'{where}: unknown loss terms {unknown} (stage {stage} has '
                                  f'{", ".join(known)})')
    for name, weight in config.losses.items():
        if not _is_finite(weight) or weight < 0:
            raise TrainingConfigError(f'{where}: the weight of {name} must be a finite number '
                                      f'>= 0, got {weight!r}' + _number_hint(weight))
    if not any(config.losses.values()):
        # Stage 3 computes only the weighted terms: with none there is no loss to step on.
        raise TrainingConfigError(f'{where}: losses must give at least one term a weight '
                                  'above 0')


def _check_weighted(path: Path, stages: dict[int, StageConfig], model: ModelConfig) -> None:
    """Raise TrainingConfigError for a stage 1 or 2 term that training computes but no weight."""
    # Stages 1 and 2 compute all their terms (stage 1 only render without the enhancement):
    # a term left out would stop the run at that stage's first step, after the earlier stages.
    computed = {1: TERM_NAMES[1] if model.enhance else ('render',), 2: TERM_NAMES[2]}
    for stage, names in computed.items():
        missing = [name for name in names if name not in stages[stage].losses]
        if missing:
            raise TrainingConfigError(f'{path}: stage {stage}: losses has no weight for '
                                      f'{", ".join(missing)} (give each term of the stage a '
                                      'weight, 0 to turn it off)')


def _unknown_keys(where: str, values: dict[Any, Any], known: Any) -> None:
    """Raise TrainingConfigError naming the keys of values that are not in known (typos)."""
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise TrainingConfigError(f'{where}: unknown key(s) {", ".join(unknown)} (known: '
                                  f'{", ".join(str(key) for key in known)})')


def load_config(path: str | Path) -> TrainConfig:
    """Read config/train.yaml into a TrainConfig, naming the first problem found."""
    path = Path(path)
    try:
        # A SafeLoader subclass: plain data only, never code (the file is user input).
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as error:
        raise TrainingConfigError(f'cannot read training config {path}: {error}') from error
    if not isinstance(raw, dict) or not isinstance(raw.get('stages'), dict):
        raise TrainingConfigError(f'{path}: expected a mapping with a stages: section')
    # A stage 4 or a stage given as both 1 and '1' would otherwise be silently ignored.
    unknown = sorted(str(key) for key in raw['stages'] if str(key) not in map(str, STAGES))
    if unknown:
        raise TrainingConfigError(f'{path}: stages: unknown stage(s) {", ".join(unknown)} '
                                  f'(the stages are {", ".join(map(str, STAGES))})')
    twice = [stage for stage in STAGES if stage in raw['stages'] and str(stage) in raw['stages']]
    if twice:
        raise TrainingConfigError(f'{path}: stages: stage {twice[0]} is given twice')
    stages = {}
    for stage in STAGES:
        section = raw['stages'].get(stage, raw['stages'].get(str(stage)))
        if not isinstance(section, dict):
            raise TrainingConfigError(f'{path}: stage {stage} is missing')
        _unknown_keys(f'{path}: stage {stage}', section, StageConfig.__dataclass_fields__)
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
    _unknown_keys(str(path), top, [name for name in TrainConfig.__dataclass_fields__
                                   if name != 'stages'])
    try:
        config = TrainConfig(**top, stages=stages)
    except TypeError as error:
        raise TrainingConfigError(f'{path}: {error}') from error
    for name, lowest in (('crop', 32), ('max_side', 32), ('checkpoint_every', 1),
                         ('log_every', 1)):
        value = getattr(config, name)
        if not _is_integer(value) or value < lowest:
            raise TrainingConfigError(f'{path}: {name} must be an integer >= {lowest}, '
                                      f'got {value!r}')
    check_seed(config.seed, f'{path}: seed')
    if config.detector is not None and not isinstance(config.detector, str):
        raise TrainingConfigError(f'{path}: detector must be a file path or null, got '
                                  f'{config.detector!r}')
    if config.model is None:   # 'model:' with every key commented out
        config.model = {}
    if not isinstance(config.model, dict):
        raise TrainingConfigError(f'{path}: model: must be a mapping, got {config.model!r}')
    _unknown_keys(f'{path}: model', config.model, ModelConfig.__dataclass_fields__)
    try:
        model = ModelConfig.from_dict(config.model, strict=True)  # fail here, not after loading
    except (TypeError, ValueError) as error:
        raise TrainingConfigError(f'{path}: model: {error}') from error
    for term in ('gate_bound', 'source'):
        if config.stages[3].losses.get(term) and not model.learned_gate:
            # A constant gate has logit 0 and the max rule +-30: nothing for the term to train.
            raise TrainingConfigError(f'{path}: stage 3: {term} needs the learned gate '
                                      f'(model: gate is {model.gate!r})')
    _check_weighted(path, config.stages, model)
    return config


def check_seed(seed: Any, where: str = 'seed') -> None:
    """Raise TrainingConfigError unless seed is an integer in [0, MAX_SEED]."""
    if not _is_integer(seed) or not 0 <= seed <= MAX_SEED:
        raise TrainingConfigError(f'{where} must be an integer in [0, {MAX_SEED}], got {seed!r}')
