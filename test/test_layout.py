"""The layout holds: pure packages never import ROS, and no package imports a layer above it."""

from __future__ import annotations

import ast
import json
from pathlib import Path
import subprocess
import sys

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / 'ivf_ros'
# Every subpackage but the adapters: the algorithms, tested without ROS.
PURE_PACKAGES = ('io', 'fusion', 'pipeline', 'evaluation', 'training')
# What each subpackage may import of ivf_ros (besides itself): cli -> nodes -> pipeline/fusion
# -> io, with evaluation and training beside the adapters (they judge and make the network).
ALLOWED_IMPORTS = {
    'io': set(),
    'fusion': {'io'},
    'pipeline': {'io', 'fusion'},
    'evaluation': {'io', 'fusion', 'pipeline'},
    'training': {'io', 'fusion', 'pipeline', 'evaluation'},
    'nodes': {'io', 'fusion', 'pipeline'},
    'cli': {'io', 'fusion', 'pipeline', 'evaluation', 'training', 'nodes'},
}
# Top-level ROS names a pure package must never import: the client library, generated interface
# packages (*_msgs, *_srvs, *_interfaces such as builtin_interfaces, rcl_interfaces) and the
# ROS Python libraries that wrap them. ament_index_python (plain file lookup) is allowed.
FORBIDDEN_EXACT = {'rclpy', 'message_filters', 'cv_bridge', 'rosbag2_py', 'launch_ros',
                   'image_transport', 'tf2_ros', 'sensor_msgs_py'}
FORBIDDEN_SUFFIXES = ('_msgs', '_srvs', '_interfaces')
FORBIDDEN_PREFIXES = ('rosidl_', 'rclpy', 'rcl_')


# The adapters depend on the pure packages, never the reverse (nodes import rclpy at module level).
FORBIDDEN_PACKAGES = ('ivf_ros.nodes', 'ivf_ros.cli')


def is_forbidden(module: str) -> bool:
    """Return whether a module name (dotted) belongs to ROS client or message packages."""
    top = module.split('.', 1)[0]
    return (top in FORBIDDEN_EXACT or top.endswith(FORBIDDEN_SUFFIXES)
            or top.startswith(FORBIDDEN_PREFIXES)
            or any(module == name or module.startswith(name + '.')
                   for name in FORBIDDEN_PACKAGES))


def module_name(path: Path) -> str:
    """Return the dotted module name of a source file under ivf_ros/."""
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def pure_sources() -> list[Path]:
    """Return every source file of the pure packages (found anew on each run)."""
    return [path for package in PURE_PACKAGES
            for path in sorted((PACKAGE_ROOT / package).rglob('*.py'))]


def pure_modules() -> list[str]:
    """Return the dotted names of every module of the pure packages."""
    return [module_name(path) for path in pure_sources()]


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
                 'ivf_ros.io.image_codec', 'mcap_ros2.reader', 'ivf_ros.nodesmith'):
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
    names = [name for _, name in imported_names(ast.parse(source), 'ivf_ros.io')]
    assert [name for name in names if is_forbidden(name)] == [
        'rclpy.node', 'sensor_msgs.msg', 'ivf_ros.nodes', 'ivf_ros.nodes.fusion_node',
        'vision_msgs.msg', 'std_msgs']
    assert 'ivf_ros.io.image_codec' in names


def test_pure_modules_are_discovered() -> None:
    modules = pure_modules()
    for expected in ('ivf_ros.io', 'ivf_ros.io.image_codec', 'ivf_ros.pipeline.sync',
                     'ivf_ros.fusion.model', 'ivf_ros.training.trainer',
                     'ivf_ros.evaluation.metrics'):
        assert expected in modules


def test_every_subpackage_has_a_place_in_the_layers() -> None:
    packages = {path.parent.name for path in PACKAGE_ROOT.glob('*/__init__.py')}
    assert packages == set(ALLOWED_IMPORTS)
    for package in packages:
        docstring = ast.get_docstring(ast.parse((PACKAGE_ROOT / package / '__init__.py')
                                                .read_text(encoding='utf-8')))
        assert docstring and 'import' in docstring, f'{package}/__init__ says what it may import'


def test_no_pure_source_imports_ros_even_lazily() -> None:
    offenders = []
    for path in pure_sources():
        tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
        package = module_name(path) if path.name == '__init__.py' else module_name(path.parent)
        offenders += [f'{path.relative_to(PACKAGE_ROOT.parent)}:{line} imports {name}'
                      for line, name in imported_names(tree, package) if is_forbidden(name)]
    assert not offenders, 'pure packages never import ROS (nodes adapt):\n' + '\n'.join(offenders)


def test_no_package_imports_a_layer_above_it() -> None:
    offenders = []
    for path in sorted(PACKAGE_ROOT.rglob('*.py')):
        relative = path.relative_to(PACKAGE_ROOT)
        if len(relative.parts) < 2:
            continue  # ivf_ros/__init__.py
        own = relative.parts[0]
        tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
        package = module_name(path) if path.name == '__init__.py' else module_name(path.parent)
        for line, name in imported_names(tree, package):
            parts = name.split('.')
            if parts[0] != 'ivf_ros' or len(parts) < 2 or parts[1] == own:
                continue
            if parts[1] not in ALLOWED_IMPORTS[own]:
                offenders.append(f'{relative}:{line} imports {name}')
    assert not offenders, 'imports against the layers:\n' + '\n'.join(offenders)


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
def test_importing_every_pure_module_loads_no_ros_module() -> None:
    modules = pure_modules()
    result = subprocess.run([sys.executable, '-c', _PROBE, json.dumps(modules)],
                            capture_output=True, text=True, timeout=170, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    failures = {name: loaded for name, loaded in report.items() if isinstance(loaded, str)}
    assert not failures, f'pure modules failed to import: {failures}'
    offenders = {name: [m for m in loaded if is_forbidden(m)] for name, loaded in report.items()}
    offenders = {name: loaded for name, loaded in offenders.items() if loaded}
    assert not offenders, f'pure modules imported ROS modules: {offenders}'


def shell_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """Return (line, what) for every call that hands a string to a shell."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(
            function, 'id', '')
        owner = getattr(getattr(function, 'value', None), 'id', '')
        if name in ('system', 'popen') and owner == 'os':
            found.append((node.lineno, f'os.{name}'))
        for keyword in node.keywords:
            if keyword.arg == 'shell' and not (isinstance(keyword.value, ast.Constant)
                                               and keyword.value.value is False):
                found.append((node.lineno, f'{name}(shell=...)'))
    return found


def test_the_shell_scan_sees_os_system_and_shell_true() -> None:
    source = ("os.system('x')\nsubprocess.Popen(cmd, shell=True)\n"
              "subprocess.run(['a'], shell=False)")
    assert [what for _, what in shell_calls(ast.parse(source))] == [
        'os.system', 'Popen(shell=...)']


def test_no_user_string_reaches_a_shell() -> None:
    root = PACKAGE_ROOT.parent
    offenders = []
    for path in sorted([*PACKAGE_ROOT.rglob('*.py'), *(root / 'scripts').rglob('*.py'),
                        *(root / 'launch').glob('*.py')]):
        tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
        offenders += [f'{path.relative_to(root)}:{line} {what}'
                      for line, what in shell_calls(tree)]
    assert not offenders, 'argument lists, never a shell:\n' + '\n'.join(offenders)
