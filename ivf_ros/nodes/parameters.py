"""rclpy adapter for ivf_ros.nodes.param_specs: descriptors, declaration, validated changes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from ivf_ros.nodes.param_specs import ParameterValueError, ParamKind, ParamSpec, ParamValue

_ROS_TYPES = {
    ParamKind.BOOL: (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    ParamKind.INTEGER: (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    ParamKind.DOUBLE: (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    ParamKind.STRING: (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
    ParamKind.STRING_ARRAY: (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
    ParamKind.DOUBLE_ARRAY: (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
}

# Extra node-level checks (e.g. class names the loaded model knows): raise ParameterValueError.
ExtraCheck = Callable[[str, ParamValue], None]

_ARRAY_TYPES = (Parameter.Type.BOOL_ARRAY, Parameter.Type.BYTE_ARRAY, Parameter.Type.INTEGER_ARRAY,
                Parameter.Type.DOUBLE_ARRAY, Parameter.Type.STRING_ARRAY)


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Return the rcl ParameterDescriptor (type, description, range, read-only) of a spec."""
    result = ParameterDescriptor(
        name=spec.name, type=_ROS_TYPES[spec.kind][0], description=spec.description,
        additional_constraints=spec.constraints, read_only=spec.read_only)
    if spec.min_value is not None and spec.kind is ParamKind.DOUBLE:
        result.floating_point_range = [FloatingPointRange(
            from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)]
    elif spec.min_value is not None and spec.kind is ParamKind.INTEGER:
        result.integer_range = [IntegerRange(
            from_value=int(spec.min_value), to_value=int(spec.max_value), step=spec.step)]
    return result


def declare_parameters(node: Node, specs: Sequence[ParamSpec]) -> dict[str, ParamValue]:
    """Declare every spec on node (overrides from params files / -p applied) and return values."""
    values: dict[str, ParamValue] = {}
    for spec in specs:
        ros_type = _ROS_TYPES[spec.kind][1]
        if isinstance(spec.default, list) and not spec.default:
            # rclpy infers an empty list as BYTE_ARRAY: declare by type, then set the empty value.
            node.declare_parameter(spec.name, ros_type, descriptor(spec))
            if node.get_parameter_or(spec.name).type_ is Parameter.Type.NOT_SET:
                node.set_parameters([Parameter(spec.name, ros_type, [])])
        else:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        values[spec.name] = spec.check(_value(node.get_parameter(spec.name)))
    return values


def _value(parameter: Parameter) -> Any:
    """Return a parameter's value with arrays as plain lists."""
    value = parameter.value
    return list(value) if isinstance(value, (tuple, list)) or hasattr(value, 'tolist') else value


def add_validation(node: Node, specs: Sequence[ParamSpec],
                   apply: Callable[[dict[str, ParamValue]], None],
                   extra_check: ExtraCheck | None = None) -> None:
    """Validate runtime changes against specs and extra_check; pass accepted ones to apply."""
    by_name = {spec.name: spec for spec in specs}

    def on_set(parameters: list[Parameter]) -> SetParametersResult:
        accepted: dict[str, ParamValue] = {}
        try:
            for parameter in parameters:
                spec = by_name.get(parameter.name)
                if spec is None:
                    continue  # use_sim_time and other rclpy-owned parameters
                value = spec.check(_value(parameter))
                if extra_check is not None:
                    extra_check(spec.name, value)
                accepted[spec.name] = value
        except (ParameterValueError, ValueError) as error:
            node.get_logger().warning(f'rejected parameter change: {error}')
            return SetParametersResult(successful=False, reason=str(error))
        if accepted:
            apply(accepted)
        return SetParametersResult(successful=True)

    def empty_arrays_as_declared(parameters: list[Parameter]) -> list[Parameter]:
        # `ros2 param set NODE classes "[]"` sends an empty BOOL_ARRAY (YAML has no typed empty
        # list), which rclpy would refuse for a string array: an empty list is empty whatever
        # its element type, so it becomes the declared type's.
        result = []
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            declared = _ROS_TYPES[spec.kind][1] if spec is not None else None
            if (declared in _ARRAY_TYPES and parameter.type_ in _ARRAY_TYPES
                    and parameter.type_ is not declared and len(parameter.value) == 0):
                parameter = Parameter(parameter.name, declared, [])
            result.append(parameter)
        return result

    node.add_pre_set_parameters_callback(empty_arrays_as_declared)
    node.add_on_set_parameters_callback(on_set)
