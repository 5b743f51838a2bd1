"""Shared lifecycle-node plumbing: declared parameters, autostart, throttled warnings, main()."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import signal
import sys
import traceback
from typing import Any, NoReturn

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time

from ivf_ros.nodes.param_specs import ParameterValueError, ParamSpec, ParamValue
from ivf_ros.nodes.parameters import add_validation, declare_parameters
from ivf_ros.pipeline.runtime import Throttle


def stamp_to_ns(stamp: Any) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return Time.from_msg(stamp).nanoseconds


Transition = Callable[[Any, LifecycleState], TransitionCallbackReturn]


def logged_transition(callback: Transition) -> Transition:
    """Log an exception raised in a transition callback (rclpy would swallow it) as ERROR."""

    @functools.wraps(callback)
    def wrapper(node: Any, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return callback(node, state)
        except Exception:
            node.get_logger().error(
                f'{callback.__name__} raised:\n{traceback.format_exc().rstrip()}')
            return TransitionCallbackReturn.ERROR

    return wrapper


class IvfLifecycleNode(LifecycleNode):
    """A lifecycle node whose parameters come from nodes.param_specs, validated on change."""

    def __init__(self, node_name: str, specs: Sequence[ParamSpec], **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.specs = tuple(specs)
        self.params: dict[str, ParamValue] = declare_parameters(self, self.specs)
        add_validation(self, self.specs, self._apply_parameters, self.check_parameter)
        self._throttle = Throttle(period_s=2.0)
        self.publish_errors = 0

    def diagnostic_status(self) -> DiagnosticStatus | None:
        """Return the node's health for /diagnostics (None: nothing to report)."""
        return None

    def make_status(self, task: str, message: str, problems: list[str], hardware_id: str,
                    values: dict[str, str]) -> DiagnosticStatus:
        """Return a DiagnosticStatus named '<node>: <task>', WARN when there are problems."""
        return DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f'{self.get_fully_qualified_name()}: {task}',
            message='; '.join(problems) if problems else message, hardware_id=hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in values.items()])

    def start_diagnostics(self) -> None:
        """Publish diagnostic_status() on /diagnostics every diagnostics_period seconds."""
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(
            float(self.params['diagnostics_period']), self._publish_diagnostics)

    def stop_diagnostics(self) -> None:
        """Stop publishing /diagnostics."""
        if getattr(self, '_diagnostics_timer', None) is not None:
            self.destroy_timer(self._diagnostics_timer)
        if getattr(self, '_diagnostics_pub', None) is not None:
            self.destroy_publisher(self._diagnostics_pub)
        self._diagnostics_timer = self._diagnostics_pub = None

    def _publish_diagnostics(self) -> None:
        """Publish the current status."""
        status = self.diagnostic_status()
        if status is None or self._diagnostics_pub is None:
            return
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        try:
            self._diagnostics_pub.publish(array)
        except RCLError:
            pass  # diagnostics are best effort: the next period reports again

    def stop_inputs(self) -> None:
        """Destroy the subscriptions and stop the worker (the node's inputs)."""

    def release_resources(self) -> None:
        """Free the model (and GPU memory), publishers and timers made in on_configure."""

    @logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the inputs; the worker finishes the item in progress."""
        self.stop_inputs()
        return super().on_deactivate(state)

    @logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free what on_configure made."""
        self.release_resources()
        return super().on_cleanup(state)

    @logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything whatever the state."""
        self.stop_inputs()
        self.release_resources()
        return super().on_shutdown(state)

    def check_parameter(self, name: str, value: ParamValue) -> None:
        """Reject a runtime value the spec allows but the node cannot take (ValueError)."""

    def on_parameters_changed(self, changed: dict[str, ParamValue]) -> None:
        """Apply accepted runtime parameter changes (already stored in self.params)."""

    def _apply_parameters(self, changed: dict[str, ParamValue]) -> None:
        """Store accepted values, then let the node apply them."""
        self.params.update(changed)
        self.on_parameters_changed(changed)

    def publish_counted(self, publisher: Any, msg: Any, what: str) -> None:
        """Publish, counting (not raising) the occasional RCLError under floods."""
        if publisher is None:
            return
        try:
            publisher.publish(msg)
        except RCLError as error:
            self.publish_errors += 1
            self.warn_throttled('publish', f'publishing {what} failed: {error}')

    def warn_throttled(self, key: str, message: str) -> None:
        """Log a warning at most every 2 s per key, saying how many were suppressed."""
        if self._throttle.allow(key):
            suppressed = self._throttle.suppressed.pop(key, 0)
            extra = f' ({suppressed} more since the last report)' if suppressed else ''
            self.get_logger().warning(message + extra)

    def start(self) -> bool:
        """Configure and activate unless autostart is false; return whether it is active."""
        if not self.params['autostart']:
            self.get_logger().info('autostart is false: waiting for a lifecycle manager')
            return False
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Shut the state machine down (on_shutdown frees resources) before destroy_node()."""
        state = self._state_machine.current_state[1]
        if state in ('unconfigured', 'inactive', 'active'):
            try:
                self.trigger_shutdown()
            except Exception as error:  # exiting anyway: say why, never mask the exit
                self.get_logger().warning(f'shutdown transition failed: {error}')


def _interrupt(signum: int, frame: Any) -> NoReturn:
    """Turn SIGTERM into KeyboardInterrupt so the nodes shut down cleanly."""
    raise KeyboardInterrupt


def spin_nodes(factories: Sequence[Callable[[], IvfLifecycleNode]],
               args: list[str] | None = None) -> int:
    """Init rclpy with args, build and start the nodes, spin them multi-threaded, clean up."""
    # Our own handlers: the context must stay valid while the nodes release their resources.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell starting us in the background leaves SIGINT ignored: restore Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    nodes: list[IvfLifecycleNode] = []
    executor = MultiThreadedExecutor()
    try:
        for factory in factories:
            try:
                node = factory()
            except (ParameterValueError, ParameterException) as error:
                # A -p override of the wrong type or out of range: say which, no traceback.
                print(f'invalid parameter: {error}', file=sys.stderr)
                return 2
            nodes.append(node)
            executor.add_node(node)
        for node in nodes:
            node.start()
        # Short waits: Python only runs the signal handlers between them (an idle graph, e.g.
        # unconfigured nodes with no timers, would otherwise block Ctrl-C forever).
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.25)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            node.release()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return 0
