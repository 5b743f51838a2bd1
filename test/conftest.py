"""Shared test fixtures: ROS isolation per test run, and the optional ../shared data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ivf_ros.io.paths import datasets_dir, shared_dir, SOURCE_ROOT

# Every test run gets its own DDS domain so parallel runs (CI, developers) never see each other.
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault(
    'FASTDDS_DEFAULT_PROFILES_FILE', str(SOURCE_ROOT / 'config' / 'fastdds_large_images.xml'))
os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('YOLO_AUTOINSTALL', '0')

# Once the ROS 2 tools are installed, launch_testing's pytest plugin loads in every run and imports
# `launch`, whose logging makes each logger created afterwards a LaunchLogger that does not
# propagate: caplog and pytest's log report would see nothing of ivf_ros. Plain loggers again; the
# loggers launch made for itself at import keep their class.
logging.setLoggerClass(logging.Logger)


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """Return the repository root."""
    return SOURCE_ROOT


@pytest.fixture(scope='session')
def datasets() -> Path:
    """Return ../shared/datasets, or skip when a fresh clone has no ../shared beside it."""
    path = datasets_dir()
    if not (path / 'msrs').is_dir():
        pytest.skip(f'needs the paired datasets at {path} (absent: a clone without ../shared)')
    return path


@pytest.fixture(scope='session')
def yolo11n_weights() -> Path:
    """Return ../shared/weights/yolo11n/yolo11n-rebuilt.pt, or skip when absent."""
    path = shared_dir() / 'weights' / 'yolo11n' / 'yolo11n-rebuilt.pt'
    if not path.is_file():
        pytest.skip(f'needs the COCO YOLO11n weights at {path} (absent without ../shared)')
    return path


@pytest.fixture(scope='session')
def yolo_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a writable YOLO_CONFIG_DIR for Ultralytics (offline, no settings in $HOME)."""
    path = Path(os.environ.get('YOLO_CONFIG_DIR') or tmp_path_factory.mktemp('yolo_config'))
    path.mkdir(parents=True, exist_ok=True)
    os.environ['YOLO_CONFIG_DIR'] = str(path)
    return path
