"""ivf-export: write the fusion weights as ONNX and check ONNX Runtime against torch.

Usage: ``ivf-export [--weights models/ivf_fusion.pt] [--output models/ivf_fusion.onnx]
[--width 640 --height 512] [--cast-correction 0..1]``. The graph has one fixed input size and
one colour-cast correction (fusion_node's ``cast_correction`` parameter at run time); export
again for another camera or another correction.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import contextlib
import importlib.util
from pathlib import Path
import sys

from ivf_ros.fusion.inference import default_weights_path, load_network, ModelLoadError
from ivf_ros.fusion.onnx_export import export, parity
from ivf_ros.io.paths import share_file

# Largest ONNX Runtime vs torch difference an export may have (the shipped file: 3.6e-07).
PARITY_TOLERANCE = 1e-4


def main(argv: Sequence[str] | None = None) -> int:
    """Export the shipped (or given) weights and print the parity check."""
    parser = argparse.ArgumentParser(prog='ivf-export', description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=None,
                        help='fusion weights (default: the shipped models/ivf_fusion.pt)')
    parser.add_argument('--output', type=Path, default=None,
                        help='ONNX file to write (default: models/ivf_fusion.onnx)')
    parser.add_argument('--width', type=int, default=640,
                        help='input width in pixels (default: 640)')
    parser.add_argument('--height', type=int, default=512,
                        help='input height in pixels (default: 512)')
    parser.add_argument('--cast-correction', type=float, default=None, metavar='SHARE',
                        help="share (0..1) of the frame's colour cast the fused image removes, "
                             "built into the graph (default: the weights' own, 0 for the "
                             'shipped ones; 1 = grey-world)')
    args = parser.parse_args(argv)
    if args.width < 1 or args.height < 1:
        parser.error('--width and --height must be positive')
    weights = args.weights or default_weights_path()
    output = args.output or share_file('models', 'ivf_fusion.onnx')
    missing = [name for name in ('onnx', 'onnxruntime') if importlib.util.find_spec(name) is None]
    if missing:   # torch exports through onnx, the parity check runs onnxruntime
        print(f'ivf-export: error: ivf-export needs the {" and ".join(missing)} package(s): '
              'pip install onnx onnxruntime', file=sys.stderr)
        return 2
    # Exported and checked beside the target, renamed over it only once it passes: a failed
    # export never replaces a good file (a link, pip mode's share/ folder, is followed).
    target = output.resolve()
    if target.is_dir():
        print(f'ivf-export: error: --output {output} is a folder; name the .onnx file to write',
              file=sys.stderr)
        return 2
    if target == Path(weights).resolve():
        # The rename below would replace the weights with their own ONNX graph.
        print(f'ivf-export: error: --output {output} is the --weights file itself; name '
              'another file', file=sys.stderr)
        return 2
    try:
        network = load_network(weights, args.cast_correction)
    except ModelLoadError as error:
        print(f'ivf-export: error: {error}', file=sys.stderr)
        return 2
    candidate = target.with_name(f'.{target.stem}.exporting.onnx')
    try:
        export(network, candidate, args.height, args.width)
        difference = parity(network, candidate, args.height, args.width)
        if not difference <= PARITY_TOLERANCE:
            print(f'ivf-export: error: ONNX Runtime differs from torch by {difference:.2e} '
                  f'(over {PARITY_TOLERANCE:g}): {output} was not written', file=sys.stderr)
            return 1
        candidate.replace(target)
    except OSError as error:   # an output folder that cannot be made or written
        print(f'ivf-export: error: cannot write {output}: {error}', file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):   # none was written
            candidate.unlink()
    print(f'exported {output} ({target.stat().st_size / 1e6:.2f} MB) from {weights}, '
          f'cast_correction {network.config.cast_correction:g}; '
          f'ONNX Runtime vs torch max abs diff {difference:.2e}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
