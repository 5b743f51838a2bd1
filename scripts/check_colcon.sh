#!/usr/bin/env bash
# Build ivf_ros with colcon the way a ROS 2 user's workspace does, in a scratch workspace.
#
# Usage: bash scripts/check_colcon.sh [WORKSPACE]
#   WORKSPACE (default: a new temporary folder) receives build/, install/ and log/; the source tree
#   is only read (colcon reads it through --base-paths; setuptools writes nothing into it beyond
#   the git-ignored *.egg-info). Uses the active venv's colcon (from PyPI where no ROS install is);
#   installs the pinned colcon wheels into that venv when they are missing.
# Prints the install prefix of ivf_ros on its last line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORKSPACE=${1:-$(mktemp -d "${TMPDIR:-/tmp}/ivf_colcon.XXXXXX")}
mkdir -p "$WORKSPACE"
WORKSPACE=$(cd "$WORKSPACE" && pwd)
log() { printf '[check_colcon] %s\n' "$*" >&2; }

if ! "$PY" -c 'import colcon_core, colcon_ros, colcon_python_setup_py' 2>/dev/null; then
    log "installing colcon into $("$PY" -c 'import sys; print(sys.prefix)')"
    # The same pins as the vision_msgs build, so one venv never holds two colcon versions.
    grep -E '^colcon-(core|ros|python-setup-py)==' "$ROOT/scripts/vision_msgs/build-requirements.txt" \
        | "$PY" -m pip install --quiet --disable-pip-version-check -r /dev/stdin
fi

start=$(date +%s)
# The build runs from the workspace: colcon must not create build/ install/ log/ in the source.
cd "$WORKSPACE"
# colcon's entry point through the interpreter: the same colcon whichever bin/ is on PATH.
if ! "$PY" -c 'import sys; from colcon_core.command import main; sys.exit(main())' --log-base "$WORKSPACE/log" build \
        --base-paths "$ROOT" --packages-select ivf_ros \
        --build-base "$WORKSPACE/build" --install-base "$WORKSPACE/install" \
        --event-handlers console_direct- > "$WORKSPACE/colcon.out" 2>&1; then
    cat "$WORKSPACE/colcon.out" >&2
    find "$WORKSPACE/log" -name stdout_stderr.log -exec tail -n 40 {} + >&2 || true
    log "colcon build of ivf_ros FAILED (workspace $WORKSPACE)"
    exit 1
fi
log "colcon build of ivf_ros OK in $(( $(date +%s) - start )) s (workspace $WORKSPACE)"
echo "$WORKSPACE/install/ivf_ros"
