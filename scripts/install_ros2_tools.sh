#!/usr/bin/env bash
# Install the real ROS 2 command-line tools into a pip-mode venv from their upstream sources.
#
# Usage: bash scripts/install_ros2_tools.sh VENV
#
# PyPI has rclpy but not launch, launch_ros, ros2cli or launch_testing. This installs them (pure
# Python) from source trees: $ROS2_TOOLS_SRC when set, else ../shared/ros2_tools/src when present,
# else a `git clone -b kilted` of the five repositories when github.com answers; without any of
# them it says so in one line and returns 0 (ivf-graph and ivf-bag keep standing in). It also builds
# composition_interfaces (launch_ros imports it) as the vision_msgs stand-in is built. Skipped when
# the environment already has the tools (a sourced ROS install); a no-op when nothing changed.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
VENV=$(cd "$1" && pwd)
PY="$VENV/bin/python"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${IVF_SHARED_DIR:-$ROOT/../shared}
REPOSITORIES=(launch launch_ros ros2cli rosidl_runtime_py rcl_interfaces)
# pip install order of the README in ../shared/ros2_tools (dependencies first).
PACKAGES=(
    rosidl_runtime_py
    launch/launch launch/launch_xml launch/launch_yaml launch/launch_testing launch/launch_pytest
    launch_ros/launch_ros launch_ros/launch_testing_ros
    ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2node ros2cli/ros2service ros2cli/ros2param
    ros2cli/ros2topic ros2cli/ros2lifecycle ros2cli/ros2interface ros2cli/ros2run
    ros2cli/ros2action ros2cli/ros2multicast
    launch_ros/ros2launch
)
STAMP="$VENV/.ivf_stamp_ros2_tools"
start=$(date +%s)

log() { printf '[ros2_tools] %s\n' "$*"; }

# A sourced ROS install brings its own tools: never shadow them with a second copy.
origin=$("$PY" -c 'import launch_ros, ros2cli; print(launch_ros.__file__)' 2>/dev/null || true)
if [ -n "$origin" ] && [ "${origin#"$VENV"/}" = "$origin" ]; then
    log "this environment already has the ROS 2 tools (${origin%/launch_ros/*}): not installing"
    exit 0
fi

has_all() {  # has_all DIR: DIR holds the five repositories
    local repository
    for repository in "${REPOSITORIES[@]}"; do
        [ -d "$1/$repository" ] || return 1
    done
}

clone_dir="$VENV/src/ros2_tools"
if [ -n "${ROS2_TOOLS_SRC:-}" ]; then
    # The user named a folder: a wrong one is an error, not a silent fallback.
    src=$ROS2_TOOLS_SRC
    has_all "$src" || { log "ROS2_TOOLS_SRC=$src lacks one of ${REPOSITORIES[*]}" >&2; exit 1; }
elif has_all "$SHARED/ros2_tools/src"; then
    src=$SHARED/ros2_tools/src
elif has_all "$clone_dir"; then
    src=$clone_dir
elif timeout 20 git ls-remote --exit-code --heads https://github.com/ros2/launch kilted \
        > /dev/null 2>&1; then
    log "cloning the kilted branches of ${REPOSITORIES[*]} into $clone_dir"
    rm -rf "$clone_dir.partial"
    mkdir -p "$clone_dir.partial"
    for repository in "${REPOSITORIES[@]}"; do
        git clone --quiet --depth 1 -b kilted "https://github.com/ros2/$repository" \
            "$clone_dir.partial/$repository"
    done
    mv -T "$clone_dir.partial" "$clone_dir"
    src=$clone_dir
else
    log "ros2 launch/run/topic/param not installed: no sources (set ROS2_TOOLS_SRC or reach" \
        "github.com); ivf-graph and ivf-bag stand in"
    exit 0
fi
src=$(cd "$src" && pwd)

# Redo the install only when the sources (commits, package versions) or this script changed, or
# the venv lost the tools.
source_digest() {
    cat "${BASH_SOURCE[0]}" "$ROOT/scripts/ros2_tools-requirements.txt"
    if [ -f "$src/COMMITS" ]; then cat "$src/COMMITS"; fi
    for repository in "${REPOSITORIES[@]}"; do
        git -C "$src/$repository" rev-parse HEAD 2>/dev/null || true
    done
    for package in "${PACKAGES[@]}"; do cat "$src/$package/package.xml"; done
}
digest=$(source_digest | sha256sum | cut -d' ' -f1)
interfaces_ok() {
    bash "$ROOT/scripts/build_interfaces.sh" "$VENV" composition_interfaces \
        "$src/rcl_interfaces/composition_interfaces" composition_interfaces.srv
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] && [ -x "$VENV/bin/ros2" ]; then
    interfaces_ok  # returns at once when current
    exit 0
fi

log "installing launch, launch_ros, ros2cli, launch_testing and launch_pytest from $src"
"$PY" -m pip install --quiet --disable-pip-version-check \
    -r "$ROOT/scripts/ros2_tools-requirements.txt" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
# pip builds a local folder in place (build/, *.egg-info): build copies, never the shared sources.
work=$(mktemp -d "${TMPDIR:-/tmp}/ivf_ros2_tools.XXXXXX")
trap 'rm -rf "$work"' EXIT
folders=()
for package in "${PACKAGES[@]}"; do
    mkdir -p "$work/$(dirname "$package")"
    cp -r "$src/$package" "$work/$package"
    folders+=("$work/$package")
done
if ! "$PY" -m pip install --disable-pip-version-check --no-deps --no-build-isolation \
        --force-reinstall "${folders[@]}" > "$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2
    log "FAILED" >&2
    exit 1
fi
interfaces_ok
echo "$digest" > "$STAMP"
log "installed in $(( $(date +%s) - start )) s: ros2 launch|run|topic|node|param|lifecycle|..."
