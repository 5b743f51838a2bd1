"""Where ivf_ros finds its installed files (config, models) and the optional ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = 'ivf_ros'
# The source checkout: ivf_ros/io/paths.py -> repository root.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def package_share() -> Path:
    """Return the package's share directory (installed via ament index, else the source tree)."""
    try:
        from ament_index_python.packages import (
            get_package_share_directory,
            PackageNotFoundError,
        )

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, LookupError, ValueError):
            pass
    except ImportError:
        pass
    return SOURCE_ROOT


def share_file(*parts: str) -> Path:
    """Return the path of a file under the share directory (config/, models/, launch/)."""
    installed = package_share().joinpath(*parts)
    if installed.exists():
        return installed
    # An editable install keeps copies of config/ and models/ in share/; prefer the source tree's
    # file when the installed copy is missing (a file added after the last setup).
    return SOURCE_ROOT.joinpath(*parts)


def shared_dir() -> Path:
    """Return ../shared beside the checkout (data and weights that are never copied into it)."""
    return Path(os.environ.get('IVF_SHARED_DIR', SOURCE_ROOT.parent / 'shared'))


def datasets_dir() -> Path:
    """Return ../shared/datasets (paired visible/infrared images; may be absent)."""
    return shared_dir() / 'datasets'
