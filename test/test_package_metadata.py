"""ivf_ros is a standard ament_python package: package.xml, colcon build, console scripts."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

SOURCE_ROOT = Path(__file__).resolve().parent.parent
REQUIRED_DEPENDENCIES = ('rclpy', 'sensor_msgs', 'std_msgs', 'vision_msgs', 'diagnostic_msgs')
DEPENDENCY_TAGS = ('depend', 'exec_depend', 'build_depend', 'build_export_depend')


def console_scripts() -> dict[str, str]:
    """Return {script name: 'module:function'} as setup.py declares them (read, not run)."""
    tree = ast.parse((SOURCE_ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    entries = ast.literal_eval(value)
                    return dict(tuple(part.strip() for part in entry.split('=', 1))
                                for entry in entries)
    raise AssertionError('setup.py declares no console_scripts')


CONSOLE_SCRIPTS = console_scripts()


@pytest.fixture(scope='module')
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build ivf_ros with colcon in a scratch workspace; return install/ivf_ros."""
    if importlib.util.find_spec('colcon_core') is None:
        pytest.skip('colcon is not installed in this environment: run scripts/check_colcon.sh '
                    '(it installs the pinned colcon wheels) or use a ROS install')
    workspace = tmp_path_factory.mktemp('colcon_ws')
    result = subprocess.run(
        ['bash', str(SOURCE_ROOT / 'scripts' / 'check_colcon.sh'), str(workspace)],
        env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True,
        timeout=240)
    assert result.returncode == 0, f'colcon build failed:\n{result.stdout}\n{result.stderr}'
    prefix = Path(result.stdout.strip().splitlines()[-1])
    assert prefix == workspace / 'install' / 'ivf_ros'
    return prefix


def test_package_xml_is_format_3_with_ros_dependencies() -> None:
    root = ElementTree.parse(SOURCE_ROOT / 'package.xml').getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'ivf_ros'
    declared = {element.text.strip() for tag in DEPENDENCY_TAGS for element in root.iter(tag)}
    missing = [name for name in REQUIRED_DEPENDENCIES if name not in declared]
    assert not missing, f'package.xml lacks {missing}'
    assert root.findtext('export/build_type') == 'ament_python'


def test_package_xml_parses_with_catkin_pkg() -> None:
    # catkin_pkg is what colcon, rosdep and bloom read package.xml with (strict checks).
    package_module = pytest.importorskip('catkin_pkg.package', reason='catkin_pkg not installed')
    package = package_module.parse_package(str(SOURCE_ROOT / 'package.xml'))
    package.validate()
    assert package.package_format == 3
    assert package.get_build_type() == 'ament_python'


def test_console_scripts_installed_by_colcon(colcon_install: Path) -> None:
    script_dir = colcon_install / 'lib' / 'ivf_ros'
    missing = [name for name in CONSOLE_SCRIPTS if not (script_dir / name).is_file()]
    assert not missing, f'not in {script_dir} (ros2 run looks there): {missing}'
    assert all(os.access(script_dir / name, os.X_OK) for name in CONSOLE_SCRIPTS)


def test_share_files_installed_by_colcon(colcon_install: Path) -> None:
    share = colcon_install / 'share' / 'ivf_ros'
    assert (share / 'package.xml').is_file()
    for folder in ('launch', 'config'):
        assert (share / folder).is_dir(), f'{share / folder} missing'
    assert (share / 'config' / 'fastdds_large_images.xml').is_file()
    marker = colcon_install / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'ivf_ros'
    assert marker.is_file(), 'ament index marker missing: ros2 pkg / ament_index cannot find us'


def test_ament_index_finds_colcon_install(colcon_install: Path) -> None:
    # What `ros2 launch ivf_ros ...` and the nodes do after `. install/setup.bash`.
    result = subprocess.run(
        [sys.executable, '-c', 'from ament_index_python.packages import '
         "get_package_share_directory as share; print(share('ivf_ros'))"],
        env=dict(os.environ, AMENT_PREFIX_PATH=str(colcon_install)),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == colcon_install / 'share' / 'ivf_ros'


@pytest.mark.parametrize('script', sorted(CONSOLE_SCRIPTS))
def test_console_script_target_is_importable(script: str) -> None:
    module_name, _, function_name = CONSOLE_SCRIPTS[script].partition(':')
    if importlib.util.find_spec(module_name) is None:
        pytest.xfail(f'{module_name} is not written yet (console script {script})')
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function_name, None)), \
        f'{module_name} has no callable {function_name}() for console script {script}'


def test_fast_dds_profile_carries_a_4k_rgb8_frame(repo_root: Path) -> None:
    import xml.etree.ElementTree as ElementTree

    namespace = {'dds': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}
    root = ElementTree.parse(repo_root / 'config' / 'fastdds_large_images.xml').getroot()
    shm = next(d for d in root.iterfind('.//dds:transport_descriptor', namespace)
               if d.findtext('dds:type', namespaces=namespace) == 'SHM')
    max_message = int(shm.findtext('dds:maxMessageSize', namespaces=namespace))
    segment = int(shm.findtext('dds:segment_size', namespaces=namespace))
    frame_4k = 3840 * 2160 * 3 + 1024  # pixels plus the Image header
    assert frame_4k <= max_message <= segment


def test_the_installed_package_has_the_colcon_layout() -> None:
    """Wherever ament finds ivf_ros (pip-mode venv or colcon install), ros2 run/launch find it."""
    from ament_index_python.packages import get_package_prefix, PackageNotFoundError

    try:
        prefix = Path(get_package_prefix('ivf_ros'))
    except PackageNotFoundError:
        pytest.skip('ivf_ros is not in the ament index: run scripts/setup.sh and . ./env.sh')
    script_dir = prefix / 'lib' / 'ivf_ros'
    missing = [name for name in CONSOLE_SCRIPTS
               if not (script_dir / name).is_file() or not os.access(script_dir / name, os.X_OK)]
    assert not missing, f'not executable in {script_dir} (ros2 run looks there): {missing}'
    # ros2 launch finds launch files with os.walk, which does not enter a linked folder.
    share = prefix / 'share' / 'ivf_ros'
    found = {name for _, _, files in os.walk(share) for name in files}
    assert {'fusion_detect.launch.py', 'ivf_ros.yaml', 'fusion_detect.rviz',
            'fastdds_large_images.xml', 'ivf_fusion.pt', 'package.xml'} <= found


def test_ros2_pkg_executables_lists_the_nodes() -> None:
    ros2 = shutil.which('ros2')
    if ros2 is None:
        pytest.skip('the ros2 CLI is not installed (scripts/setup.sh installs it from source)')
    result = subprocess.run([ros2, 'pkg', 'executables', 'ivf_ros'], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.strip()}
    assert listed == set(CONSOLE_SCRIPTS)
