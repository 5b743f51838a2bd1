"""The one inference API of ivf_ros: load the fusion network and fuse uint8 image pairs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
import threading
from typing import Any
import warnings

import numpy as np
import torch

from ivf_ros.fusion.model import IVFNet, ModelConfig
from ivf_ros.io.errors import first_line
from ivf_ros.io.paths import share_file

WEIGHTS_FORMAT = 'ivf_fusion/1'
MAX_CUDA_GRAPHS = 4  # input sizes kept captured at once


class ModelLoadError(RuntimeError):
    """The fusion weights are missing, unreadable or do not match the network."""


class FusionInputError(ValueError):
    """The visible/infrared arrays given to the fusion network are malformed."""


@dataclass
class FusionResult:
    """Outputs of one fusion call (all the size of the visible input)."""

    fused: np.ndarray                  # (h, w, 3) uint8 RGB
    weights: np.ndarray                # (h, w) float32 in [0, 1], the infrared share
    enhanced: np.ndarray | None = None  # (h, w, 3) uint8 RGB enhanced visible, if asked for


def default_weights_path() -> Path:
    """Return the shipped weights, share/ivf_ros/models/ivf_fusion.pt."""
    return share_file('models', 'ivf_fusion.pt')


def resolve_device(device: str = 'auto') -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a torch device ('auto' prefers CUDA)."""
    if device == 'auto':
        return torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"unknown device '{device}' (use auto, cpu or cuda:N)") from error
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' asked for but CUDA is not available")
    if resolved.type == 'cuda' and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device '{device}' asked for but this machine has "
                         f'{torch.cuda.device_count()} CUDA device(s)')
    if resolved.type not in ('cpu', 'cuda'):
        raise ValueError(f"unsupported device '{device}' (use auto, cpu or cuda:N)")
    return resolved


def save_weights(model: IVFNet, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Save a state dict plus the config dict (never the pickled module), atomically."""
    payload = {
        'format': WEIGHTS_FORMAT,
        'config': model.config.to_dict(),
        'state_dict': {name: tensor.detach().cpu() for name, tensor
                       in model.state_dict().items()},
        'meta': dict(extra or {}),
    }
    # Written beside the target, then renamed over it: a kill never leaves a half file, and a
    # link (pip mode's share/ folder) is followed, not replaced.
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f'.{target.name}.tmp')
    torch.save(payload, str(temporary))
    temporary.replace(target)


def load_network(path: str | Path, cast_correction: float | None = None) -> IVFNet:
    """Build an IVFNet from a weights file; raise ModelLoadError naming the path.

    ``cast_correction`` (0..1) overrides the share of the frame's colour cast that the fused
    image removes (None: the value stored with the weights, 0 for the shipped ones).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f'fusion weights not found: {path}')
    try:
        # weights_only: a weights file can never run code on load.
        payload = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for corrupt files
        raise ModelLoadError(f'cannot read fusion weights {path}: {first_line(error)}') \
            from error
    if not isinstance(payload, dict) or 'state_dict' not in payload or 'config' not in payload:
        raise ModelLoadError(f'{path} is not an ivf_ros weights file (no state_dict/config)')
    try:
        config = ModelConfig.from_dict(payload['config'])
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f'fusion weights {path} have an invalid config: {error}') from error
    if cast_correction is not None:
        try:   # replace() re-runs the config's range checks; the rendering reads it per frame
            config = replace(config, cast_correction=cast_correction)
        except (TypeError, ValueError) as error:
            raise ModelLoadError(f'cast_correction {cast_correction}: {error}') from error
    try:
        network = IVFNet(config)
        network.load_state_dict(payload['state_dict'])
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        raise ModelLoadError(f'fusion weights {path} do not match the network: {error}') \
            from error
    return network.eval()


class FusionModel:
    """Fuse a visible RGB and an infrared image with the trained network."""

    def __init__(self, network: IVFNet, device: str = 'auto', half: bool = False,
                 source: str = '<memory>', cuda_graphs: bool = True) -> None:
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        if half and self.torch_device.type != 'cuda':
            warnings.warn('fp16 is only used on CUDA; running float32 on CPU', stacklevel=2)
            half = False
        self.half = half
        self.dtype = torch.float16 if half else torch.float32
        self.source = source
        self.network = network.eval().to(self.torch_device, self.dtype)
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        # CUDA graphs: a frame costs one replay instead of ~150 kernel launches from Python.
        self.cuda_graphs = cuda_graphs and self.torch_device.type == 'cuda'
        self._graphs: dict[tuple, tuple] = {}
        # One pair at a time: a CUDA graph replays into static buffers that a second caller
        # would overwrite mid-frame (and on CPU both would share the same intra-op threads).
        self._run_lock = threading.Lock()
        if self.torch_device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
        self._warm_up()

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = 'auto',
             half: bool = False, cuda_graphs: bool = True,
             cast_correction: float | None = None) -> FusionModel:
        """Load weights (None: the shipped models/ivf_fusion.pt) onto a device.

        ``cast_correction`` (0..1) overrides the share of the frame's colour cast that the
        fused image removes (None: the value stored with the weights, 0 for the shipped ones).
        """
        path = Path(path) if path is not None else default_weights_path()
        network = load_network(path, cast_correction)
        return cls(network, device=device, half=half, source=str(path),
                   cuda_graphs=cuda_graphs)

    def _warm_up(self) -> None:
        """Run one small pass so the first real frame does not pay for lazy initialisation."""
        visible = np.zeros((64, 64, 3), np.uint8)
        infrared = np.zeros((64, 64), np.uint8)
        self.run(visible, infrared)

    @staticmethod
    def _check(visible_rgb: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        """Validate the pair; return the infrared as (h, w)."""
        if not isinstance(visible_rgb, np.ndarray) or not isinstance(infrared, np.ndarray):
            raise FusionInputError('visible and infrared must be numpy arrays')
        if visible_rgb.dtype != np.uint8 or infrared.dtype != np.uint8:
            raise FusionInputError(
                f'expected uint8 images, got visible {visible_rgb.dtype}, '
                f'infrared {infrared.dtype}')
        if visible_rgb.ndim != 3 or visible_rgb.shape[2] != 3:
            raise FusionInputError(f'visible must be (h, w, 3) RGB, got {visible_rgb.shape}')
        if infrared.ndim == 3 and infrared.shape[2] == 1:
            infrared = infrared[:, :, 0]
        if infrared.ndim != 2:
            raise FusionInputError(f'infrared must be (h, w), got {infrared.shape}')
        if infrared.shape != visible_rgb.shape[:2]:
            raise FusionInputError(
                f'visible {visible_rgb.shape[:2]} and infrared {infrared.shape} sizes differ')
        if min(infrared.shape) < 2:
            raise FusionInputError(f'image too small: {infrared.shape}')
        return infrared

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        """(h, w[, c]) uint8 host array -> (h, w, c) uint8 device tensor (zero-copy on CPU)."""
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(-1)
        return tensor.to(self.torch_device, non_blocking=True)  # uint8: 4x less to transfer

    def _pipeline(self, visible_u8: torch.Tensor, infrared_u8: torch.Tensor,
                  paths: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Preprocess, infer, postprocess on the device: uint8 HWC in, uint8 HWC out."""
        # preprocess: (h, w, c) uint8 -> (1, c, h, w) in [0, 1]
        visible = visible_u8.permute(2, 0, 1).unsqueeze(0).to(self.dtype).div(255.0)
        infrared = infrared_u8.permute(2, 0, 1).unsqueeze(0).to(self.dtype).div(255.0)
        outputs = self.network.forward_all(visible, infrared, outputs=paths)
        # postprocess: (1, 3, h, w) in [0, 1] -> (h, w, 3) uint8; weights (h, w) float32
        result = {'weights': outputs['weights'][0, 0].float()}
        for name in paths:
            scaled = outputs[name][0].permute(1, 2, 0).mul(255.0).add(0.5).clamp(0, 255)
            result[name] = scaled.to(torch.uint8)
        return result

    def _graphed(self, visible_u8: torch.Tensor, infrared_u8: torch.Tensor,
                 paths: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Replay a CUDA graph of the pipeline (one per input size): no per-kernel launches."""
        key = (tuple(visible_u8.shape), paths)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= MAX_CUDA_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            static_visible, static_infrared = visible_u8.clone(), infrared_u8.clone()
            stream = torch.cuda.Stream(self.torch_device)
            stream.wait_stream(torch.cuda.current_stream(self.torch_device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up cuDNN autotuning outside the capture
                    self._pipeline(static_visible, static_infrared, paths)
            torch.cuda.current_stream(self.torch_device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_outputs = self._pipeline(static_visible, static_infrared, paths)
            entry = (graph, static_visible, static_infrared, static_outputs)
            self._graphs[key] = entry
        graph, static_visible, static_infrared, static_outputs = entry
        static_visible.copy_(visible_u8)
        static_infrared.copy_(infrared_u8)
        graph.replay()
        return static_outputs

    @torch.inference_mode()
    def run(self, visible_rgb: np.ndarray, infrared: np.ndarray,
            with_enhanced: bool = False) -> FusionResult:
        """Fuse one pair: (h, w, 3) uint8 RGB + (h, w) uint8 infrared -> FusionResult."""
        infrared = self._check(visible_rgb, infrared)
        paths = ('fused', 'enhanced') if with_enhanced else ('fused',)
        with self._run_lock:
            visible_u8, infrared_u8 = self._upload(visible_rgb), self._upload(infrared)
            if self.cuda_graphs:
                outputs = self._graphed(visible_u8, infrared_u8, paths)
            else:
                outputs = self._pipeline(visible_u8, infrared_u8, paths)
            # Copied out under the lock: a graph's outputs are its static buffers.
            return FusionResult(
                fused=outputs['fused'].cpu().numpy(),
                weights=outputs['weights'].cpu().numpy(),
                enhanced=outputs['enhanced'].cpu().numpy() if with_enhanced else None,
            )

    def fuse(self, visible_rgb: np.ndarray, infrared: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        """Return (fused (h, w, 3) uint8 RGB, infrared-share weight map (h, w) float32)."""
        result = self.run(visible_rgb, infrared)
        return result.fused, result.weights

    @torch.inference_mode()
    def enhance(self, visible_rgb: np.ndarray) -> np.ndarray:
        """Return the enhanced visible image (h, w, 3) uint8 (visible branch + decoder only)."""
        self._check(visible_rgb, np.zeros(visible_rgb.shape[:2], np.uint8))
        visible = self._upload(visible_rgb).permute(2, 0, 1).unsqueeze(0).to(self.dtype) / 255.0
        enhanced = self.network.forward_all(visible, None, outputs=('enhanced',))['enhanced']
        scaled = enhanced[0].permute(1, 2, 0).mul(255.0).add(0.5).clamp(0, 255)
        return scaled.to(torch.uint8).cpu().numpy()
