"""ONNX export: ONNX Runtime reproduces torch, also for sizes the network pads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ivf_ros.fusion.model import IVFNet, ModelConfig
from ivf_ros.fusion.onnx_export import export, parity

pytest.importorskip('onnxruntime')


@pytest.mark.parametrize('height, width, change', [
    (64, 96, {}), (61, 83, {'local_contrast': 0.3}),
    (61, 83, {'noise_threshold': 0.0, 'fusion_noise_threshold': 1.0})])
def test_onnx_runtime_matches_torch(tmp_path: Path, height: int, width: int,
                                    change: dict) -> None:
    torch.manual_seed(0)
    network = IVFNet(ModelConfig(**change))
    path = export(network, tmp_path / 'ivf.onnx', height=height, width=width)
    assert path.stat().st_size < 2_000_000
    assert parity(network, path, height=height, width=width) < 1e-4


def test_the_shipped_onnx_file_matches_the_shipped_weights() -> None:
    # The ONNX file was exported from the torch code of its day: equal outputs now mean the
    # network code still computes what the shipped weights were trained and reported with.
    from ivf_ros.fusion.inference import default_weights_path, load_network
    from ivf_ros.io.paths import share_file

    onnx_path = share_file('models', 'ivf_fusion.onnx')
    network = load_network(default_weights_path())
    assert parity(network, onnx_path, height=512, width=640) < 1e-4


def test_ivf_export_writes_a_checked_file_and_names_missing_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ivf_ros.cli.export import main
    from ivf_ros.fusion.inference import save_weights

    torch.manual_seed(0)
    save_weights(IVFNet(), tmp_path / 'w.pt')
    assert main(['--weights', str(tmp_path / 'w.pt'), '--output', str(tmp_path / 'w.onnx'),
                 '--width', '40', '--height', '24']) == 0
    assert (tmp_path / 'w.onnx').is_file() and 'max abs diff' in capsys.readouterr().out
    assert main(['--weights', str(tmp_path / 'absent.pt'), '--output',
                 str(tmp_path / 'x.onnx')]) == 2
    assert 'not found' in capsys.readouterr().err
    assert main(['--weights', str(tmp_path / 'w.pt'), '--output', str(tmp_path / 'grey.onnx'),
                 '--width', '40', '--height', '24', '--cast-correction', '1']) == 0
    assert 'cast_correction 1;' in capsys.readouterr().out
    assert main(['--weights', str(tmp_path / 'w.pt'), '--cast-correction', '2']) == 2
    assert 'cast_correction 2' in capsys.readouterr().err


def test_an_export_that_fails_its_parity_check_replaces_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from ivf_ros.cli import export as export_cli
    from ivf_ros.fusion.inference import save_weights

    save_weights(IVFNet(), tmp_path / 'w.pt')
    (tmp_path / 'good.onnx').write_bytes(b'the file in use')
    monkeypatch.setattr(export_cli, 'parity', lambda *args, **kwargs: 0.5)
    assert export_cli.main(['--weights', str(tmp_path / 'w.pt'), '--output',
                            str(tmp_path / 'good.onnx'), '--width', '40', '--height', '24']) == 1
    assert 'differs from torch by 5.00e-01' in capsys.readouterr().err
    assert (tmp_path / 'good.onnx').read_bytes() == b'the file in use'
    assert sorted(path.name for path in tmp_path.iterdir()) == ['good.onnx', 'w.pt']


def test_ivf_export_refuses_its_weights_a_folder_and_an_unwritable_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ivf_ros.cli.export import main
    from ivf_ros.fusion.inference import save_weights

    save_weights(IVFNet(ModelConfig(channels=[4, 4, 4, 4])), tmp_path / 'w.pt')
    weights = (tmp_path / 'w.pt').read_bytes()
    size = ['--width', '40', '--height', '24']
    # --output = --weights replaced the weights with their ONNX graph and exited 0.
    assert main(['--weights', str(tmp_path / 'w.pt'), '--output',
                 str(tmp_path / '.' / 'w.pt'), *size]) == 2
    assert 'is the --weights file itself' in capsys.readouterr().err
    assert (tmp_path / 'w.pt').read_bytes() == weights
    # A folder, or a path under a file, was an IsADirectoryError or OSError traceback.
    assert main(['--weights', str(tmp_path / 'w.pt'), '--output', str(tmp_path), *size]) == 2
    assert 'is a folder' in capsys.readouterr().err
    assert main(['--weights', str(tmp_path / 'w.pt'), '--output',
                 str(tmp_path / 'w.pt' / 'x.onnx'), *size]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith('ivf-export: error: cannot write') and len(error.splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ['w.pt']


@pytest.mark.parametrize('package', ['onnx', 'onnxruntime'])
def test_ivf_export_without_onnx_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], package: str) -> None:
    import importlib.util

    from ivf_ros.cli.export import main
    from ivf_ros.fusion.inference import save_weights

    save_weights(IVFNet(ModelConfig(channels=[4, 4, 4, 4])), tmp_path / 'w.pt')
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *args: None if name == package else find_spec(name, *args))
    # Was a ModuleNotFoundError (onnxruntime) or OnnxExporterError (onnx) traceback.
    assert main(['--weights', str(tmp_path / 'w.pt'), '--output', str(tmp_path / 'w.onnx'),
                 '--width', '40', '--height', '24']) == 2
    error = capsys.readouterr().err
    assert f'needs the {package} package' in error and 'pip install onnx onnxruntime' in error
    assert not (tmp_path / 'w.onnx').exists()


def test_export_and_parity_leave_the_callers_network_as_it_was(tmp_path: Path) -> None:
    network = IVFNet(ModelConfig()).double().train()
    path = export(network, tmp_path / 'net.onnx', height=32, width=48)
    parity(network, path, height=32, width=48)
    parameter = next(network.parameters())
    assert parameter.dtype == torch.float64 and network.training
