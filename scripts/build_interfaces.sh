#!/usr/bin/env bash
# Build a ROS 2 interface package with colcon (PyPI) into VENV/opt/PACKAGE, for pip-mode venvs.
#
# Usage: bash scripts/build_interfaces.sh VENV PACKAGE SOURCE MODULE
#   e.g. bash scripts/build_interfaces.sh .venv vision_msgs scripts/vision_msgs vision_msgs.msg
#
# Only for environments without PACKAGE (the PyPI ROS 2 wheels lack vision_msgs and
# composition_interfaces): when the venv's python already imports a MODULE that is not ours,
# nothing is built, so a real one is never shadowed. Re-running with unchanged sources is a no-op.
# Afterwards VENV/opt/PACKAGE/ivf_env.sh holds the exports that make `import MODULE` and rclpy
# endpoints of its types work (env.sh sources every VENV/opt/*/ivf_env.sh).
set -euo pipefail

if [ $# -ne 4 ]; then
    echo "usage: $0 VENV PACKAGE SOURCE MODULE" >&2
    exit 2
fi
VENV=$(cd "$1" && pwd)
PACKAGE=$2
SOURCE=$(cd "$3" && pwd)
MODULE=$4
PY="$VENV/bin/python"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX="$VENV/opt/$PACKAGE"
start=$(date +%s)

log() { printf '[build_interfaces] %s: %s\n' "$PACKAGE" "$*"; }

# Our own install must not count as "the environment already has it": drop it from the
# search paths for the check only, and keep everything else (a sourced ROS install, say).
without_prefix() { tr ':' '\n' <<< "${1:-}" | grep -v "^$PREFIX" | paste -sd: - || true; }
if env PYTHONPATH="$(without_prefix "${PYTHONPATH:-}")" \
        LD_LIBRARY_PATH="$(without_prefix "${LD_LIBRARY_PATH:-}")" \
        "$PY" -c "import $MODULE" 2>/dev/null; then
    log "this environment already has it: not building our copy"
    if [ -e "$PREFIX" ] || [ -L "$PREFIX" ]; then
        # A copy from an earlier run would shadow the real package through ivf_env.sh.
        log "removing the earlier copy $PREFIX"
        rm -rf "$PREFIX" "$PREFIX"-*
    fi
    exit 0
fi

digest=$(cat "$ROOT/scripts/build_interfaces.sh" "$ROOT/scripts/interfaces-build-requirements.txt" \
    $(find "$SOURCE" -type f | sort) | sha256sum | cut -d' ' -f1)
# Each build goes to its own folder and PREFIX is a symlink switched atomically at the end, so
# shells and processes using the stand-in never see it half-built while it is rebuilt.
BUILD_PREFIX="$PREFIX-${digest:0:12}"
if [ -L "$PREFIX" ] && [ "$(readlink "$PREFIX")" = "$(basename "$BUILD_PREFIX")" ] \
        && [ -f "$BUILD_PREFIX/.ivf_source_digest" ]; then
    log "up to date in $PREFIX"
    exit 0
fi

log "installing the build tools (colcon, ament_cmake, rosidl generators) into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check \
    -r "$ROOT/scripts/interfaces-build-requirements.txt" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

# Fix 1: the wheels' exported CMake targets name the wheel builder's Python and numpy headers
# (/opt/python/cp311-cp311/...); CMake refuses imported targets whose include paths do not exist.
log "pointing the wheels' *__rosidl_generator_pyExport.cmake at this interpreter's headers"
"$PY" - "$VENV/share" <<'PYTHON'
import glob
import os
import re
import sys
import sysconfig

import numpy

python_include = sysconfig.get_paths()['include']
numpy_include = numpy.get_include()
pattern = os.path.join(sys.argv[1], '*', 'cmake', '*__rosidl_generator_pyExport.cmake')


def replace_missing(match: re.Match) -> str:
    """Map each missing include directory to this interpreter's Python or numpy headers."""
    paths = []
    for path in match.group(1).split(';'):
        if path and not os.path.isdir(path):
            path = numpy_include if 'numpy' in path else python_include
        paths.append(path)
    return f'INTERFACE_INCLUDE_DIRECTORIES "{";".join(paths)}"'


for export in glob.glob(pattern):
    with open(export) as stream:
        text = stream.read()
    fixed = re.sub(r'INTERFACE_INCLUDE_DIRECTORIES "([^"]*)"', replace_missing, text)
    if fixed != text:
        with open(export, 'w') as stream:
            stream.write(fixed)
PYTHON

# Build in a scratch workspace: our sources live under scripts/ (COLCON_IGNORE'd, so colcon in a
# user's workspace never sees them), and upstream sources (../shared) are never written to.
work=$(mktemp -d "${TMPDIR:-/tmp}/ivf_$PACKAGE.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cp -r "$SOURCE" "$work/src/$PACKAGE"
rm -rf "$BUILD_PREFIX"

log "colcon build in $work (its log is printed on failure)"
# Fix 2: ament and CMake find the wheels' packages only through these prefixes.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# colcon and the rosidl generators run as the venv's tools (python3 on PATH = the venv's).
export PATH="$VENV/bin:$PATH"
if ! (cd "$work" && "$VENV/bin/colcon" --log-base "$work/log" build --merge-install \
        --base-paths src --build-base "$work/build" --install-base "$BUILD_PREFIX" \
        --event-handlers console_direct- \
        --cmake-args -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" > "$work/colcon.out" 2>&1); then
    cat "$work/colcon.out" >&2
    find "$work/log" -name 'stdout_stderr.log' -exec tail -n 60 {} + >&2 || true
    rm -rf "$BUILD_PREFIX"
    log "FAILED" >&2
    exit 1
fi

# Where ament_cmake_python put the generated package (lib/python3.X/site-packages or dist-packages).
package_dir=$(find "$BUILD_PREFIX/lib" -maxdepth 3 -type d -name "$PACKAGE" -path '*-packages/*' \
    | head -n 1)
site_packages=${package_dir%/"$PACKAGE"}
site_packages=${site_packages#"$BUILD_PREFIX/"}

write_env() {  # write_env PREFIX: the shell exports for a stand-in installed at PREFIX
    cat <<'ENV'
# Generated by scripts/build_interfaces.sh: puts an interface package built there on the search paths.
# AMENT_PREFIX_PATH: ament_index (share/PACKAGE) and the rosidl type-support lookup.
# PYTHONPATH: the generated Python package. LD_LIBRARY_PATH: its C libraries; the PyPI wheels'
# bootstrapper (.pth re-exec) keeps existing entries and adds its own, so both survive.
_ivf_prepend() {  # _ivf_prepend VAR DIR: put DIR first in VAR once (sourcing twice adds nothing)
    eval "_ivf_old=\${$1:-}"
    case ":$_ivf_old:" in
        *":$2:"*) ;;
        *) eval "export $1=\"\$2\${_ivf_old:+:\$_ivf_old}\"" ;;
    esac
}
ENV
    cat <<ENV
_ivf_prepend AMENT_PREFIX_PATH "$1"
_ivf_prepend CMAKE_PREFIX_PATH "$1"
_ivf_prepend PYTHONPATH "$1/$site_packages"
_ivf_prepend LD_LIBRARY_PATH "$1/lib"
unset -f _ivf_prepend
unset _ivf_old
ENV
}

# Prove the new build before switching to it.
write_env "$BUILD_PREFIX" > "$work/check_env.sh"
if ! (. "$work/check_env.sh" && "$PY" -c "import $MODULE"); then
    rm -rf "$BUILD_PREFIX"
    log "FAILED: the built $MODULE does not import" >&2
    exit 1
fi
# The exports name PREFIX (the symlink), so they stay valid across rebuilds.
write_env "$PREFIX" > "$BUILD_PREFIX/ivf_env.sh"
echo "$digest" > "$BUILD_PREFIX/.ivf_source_digest"
if [ -d "$PREFIX" ] && [ ! -L "$PREFIX" ]; then
    rm -rf "$PREFIX"  # a plain folder from an older version of this script
fi
ln -sfn "$(basename "$BUILD_PREFIX")" "$PREFIX.switch"
mv -T "$PREFIX.switch" "$PREFIX"  # rename(2): atomic
for old in "$PREFIX"-*; do
    [ "$old" = "$BUILD_PREFIX" ] || rm -rf "$old"
done
log "built into $PREFIX in $(( $(date +%s) - start )) s"
