"""FusionModel: uint8 in/out for any size, input validation, ModelLoadError, shipped weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ivf_ros.fusion.inference import (
    default_weights_path,
    FusionInputError,
    FusionModel,
    ModelLoadError,
    save_weights,
)
from ivf_ros.fusion.model import IVFNet


@pytest.fixture(scope='module')
def model() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(IVFNet(), device='cpu')


@pytest.mark.parametrize('height, width', [(479, 641), (7, 5), (3, 2)])
def test_fuse_shapes_and_dtypes(model: FusionModel, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    visible = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    infrared = rng.integers(0, 256, (height, width), dtype=np.uint8)
    fused, weights = model.fuse(visible, infrared)
    assert fused.shape == (height, width, 3) and fused.dtype == np.uint8
    assert weights.shape == (height, width) and weights.dtype == np.float32
    assert 0.0 <= weights.min() and weights.max() <= 1.0
    result = model.run(visible, infrared[..., None], with_enhanced=True)
    assert result.enhanced.shape == (height, width, 3) and result.enhanced.dtype == np.uint8
    assert model.enhance(visible).shape == (height, width, 3)


def test_bad_inputs_raise_fusion_input_error(model: FusionModel) -> None:
    visible = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(FusionInputError, match='sizes differ'):
        model.fuse(visible, np.zeros((8, 9), np.uint8))
    with pytest.raises(FusionInputError, match='uint8'):
        model.fuse(visible.astype(np.float32), np.zeros((8, 8), np.uint8))
    with pytest.raises(FusionInputError, match='RGB'):
        model.fuse(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))


def test_missing_corrupt_and_mismatched_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match='not found'):
        FusionModel.load(tmp_path / 'missing.pt', device='cpu')
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(b'not a torch file')
    with pytest.raises(ModelLoadError, match='corrupt.pt'):
        FusionModel.load(corrupt, device='cpu')
    foreign = tmp_path / 'foreign.pt'
    torch.save({'something': 1}, foreign)
    with pytest.raises(ModelLoadError, match='not an ivf_ros weights file'):
        FusionModel.load(foreign, device='cpu')
    mismatched = tmp_path / 'mismatched.pt'
    save_weights(IVFNet(), mismatched)
    payload = torch.load(mismatched, weights_only=True)
    payload['config']['channels'] = [8, 8, 8, 8]
    torch.save(payload, mismatched)
    with pytest.raises(ModelLoadError, match='do not match'):
        FusionModel.load(mismatched, device='cpu')
    payload['config'] = IVFNet().config.to_dict() | {'local_contrast': -1.0}
    torch.save(payload, mismatched)
    with pytest.raises(ModelLoadError, match='invalid config: local_contrast'):
        FusionModel.load(mismatched, device='cpu')


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    network = IVFNet()
    save_weights(network, tmp_path / 'w.pt', {'seed': 1})
    loaded = FusionModel.load(tmp_path / 'w.pt', device='cpu')
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, loaded.network.state_dict()[name])


def test_shipped_weights_load_and_fuse() -> None:
    path = default_weights_path()
    if not path.is_file():
        pytest.skip(f'no shipped weights at {path}')
    model = FusionModel.load(device='cpu')
    fused, _ = model.fuse(np.full((40, 48, 3), 20, np.uint8), np.full((40, 48), 90, np.uint8))
    assert fused.shape == (40, 48, 3)
    with pytest.warns(UserWarning, match='fp16'):
        FusionModel.load(device='cpu', half=True)


def test_fusion_node_parameters_choose_the_cast_correction(tmp_path: Path) -> None:
    from ivf_ros.pipeline.frames import load_fusion_model

    save_weights(IVFNet(), tmp_path / 'w.pt')
    params = {'model_path': str(tmp_path / 'w.pt'), 'device': 'cpu', 'half': False}
    stored = load_fusion_model({**params, 'cast_correction': -1.0})
    assert stored.network.config.cast_correction == 0.0          # the weights' own value
    asked = load_fusion_model({**params, 'cast_correction': 0.5})
    assert asked.network.config.cast_correction == 0.5
    # A grey-world request on an orange frame greys its colour; the stored value keeps it.
    visible = np.zeros((64, 64, 3), np.uint8)
    visible[...] = (200, 120, 40)
    infrared = np.full((64, 64), 120, np.uint8)
    spread = {name: np.ptp(model.fuse(visible, infrared)[0].astype(int), axis=2).mean()
              for name, model in (('stored', stored), ('asked', asked))}
    assert spread['asked'] < spread['stored']


def test_two_threads_fusing_at_once_get_their_own_results(model: FusionModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    pairs = [(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8),
              rng.integers(0, 255, (40, 56), dtype=np.uint8)) for _ in range(6)]
    alone = [model.run(visible, infrared).fused for visible, infrared in pairs]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda pair: model.run(*pair).fused, pairs))
    # (On CPU this checks the lock costs nothing in results; the race it prevents is CUDA
    # graphs' shared static buffers, which need a GPU.)
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
