#!/usr/bin/env python3
"""Benchmark 640x512 rgb8 image latency between two processes over Fast DDS.

Runs the publisher and subscriber helpers of test/dds_helpers in separate processes for each
configuration (reliable / best effort, with / without config/fastdds_large_images.xml) and prints
frames received, median and p95 latency (publish call to subscriber callback, same host clock).
Use it from a shell that sourced env.sh.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile

from benchlib import positive_float, positive_int

ROOT = Path(__file__).resolve().parent.parent
HELPERS_ROOT = ROOT / 'test'
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'


def parse_arguments() -> argparse.Namespace:
    """Return the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--count', type=positive_int, default=300, help='frames per configuration')
    parser.add_argument('--rate', type=positive_float, default=30.0, help='frames per second')
    parser.add_argument('--width', type=positive_int, default=640)
    parser.add_argument('--height', type=positive_int, default=512)
    parser.add_argument('--system-default-range', action='store_true',
                        help='also run the profile with ROS_AUTOMATIC_DISCOVERY_RANGE='
                             'SYSTEM_DEFAULT (no rmw-added transports)')
    return parser.parse_args()


def run_configuration(args: argparse.Namespace, reliability: str, env: dict[str, str],
                      topic: str) -> dict[str, float]:
    """Run one publisher/subscriber pair; return received count and latency statistics."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / 'received.json'
        common = ['--topic', topic, '--reliability', reliability]
        subscriber = subprocess.Popen(
            [sys.executable, '-m', 'dds_helpers.image_subscriber', *common,
             '--count', str(args.count), '--no-digest', '--idle-timeout', '3',
             '--timeout', str(args.count / args.rate + 60), '--output', str(output)],
            cwd=HELPERS_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        publisher = subprocess.run(
            [sys.executable, '-m', 'dds_helpers.image_publisher', *common,
             '--encodings', 'rgb8', '--count', str(args.count), '--rate', str(args.rate),
             '--width', str(args.width), '--height', str(args.height), '--linger', '10'],
            cwd=HELPERS_ROOT, env=env, capture_output=True, text=True,
            timeout=args.count / args.rate + 120)
        try:
            subscriber.wait(timeout=args.count / args.rate + 90)
        finally:
            if subscriber.poll() is None:
                subscriber.terminate()
                subscriber.wait()
        published = json.loads(publisher.stdout.strip().splitlines()[-1])
        frames = json.loads(output.read_text())['frames'] if output.is_file() else []
    latencies_ms = sorted(frame['latency_ns'] / 1e6 for frame in frames)
    result = {'published': published.get('published', 0), 'received': len(frames),
              'publish_errors': published.get('publish_errors', 0)}
    if latencies_ms:
        result['median_ms'] = statistics.median(latencies_ms)
        result['p95_ms'] = latencies_ms[min(len(latencies_ms) - 1,
                                            round(0.95 * (len(latencies_ms) - 1)))]
    return result


def main() -> int:
    """Run every configuration and print a table."""
    args = parse_arguments()
    base = dict(os.environ)
    base.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
    base.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    base['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
    with_profile = dict(base, FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE))
    without_profile = {key: value for key, value in base.items()
                       if key != 'FASTDDS_DEFAULT_PROFILES_FILE'}
    configurations = [('profile', with_profile), ('no profile', without_profile)]
    if args.system_default_range:
        system_default = dict(with_profile, ROS_AUTOMATIC_DISCOVERY_RANGE='SYSTEM_DEFAULT')
        configurations.insert(1, ('profile, SYSTEM_DEFAULT range', system_default))
    print(f'{args.width}x{args.height} rgb8 ({args.width * args.height * 3 / 1e6:.2f} MB), '
          f'{args.count} frames at {args.rate:g} Hz, two processes, '
          f'discovery range {base["ROS_AUTOMATIC_DISCOVERY_RANGE"]}')
    print(f'{"configuration":<32} {"reliability":<12} {"received":>10} {"median ms":>10} '
          f'{"p95 ms":>8}')
    for number, (name, env) in enumerate(configurations):
        for reliability in ('reliable', 'best_effort'):
            result = run_configuration(args, reliability, env, f'ivf_bench_{number}_{reliability}')
            received = f'{result["received"]}/{result["published"]}'
            median = f'{result["median_ms"]:.2f}' if 'median_ms' in result else '-'
            p95 = f'{result["p95_ms"]:.2f}' if 'p95_ms' in result else '-'
            print(f'{name:<32} {reliability:<12} {received:>10} {median:>10} {p95:>8}',
                  flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
