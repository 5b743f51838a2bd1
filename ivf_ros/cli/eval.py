"""ivf-eval: compare fusion methods on paired visible/infrared images with the field's metrics.

Examples::

    ivf-eval ../shared/datasets --split validation                 # all baselines, night val
    ivf-eval ../shared/datasets/msrs --night-only -m laplacian model results/fused/
    ivf-eval my_pairs/ -m clahe_laplacian ours=runs/fusion/best.pt --limit 20 -o output/cmp
    ivf-eval detect                     # detection AP per input (ivf_ros.cli.eval_detection)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
import shlex
import sys

from ivf_ros.cli.help import DefaultsHelpFormatter, node_parameter
from ivf_ros.evaluation.baselines import BASELINES
from ivf_ros.evaluation.detection import LabelError, MAP_CONFIDENCE, RECALL_CONFIDENCE
from ivf_ros.evaluation.metrics import MetricInputError, METRICS
from ivf_ros.evaluation.report import (
    DetectionSetup,
    evaluate_methods,
    MethodError,
    resolve_method,
    write_report,
)
from ivf_ros.io.datasets import (
    all_pairs,
    DatasetError,
    is_night,
    is_validation,
    list_pairs,
    PairedImage,
    SPLITS,
    VALIDATION,
    VISIBLE_DIR,
)
from ivf_ros.io.paths import datasets_dir
from ivf_ros.nodes.param_specs import DETECTION_NODE


def build_parser() -> argparse.ArgumentParser:
    """Return the ivf-eval argument parser."""
    parser = argparse.ArgumentParser(
        prog='ivf-eval',
        description='Evaluate visible-infrared fusion methods (baselines, fused-image folders, '
                    'network checkpoints) and write a Markdown/CSV/PNG report.',
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument(
        'data', nargs='*', type=Path,
        help='paired folders (vi/ + ir/) or roots holding several of them '
             f'(default: {datasets_dir()})')
    parser.add_argument(
        '-m', '--methods', nargs='+', default=list(BASELINES), metavar='METHOD',
        help=f'baseline names ({", ".join(BASELINES)}), "model" (shipped weights), a folder of '
             'fused images named like the pairs, or a checkpoint (.pt); LABEL=METHOD renames')
    parser.add_argument('--split', choices=SPLITS,
                        help=f'keep one split of the team split ({VALIDATION} = the labelled '
                             'night pairs)')
    parser.add_argument('--night-only', action='store_true', help='keep night pairs only')
    parser.add_argument('--limit', type=int, metavar='N', help='evaluate the first N pairs only')
    parser.add_argument('-o', '--output', type=Path, default=Path('output/eval'),
                        help='report folder')
    parser.add_argument('--metrics', nargs='+', choices=list(METRICS), metavar='METRIC',
                        help=f'subset of metrics ({", ".join(METRICS)}); default all')
    parser.add_argument('--examples', type=int, default=4,
                        help='pairs shown in the image grid')
    parser.add_argument('--device', default='auto', help='device for checkpoints: auto|cpu|cuda:N')
    parser.add_argument('--title', default='Fusion evaluation', help='report title')
    parser.add_argument('--detector', metavar='WEIGHTS',
                        help='also run this Ultralytics YOLO model (.pt, or .yaml for random '
                             'weights) on every output: detections per image, confidences')
    parser.add_argument('--labels', type=Path, metavar='DIR',
                        help='YOLO label files <pair name>.txt for mAP@0.5 and mAP@0.5:0.95 '
                             "(needs --detector; class ids are the detector's unless "
                             '--label-names says otherwise; a pair without a file has no '
                             'objects, the Ultralytics convention)')
    parser.add_argument('--label-names', nargs='+', metavar='NAME',
                        help="the class names of the label files' ids 0, 1, ...; detections "
                             "are matched to them by name; '-' leaves an id out of every AP "
                             '(../shared/datasets labels: person car bicycle; `ivf-eval '
                             'detect` knows that by itself)')
    parser.add_argument('--detector-conf', type=float, default=None,
                        help='detector confidence threshold (default 0.001 with --labels, as '
                             'yolo val computes mAP over the whole precision-recall curve; '
                             'else 0.25, for counts of confident detections)')
    parser.add_argument('--detector-imgsz', default=640,
                        type=node_parameter(DETECTION_NODE, 'imgsz', int),
                        help='detector input size (a multiple of 32)')
    parser.add_argument('--allow-unsafe-checkpoint', action='store_true',
                        help='load a --detector file that needs full pickle (it can run code)')
    parser.add_argument('--no-figures', action='store_true',
                        help='write the Markdown and CSV files only (no PNGs)')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def collect_pairs(data: Sequence[Path], split: str | None = None, night_only: bool = False,
                  limit: int | None = None) -> list[PairedImage]:
    """Return the pairs of paired folders and dataset roots, filtered by split/night/limit."""
    pairs: list[PairedImage] = []
    for path in data or [datasets_dir()]:
        if not path.is_dir():
            raise DatasetError(f'{path} is not a folder')
        pairs += list_pairs(path) if (path / VISIBLE_DIR).is_dir() else all_pairs(path)
    if split is not None:
        pairs = [pair for pair in pairs if is_validation(pair) == (split == VALIDATION)]
    if night_only:
        pairs = [pair for pair in pairs if is_night(pair)]
    if limit is not None:
        if limit < 1:
            raise DatasetError(f'--limit must be at least 1, got {limit}')
        pairs = pairs[:limit]
    return pairs


def describe_selection(args: argparse.Namespace) -> str:
    """Return a sentence saying which pairs were kept."""
    parts = []
    if args.split:
        parts.append(f'split {args.split}')
    if args.night_only:
        parts.append('night pairs only')
    if args.limit:
        parts.append(f'first {args.limit}')
    return ('Selection: ' + ', '.join(parts) + '.') if parts else ''


# A --label-names entry for a label id that no detector class matches (M3FD's lamps).
IGNORED_LABEL = '-'


def build_detection(args: argparse.Namespace) -> DetectionSetup | None:
    """Return the detector set-up asked for by --detector/--labels (None without --detector)."""
    if args.labels is not None and args.detector is None:
        raise MethodError('--labels needs --detector')
    if args.label_names and args.labels is None:
        raise MethodError('--label-names needs --labels')
    if args.detector is None:
        return None
    if args.labels is not None and not args.labels.is_dir():
        raise DatasetError(f'--labels {args.labels} is not a folder')
    from ivf_ros.pipeline.detector import DetectorLoadError, YoloDetector

    conf = args.detector_conf
    if conf is None:
        conf = MAP_CONFIDENCE if args.labels is not None else RECALL_CONFIDENCE
    # Counts of detections per image stay at the threshold a deployed detector would use.
    counted = RECALL_CONFIDENCE if args.detector_conf is None else args.detector_conf
    try:
        detector = YoloDetector(args.detector, conf=conf,
                                imgsz=args.detector_imgsz, device=args.device,
                                allow_unsafe_checkpoint=args.allow_unsafe_checkpoint)
    except DetectorLoadError as error:
        raise MethodError(str(error)) from error
    counting = f', counted >= {counted}' if counted != conf else ''
    description = (f'Detector `{args.detector}` (conf >= {conf}{counting}, imgsz '
                   f'{args.detector_imgsz}) on the fused images of each method'
                   + (f'; labels from `{args.labels}`.' if args.labels else '; no labels.'))
    if not args.label_names:
        return DetectionSetup(detector.detect, detector.names, description, args.labels,
                              count_confidence=counted)
    from ivf_ros.evaluation.detection import to_dataset_classes

    names = {index: name for index, name in enumerate(args.label_names)
             if name != IGNORED_LABEL}
    named = list(names.values())
    repeated = sorted({name for name in named if named.count(name) > 1})
    if repeated:
        raise MethodError(f'--label-names names {repeated} more than once (one name per id)')
    unknown = [name for name in named if name not in detector.names.values()]
    if unknown:
        raise MethodError(f"--label-names: {args.detector} has no class {unknown} (write '-' "
                          'for an id to leave out)')
    if not names:
        raise MethodError(f"--label-names leaves every id out ('{IGNORED_LABEL}'): name one")
    ignored = frozenset(range(len(args.label_names))) - names.keys()
    left_out = f' Left out: ids {sorted(ignored)}.' if ignored else ''
    return DetectionSetup(lambda image: to_dataset_classes(detector.detect(image), names),
                          names, description + f' Label ids: {names}.{left_out}', args.labels,
                          ignored_ids=ignored, count_confidence=counted)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ivf-eval; return the exit status (0 ok, 2 bad input)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ['detect']:
        from ivf_ros.cli.eval_detection import main as detect_main

        return detect_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.metrics:   # a metric named twice would be two identical columns
        args.metrics = list(dict.fromkeys(args.metrics))
    if args.examples < 0:
        parser.error(f'--examples must be >= 0, got {args.examples}')
    if args.output.exists() and not args.output.is_dir():
        parser.error(f'--output {args.output} is a file, not a folder')
    try:
        pairs = collect_pairs(args.data, args.split, args.night_only, args.limit)
        methods = [resolve_method(spec, args.device) for spec in args.methods]
        names = [method.name for method in methods]
        if len(set(names)) != len(names):
            raise MethodError(f'method names must be unique, got {names} (use LABEL=METHOD)')
        detection = build_detection(args)
        evaluation = evaluate_methods(pairs, methods, example_count=args.examples,
                                      metric_names=args.metrics,
                                      progress=not args.no_progress, detection=detection)
        command = shlex.join(['ivf-eval'] + list(sys.argv[1:] if argv is None else argv))
        paths = write_report(evaluation, args.output, args.title, command,
                             describe_selection(args), figures=not args.no_figures)
    except (DatasetError, MethodError, LabelError, MetricInputError, OSError) as error:
        print(f'ivf-eval: error: {error}', file=sys.stderr)
        return 2
    if evaluation.resized:
        print(f'note: {len(evaluation.resized)} pair(s) with an infrared image of another size '
              'than the visible one: resized to it (listed in the report)', file=sys.stderr)
    for key, reason in evaluation.unreadable:
        print(f'warning: pair {key} left out: {reason}', file=sys.stderr)
    print(f'report: {paths["report"]}')
    for key in ('summary', 'per_image', 'bars', 'grid'):
        if key in paths:
            print(f'{key}: {paths[key]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
