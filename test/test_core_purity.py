"""ivf_ros.core stays pure: no module under it imports rclpy or a ROS message package."""

from __future__ import annotations

import ast
import json
from pathlib import Path
import subprocess
import sys

import pytest

CORE = Path(__file__).resolve().parents[1] / 'ivf_ros' / 'core'
# Top-level ROS names the core must never import: the client library, generated interface
# packages (*_msgs, *_srvs, *_interfaces such as builtin_interfaces, rcl_interfaces) and the
# ROS Python libraries that wrap them. ament_index_python (plain file lookup) is allowed.
FORBIDDEN_EXACT = {'rclpy', 'message_filters', 'cv_bridge', 'rosbag2_py', 'launch_ros',
                   'image_transport', 'tf2_ros', 'sensor_msgs_py'}
FORBIDDEN_SUFFIXES = ('_msgs', '_srvs', '_interfaces')
FORBIDDEN_PREFIXES = ('rosidl_', 'rclpy', 'rcl_')


# The adapters depend on the core, never the reverse (nodes import rclpy at module level).
FORBIDDEN_PACKAGES = ('ivf_ros.nodes', 'ivf_ros.cli')


def is_forbidden(module: str) -> bool:
    """Return whether a module name (dotted) belongs to ROS client or message packages."""
    top = module.split('.', 1)[0]
    return (top in FORBIDDEN_EXACT or top.endswith(FORBIDDEN_SUFFIXES)
            or top.startswith(FORBIDDEN_PREFIXES)
            or any(module == name or module.startswith(name + '.')
                   for name in FORBIDDEN_PACKAGES))


def core_modules() -> list[str]:
    """Return the dotted names of every module under ivf_ros/core (found anew on each run)."""
    names = []
    for path in sorted(CORE.rglob('*.py')):
        parts = path.relative_to(CORE.parent.parent).with_suffix('').parts
        names.append('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))
    return names


def imported_names(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """Return (line, module) for every import in a module, however deeply nested or lazy."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # Resolve relative imports (`from ..nodes import x`) against the file's package.
            base = package.split('.')[:len(package.split('.')) - node.level + 1]
            prefix = '.'.join(base) if node.level else ''
            module = '.'.join(part for part in (prefix, node.module or '') if part)
            found += [(node.lineno, module)] + [
                (node.lineno, f'{module}.{alias.name}') for alias in node.names if node.level]
        elif isinstance(node, ast.Call) and node.args:
            # importlib.import_module('rclpy') and __import__('sensor_msgs.msg') with literals.
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(
                function, 'id', '')
            first = node.args[0]
            if name in ('import_module', '__import__') and isinstance(
                    first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return found


def test_the_forbidden_name_rule() -> None:
    for name in ('rclpy', 'rclpy.node', 'sensor_msgs.msg', 'vision_msgs', 'builtin_interfaces',
                 'rosidl_runtime_py', 'message_filters', 'cv_bridge', 'std_srvs.srv',
                 'ivf_ros.nodes.fusion_node', 'ivf_ros.cli'):
        assert is_forbidden(name), name
    for name in ('numpy', 'cv2', 'torch', 'rosbags.typesys', 'ament_index_python.packages',
                 'ivf_ros.core.image_codec', 'mcap_ros2.reader', 'ivf_ros.nodesmith'):
        assert not is_forbidden(name), name


def test_the_scan_sees_lazy_relative_and_dynamic_imports() -> None:
    source = """
def late():
    import rclpy.node
    from sensor_msgs.msg import Image
    from ..nodes import fusion_node
    from . import image_codec
    importlib.import_module('vision_msgs.msg')
    __import__('std_msgs')
"""
    names = [name for _, name in imported_names(ast.parse(source), 'ivf_ros.core')]
    assert [name for name in names if is_forbidden(name)] == [
        'rclpy.node', 'sensor_msgs.msg', 'ivf_ros.nodes', 'ivf_ros.nodes.fusion_node',
        'vision_msgs.msg', 'std_msgs']
    assert 'ivf_ros.core.image_codec' in names


def test_core_modules_are_discovered() -> None:
    modules = core_modules()
    for expected in ('ivf_ros.core', 'ivf_ros.core.image_codec', 'ivf_ros.core.sync',
                     'ivf_ros.core.synthetic', 'ivf_ros.core.paths'):
        assert expected in modules


def test_no_core_source_imports_ros_even_lazily() -> None:
    offenders = []
    for path in sorted(CORE.rglob('*.py')):
        tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
        package = '.'.join(path.relative_to(CORE.parent.parent).parent.parts)
        offenders += [f'{path.relative_to(CORE.parent.parent)}:{line} imports {name}'
                      for line, name in imported_names(tree, package) if is_forbidden(name)]
    assert not offenders, 'ivf_ros/core must stay pure (nodes adapt):\n' + '\n'.join(offenders)


# Imports each module in turn in a fresh interpreter and reports which ROS modules it pulled in
# (directly or through a dependency). A fresh process: this test process may have imported ROS.
_PROBE = """
import importlib, json, sys
report = {}
for name in json.loads(sys.argv[1]):
    before = set(sys.modules)
    try:
        importlib.import_module(name)
        report[name] = sorted(set(sys.modules) - before)
    except Exception as error:  # an import failure is reported, not hidden
        report[name] = 'ImportError: ' + repr(error)
print(json.dumps(report))
"""


@pytest.mark.timeout(180)
def test_importing_every_core_module_loads_no_ros_module() -> None:
    modules = core_modules()
    result = subprocess.run([sys.executable, '-c', _PROBE, json.dumps(modules)],
                            capture_output=True, text=True, timeout=170, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    failures = {name: loaded for name, loaded in report.items() if isinstance(loaded, str)}
    assert not failures, f'core modules failed to import: {failures}'
    offenders = {name: [m for m in loaded if is_forbidden(m)] for name, loaded in report.items()}
    offenders = {name: loaded for name, loaded in offenders.items() if loaded}
    assert not offenders, f'core modules imported ROS modules: {offenders}'
