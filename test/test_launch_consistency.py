"""Launch file, setup.py entry points, YAML keys, params.py and ivf-graph all agree."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ivf_ros.nodes.param_specs import (
    defaults,
    load_params_file,
    NODE_PARAMS,
    ParameterValueError,
    ParamKind,
    spec_by_name,
    yaml_key_matches,
)

LAUNCH_ARGUMENTS = {'params_file', 'namespace', 'use_sim_time', 'visible_topic',
                    'infrared_topic', 'detector_model', 'device', 'use_rviz', 'rviz_config'}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Return every call of a function or class called name."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        getattr(node.func, 'id', None) == name or getattr(node.func, 'attr', None) == name)]


def _keywords(call: ast.Call) -> dict[str, ast.AST]:
    """Return a call's keyword arguments."""
    return {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}


def _literal(node: ast.AST) -> Any:
    """Return a literal's value, or None when it is an expression."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


@pytest.fixture(scope='module')
def launch_tree(repo_root: Path) -> ast.Module:
    return ast.parse((repo_root / 'launch' / 'fusion_detect.launch.py').read_text())


@pytest.fixture(scope='module')
def launch_arguments(launch_tree: ast.Module) -> dict[str, dict[str, ast.AST]]:
    arguments = {}
    for call in _calls(launch_tree, 'DeclareLaunchArgument'):
        arguments[_literal(call.args[0])] = _keywords(call)
    return arguments


@pytest.fixture(scope='module')
def launch_nodes(launch_tree: ast.Module) -> dict[str, dict[str, ast.AST]]:
    return {_literal(_keywords(call)['executable']): _keywords(call)
            for call in _calls(launch_tree, 'Node')}


@pytest.fixture(scope='module')
def yaml_document(repo_root: Path) -> dict[str, Any]:
    return yaml.safe_load((repo_root / 'config' / 'ivf_ros.yaml').read_text())


def test_launch_arguments_are_the_documented_ones(launch_arguments: dict) -> None:
    assert set(launch_arguments) == LAUNCH_ARGUMENTS
    for name, keywords in launch_arguments.items():
        description = _literal(keywords.get('description', ast.Constant('')))
        assert description, f'launch argument {name} has no description'
        assert 'default_value' in keywords, f'launch argument {name} has no default'


def test_launch_file_is_declarative(repo_root: Path, launch_tree: ast.Module) -> None:
    source = (repo_root / 'launch' / 'fusion_detect.launch.py').read_text()
    assert 'OpaqueFunction' not in source
    assert not _calls(launch_tree, 'eval') and not _calls(launch_tree, 'exec')


def test_launch_executables_are_entry_points(repo_root: Path, launch_nodes: dict) -> None:
    setup_tree = ast.parse((repo_root / 'setup.py').read_text())
    entry_points = _literal(_keywords(_calls(setup_tree, 'setup')[0])['entry_points'])
    scripts = dict(line.replace(' ', '').split('=') for line in entry_points['console_scripts'])
    for executable, keywords in launch_nodes.items():
        if _literal(keywords['package']) != 'ivf_ros':
            continue
        assert executable in scripts, f'{executable} is not a console script in setup.py'
        module = scripts[executable].split(':')[0]
        assert (repo_root / (module.replace('.', '/') + '.py')).is_file()
        # The node's name in the launch file is the name params.py and the YAML use.
        assert _literal(keywords['name']) in NODE_PARAMS
    assert scripts['ivf-graph'] == 'ivf_ros.nodes.graph:main'


def test_launch_parameter_overrides_are_declared(launch_tree: ast.Module,
                                                launch_nodes: dict) -> None:
    for keywords in launch_nodes.values():
        if _literal(keywords['package']) != 'ivf_ros':
            continue
        name = _literal(keywords['name'])
        given = keywords.get('parameters')
        overrides = [item for item in getattr(given, 'elts', []) if isinstance(item, ast.Dict)]
        for override in overrides:
            for key in override.keys:
                assert _literal(key) in {*spec_by_name(name), 'use_sim_time'}, (name, key)
    # override('parameter', 'argument') sets a declared parameter (or rclpy's use_sim_time)
    # from a declared argument.
    declared = {*spec_by_name('fusion_node'), *spec_by_name('detection_node'), 'use_sim_time'}
    calls = [call for call in _calls(launch_tree, 'override') if call.args]
    assert calls
    for call in calls:
        assert _literal(call.args[0]) in declared
        assert _literal(call.args[1]) in LAUNCH_ARGUMENTS


def test_launch_overrides_default_to_the_params_file(launch_arguments: dict) -> None:
    # '' = not given: the params file's value stays (a launch default would always override it).
    for name in ('detector_model', 'device'):
        assert _literal(launch_arguments[name]['default_value']) == '', name


def test_yaml_keys_are_the_nodes_and_declare_every_parameter(
        repo_root: Path, yaml_document: dict) -> None:
    assert set(yaml_document) == {f'/**/{name}' for name in NODE_PARAMS}
    for node_name in NODE_PARAMS:
        section = yaml_document[f'/**/{node_name}']['ros__parameters']
        assert set(section) == set(spec_by_name(node_name)), node_name
        # Values validated against the specs; the YAML and the declared defaults agree.
        assert load_params_file(repo_root / 'config' / 'ivf_ros.yaml', node_name) == \
            defaults(node_name)


def test_specs_are_well_formed() -> None:
    for node_name, specs in NODE_PARAMS.items():
        names = [spec.name for spec in specs]
        assert len(names) == len(set(names)), f'{node_name} declares a parameter twice'
        for spec in specs:
            assert spec.description and spec.description[0].isupper(), spec.name
            assert spec.check(spec.default) == spec.default, spec.name
            if spec.kind in (ParamKind.INTEGER, ParamKind.DOUBLE) and spec.name != 'autostart':
                assert spec.min_value is not None, f'{spec.name} needs a range'


def test_params_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / 'bad.yaml'
    bad.write_text('detection_node:\n  ros__parameters:\n    cnof: 0.3\n')
    with pytest.raises(ParameterValueError, match="unknown parameter 'cnof'"):
        load_params_file(bad, 'detection_node')
    # A wildcard namespace with the node's own name is that node's section: a typo is named.
    bad.write_text('/**/detection_node:\n  ros__parameters:\n    cnof: 0.3\n')
    with pytest.raises(ParameterValueError, match="unknown parameter 'cnof'"):
        load_params_file(bad, 'detection_node')
    # A section for many nodes may hold another node's parameters.
    bad.write_text('/**:\n  ros__parameters:\n    slop: 0.03\n')
    assert load_params_file(bad, 'detection_node') == {}
    # rcl refuses a file with a wildcard inside a name: one line here, not a node's traceback.
    bad.write_text('detection_*:\n  ros__parameters:\n    conf: 0.3\n')
    with pytest.raises(ParameterValueError, match=r'detection_\*: a wildcard is a whole name'):
        load_params_file(bad, 'fusion_node')
    bad.write_text('/**/detection_node:\n  ros__parameters:\n    conf: 3.0\n')
    with pytest.raises(ParameterValueError, match=r"'conf'.*outside \[0.0, 1.0\]"):
        load_params_file(bad, 'detection_node')
    # Keys for other nodes are ignored; /** applies to every node.
    bad.write_text('/**:\n  ros__parameters:\n    use_sim_time: true\n'
                   'other_node:\n  ros__parameters:\n    x: 1\n')
    assert load_params_file(bad, 'fusion_node') == {'use_sim_time': True}
    # An integer for a double: ROS 2 refuses it when the node declares it, so does the check.
    bad.write_text('fusion_node:\n  ros__parameters:\n    thermal_min: 27315\n')
    with pytest.raises(ParameterValueError, match=r"'thermal_min' is a double.*27315\.0"):
        load_params_file(bad, 'fusion_node')
    bad.write_text('fusion_node:\n  ros__parameters:\n    thermal_min: 27315.0\n')
    assert load_params_file(bad, 'fusion_node') == {'thermal_min': 27315.0}


# What `ros2 param dump /car1/fusion_node` writes (abridged): the node's fully qualified name,
# rclpy's own parameters and the QoS overrides of its topics.
PARAM_DUMP = """\
/car1/fusion_node:
  ros__parameters:
    device: cpu
    qos_overrides:
      /car1/fused/image:
        publisher:
          depth: 5
          history: keep_last
          reliability: reliable
    slop: 0.05
    start_type_description_service: true
    use_sim_time: false
"""


def test_a_ros2_param_dump_is_a_params_file(tmp_path: Path) -> None:
    dump = tmp_path / 'dump.yaml'
    dump.write_text(PARAM_DUMP)
    values = load_params_file(dump, 'fusion_node', namespace='car1')
    assert (values['device'], values['slop'], values['use_sim_time']) == ('cpu', 0.05, False)
    assert 'qos_overrides' in values
    # Keyed by /car1/fusion_node: rcl applies nothing of it to a fusion_node elsewhere.
    assert load_params_file(dump, 'fusion_node') == {}
    assert load_params_file(dump, 'fusion_node', namespace='/car2') == {}


@pytest.mark.ros
def test_params_file_keys_match_as_rclpy_matches_them(tmp_path: Path) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    keys = ['fusion_node', '/fusion_node', '/**/fusion_node', '/**', '/car1/fusion_node',
            '/*/fusion_node', 'car1/fusion_node', '/a/**/fusion_node', '/*', '/**/other']
    for index, key in enumerate(keys):
        params = tmp_path / f'{index}.yaml'
        params.write_text(yaml.safe_dump({key: {'ros__parameters': {'slop': 0.05}}}))
        context = Context()
        rclpy.init(args=['test', '--ros-args', '--params-file', str(params)], context=context)
        try:
            for namespace in ('/', '/car1', '/a/b'):
                node = Node('fusion_node', namespace=namespace, context=context)
                applied = 'slop' in node._parameter_overrides  # what rclpy takes from the file
                node.destroy_node()
                assert yaml_key_matches(key, 'fusion_node', namespace) == applied, \
                    (key, namespace)
        finally:
            context.try_shutdown()


def test_rviz_config_shows_the_four_images(repo_root: Path) -> None:
    rviz = yaml.safe_load((repo_root / 'config' / 'fusion_detect.rviz').read_text())
    displays = rviz['Visualization Manager']['Displays']
    topics = {display['Topic']['Value'] for display in displays
              if display['Class'] == 'rviz_default_plugins/Image'}
    # Relative, like the nodes' own names: RViz (rclcpp) resolves them in its namespace, which
    # the launch file gives it with the nodes' remappings, so the panels follow both.
    assert topics == {'visible/image_raw', 'infrared/image_raw', 'fused/image',
                      'detections/image'}


def test_graph_runner_translates_launch_arguments(repo_root: Path) -> None:
    from ivf_ros.nodes.graph import parse_args, ros_arguments

    argv = ['ivf-graph', '--namespace', 'car1', '--detector-model', '/w/y.pt', '--device', 'cpu',
            '--use-sim-time', '--ros-args', '-r', 'visible/image_raw:=/cam/vis']
    options = parse_args(argv)
    assert options.params_file.name == 'ivf_ros.yaml'
    args = ros_arguments(argv, options)
    text = ' '.join(args)
    assert text.index('--params-file') < text.index('visible/image_raw:=/cam/vis')
    for expected in ('__ns:=/car1', 'detection_node:model:=/w/y.pt', 'fusion_node:device:=cpu',
                     'use_sim_time:=true'):
        assert expected in text


def test_launch_description_builds(repo_root: Path) -> None:
    pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI here')
    import importlib.util

    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location(
        'fusion_detect_launch', repo_root / 'launch' / 'fusion_detect.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    declared = {argument.name for argument in description.get_launch_arguments()}
    assert declared == LAUNCH_ARGUMENTS


# ------------------------------------------------------- the launch file through launch itself
@dataclass
class ExpandedNode:
    """A Node action of the launch file after substitution: whether it runs, its ROS argv."""

    name: str
    namespace: str
    runs: bool
    ros_argv: list[str]
    remappings: list[tuple[str, str]]


def expand_launch(repo_root: Path, arguments: dict[str, str]
                  ) -> tuple[dict[str, ExpandedNode], list[str]]:
    """Evaluate the launch file with launch's own machinery, starting no process.

    Returns the Node actions by executable and the messages of the LogInfo actions that ran.
    """
    pytest.importorskip('launch_ros', reason='launch_ros is not installed: scripts/setup.sh '
                                             'installs it from ../shared/ros2_tools or GitHub')
    import importlib.util

    from launch import LaunchContext
    from launch.actions import LogInfo
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location(
        'fusion_detect_launch', repo_root / 'launch' / 'fusion_detect.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = LaunchContext()
    context.launch_configurations.update(arguments)  # what `name:=value` on the command line does
    nodes: dict[str, ExpandedNode] = {}
    messages: list[str] = []

    def visit(entities: list) -> None:
        for entity in entities:
            if isinstance(entity, Node):
                runs = entity.condition is None or entity.condition.evaluate(context)
                entity._perform_substitutions(context)  # what Node.execute does first
                namespace = entity.expanded_node_namespace
                context.extend_locals({'ros_specific_arguments': {
                    'name': f'__node:={entity.node_name.rpartition("/")[2]}',
                    'ns': f'__ns:={namespace}'}})
                executable = str(entity.node_executable)
                nodes[executable] = ExpandedNode(
                    entity.node_name.rpartition('/')[2], namespace, runs,
                    [perform_substitutions(context, part) for part in entity.cmd[1:]],
                    list(entity.expanded_remapping_rules or []))
                continue
            if isinstance(entity, LogInfo) and (
                    entity.condition is None or entity.condition.evaluate(context)):
                messages.append(perform_substitutions(context, entity.msg))
            visit(entity.visit(context) or [])

    visit(module.generate_launch_description().visit(context))
    return nodes, messages


def effective_parameters(node: ExpandedNode) -> dict[str, Any]:
    """Return what rcl gives the node: its params files and -p values, later ones winning."""
    values: dict[str, Any] = {}
    argv = node.ros_argv
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == '--params-file':
            for key, section in yaml.safe_load(Path(value).read_text()).items():
                if yaml_key_matches(key, node.name, node.namespace):
                    values.update(section['ros__parameters'])
        elif flag == '-p':
            name, _, text = value.partition(':=')
            values[name] = yaml.safe_load(text)
    return values


def test_launch_keeps_what_the_params_file_sets(repo_root: Path, tmp_path: Path) -> None:
    params = tmp_path / 'mine.yaml'
    # use_sim_time too (a `ros2 param dump` of a replay): no launch default may hide it.
    params.write_text('/**/fusion_node:\n  ros__parameters:\n    device: cpu\n'
                      '    use_sim_time: true\n'
                      '/**/detection_node:\n  ros__parameters:\n'
                      '    device: cpu\n    model: /w/mine.pt\n    conf: 0.5\n')
    nodes, _ = expand_launch(repo_root, {'params_file': str(params)})
    fusion = effective_parameters(nodes['fusion_node'])
    detection = effective_parameters(nodes['detection_node'])
    assert fusion == {'device': 'cpu', 'use_sim_time': True}
    assert detection == {'device': 'cpu', 'model': '/w/mine.pt', 'conf': 0.5}


def test_launch_arguments_given_override_the_params_file(repo_root: Path,
                                                         tmp_path: Path) -> None:
    params = tmp_path / 'mine.yaml'
    params.write_text('/**/detection_node:\n  ros__parameters:\n'
                      '    device: cpu\n    model: /w/mine.pt\n')
    nodes, _ = expand_launch(repo_root, {
        'params_file': str(params), 'device': 'cuda:0', 'detector_model': 'yolo11s.pt',
        'use_sim_time': 'true', 'namespace': 'car1'})
    assert effective_parameters(nodes['detection_node']) == {
        'device': 'cuda:0', 'model': 'yolo11s.pt', 'use_sim_time': True}
    # model is the detection node's alone.
    assert effective_parameters(nodes['fusion_node']) == {'device': 'cuda:0',
                                                          'use_sim_time': True}
    # The package YAML by default: every value it sets reaches the nodes.
    nodes, _ = expand_launch(repo_root, {})
    for name in NODE_PARAMS:
        assert effective_parameters(nodes[name]) == defaults(name)


def test_launch_stops_on_a_missing_params_file(repo_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / 'typo.yaml'
    with pytest.raises(FileNotFoundError, match=str(missing)):
        expand_launch(repo_root, {'params_file': str(missing)})


def test_launch_rviz_follows_the_namespace_and_remaps(repo_root: Path) -> None:
    nodes, messages = expand_launch(repo_root, {
        'namespace': 'car1', 'visible_topic': '/cam/vis', 'use_rviz': 'true'})
    rviz, fusion = nodes['rviz2'], nodes['fusion_node']
    assert rviz.namespace == fusion.namespace == '/car1'
    assert rviz.remappings == fusion.remappings
    assert ('visible/image_raw', '/cam/vis') in rviz.remappings
    from launch_ros.substitutions.find_package import get_package_share_directory

    try:
        get_package_share_directory('rviz2')
    except LookupError:
        # pip mode: no RViz. The launch goes on without it and says why (it used to fail
        # with both nodes already started, and leave them running).
        assert not rviz.runs
        assert fusion.runs and nodes['detection_node'].runs
        assert any('rviz2 is not installed' in message for message in messages)
    else:
        assert rviz.runs and not messages


def test_a_section_for_every_node_may_hold_another_nodes_parameters(tmp_path: Path) -> None:
    shared = tmp_path / 'shared.yaml'
    shared.write_text('/**:\n  ros__parameters:\n    conf: 0.4\n    device: cpu\n'
                      'fusion_node:\n  ros__parameters:\n    slop: 0.03\n')
    # conf is detection_node's: fusion_node leaves it, as rcl does; its own section stays strict.
    assert load_params_file(shared, 'fusion_node') == {'device': 'cpu', 'slop': 0.03}
    assert load_params_file(shared, 'detection_node') == {'conf': 0.4, 'device': 'cpu'}
    shared.write_text('fusion_node:\n  ros__parameters:\n    conf: 0.4\n')
    with pytest.raises(ParameterValueError, match="unknown parameter 'conf'"):
        load_params_file(shared, 'fusion_node')
