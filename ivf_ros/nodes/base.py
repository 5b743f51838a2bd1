"""Shared lifecycle-node plumbing: declared parameters, autostart, throttled warnings, main()."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import copy
import functools
import signal
import sys
import traceback
from typing import Any, NoReturn

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data, QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from ivf_ros.nodes.param_specs import ParameterValueError, ParamSpec, ParamValue
from ivf_ros.nodes.parameters import add_validation, declare_parameters
from ivf_ros.pipeline.runtime import (
    compute_threads,
    installed_signal_handlers,
    LatestWorker,
    ProblemLog,
    Throttle,
    use_threads,
)

# A problem (bad frame, failed callback) makes the status WARN for this long after it was seen;
# the counters stay.
RECENT_PROBLEM_S = 5.0


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

    worker_task = 'work'   # what the worker's failures are counted and logged as

    def __init__(self, node_name: str, specs: Sequence[ParamSpec], **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.specs = tuple(specs)
        self.params: dict[str, ParamValue] = declare_parameters(self, self.specs)
        add_validation(self, self.specs, self._apply_parameters, self.check_parameter)
        self._throttle = Throttle(period_s=2.0)
        self.publish_errors = 0
        self.problems = ProblemLog()
        self.configure_error = ''  # why a failed transition left the node unconfigured
        self.last_bad_input = ''   # why the last rejected input was rejected
        self._tracebacks_logged: set[str] = set()
        self._diagnostics_pub: Any = None
        self._diagnostics_timer: Any = None
        self.start_diagnostics()

    def undeclared_overrides(self) -> list[str]:
        """Return the -p / params-file names given to this node that it does not declare."""
        # rcl keeps an override nobody declares without a word. rclpy has no public accessor
        # for the overrides; qos_overrides.* are declared later, when the topics are created.
        overrides = getattr(self, '_parameter_overrides', {})
        return sorted(name for name in overrides
                      if not self.has_parameter(name) and not name.startswith('qos_overrides.'))

    def guarded(self, where: str, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap a subscription or timer callback: an exception is counted and logged, not fatal.

        An exception escaping a callback would stop the executor and with it every node of the
        process: the first one of each callback is logged with its traceback, the rest are
        throttled, all are counted on /diagnostics.
        """

        @functools.wraps(callback)
        def run(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as error:  # noqa: BLE001 - the boundary that keeps the node alive
                message = f'{where} failed ({type(error).__name__}): {error}'
                self.problems.add('callback', message)
                if where not in self._tracebacks_logged:
                    self._tracebacks_logged.add(where)
                    self.get_logger().error(
                        f'{message}; the node goes on (later failures are counted and '
                        f'throttled):\n{traceback.format_exc().rstrip()}')
                else:
                    self.warn_throttled(f'callback_{where}', message)

        return run

    def diagnostic_status(self) -> DiagnosticStatus | None:
        """Return the node's health for /diagnostics (None: nothing to report)."""
        return None

    @property
    def lifecycle_state(self) -> str:
        """Return the current lifecycle state's label ('unconfigured', 'active', ...)."""
        return self._state_machine.current_state[1]

    def make_status(self, task: str, message: str, problems: list[str], hardware_id: str,
                    values: dict[str, str], errors: Sequence[str] = ()) -> DiagnosticStatus:
        """Return '<node>: <task>': ERROR with errors, WARN with problems, else OK.

        Recent callback failures and a failed configure are added here for every node; a node
        that is not active says so in the message.
        """
        errors = list(errors)
        if self.configure_error:
            errors.insert(0, self.configure_error)
        problems = list(problems) + list(self.problems.recent(RECENT_PROBLEM_S).values())
        state = self.lifecycle_state
        values = {'lifecycle state': state, **values,
                  'callback errors': str(self.problems.count('callback'))}
        if errors:
            level, text = DiagnosticStatus.ERROR, '; '.join(errors + problems)
        elif problems:
            level, text = DiagnosticStatus.WARN, '; '.join(problems)
        else:
            level, text = DiagnosticStatus.OK, message if state == 'active' else state
        return DiagnosticStatus(
            level=level, name=f'{self.get_fully_qualified_name()}: {task}', message=text,
            hardware_id=hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in values.items()])

    def start_diagnostics(self) -> None:
        """Publish diagnostic_status() on /diagnostics every diagnostics_period seconds.

        From construction on, in every lifecycle state (a node that failed to configure says
        why), on a steady timer: with use_sim_time, ROS time stands still before the first
        /clock and while a bag is paused, but the node's health is still news.
        """
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(
            float(self.params['diagnostics_period']),
            self.guarded('diagnostics', self._publish_diagnostics),
            clock=Clock(clock_type=ClockType.STEADY_TIME))

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

    def camera_subscription(self, msg_type: type, topic: str,
                            callback: Callable[[Any], None]) -> Any:
        """Subscribe to a camera topic with sensor-data QoS that qos_overrides may change."""
        # rclpy writes the overrides into the profile it is given: each subscription gets its
        # own copy, so an override on one topic does not reach the others (or the module's
        # shared qos_profile_sensor_data).
        return self.create_subscription(
            msg_type, topic, callback, copy.copy(qos_profile_sensor_data),
            qos_overriding_options=QoSOverridingOptions.with_default_policies())

    def output_publisher(self, msg_type: type, topic: str, depth: int) -> Any:
        """Create a reliable lifecycle publisher whose QoS qos_overrides may change."""
        return self.create_lifecycle_publisher(
            msg_type, topic, QoSProfile(depth=depth),
            qos_overriding_options=QoSOverridingOptions.with_default_policies())

    def start_worker(self, name: str, process: Callable[[Any], None]) -> LatestWorker:
        """Return a started worker thread running process with the node's `threads` setting."""
        threads = compute_threads(int(self.params['threads']))
        return LatestWorker(name, process, self._on_worker_error,
                            on_start=lambda: use_threads(threads))

    def _on_worker_error(self, error: Exception) -> None:
        """Count and log an item the worker could not process; the worker goes on."""
        self.report_problem(self.worker_task,
                            f'{self.worker_task} failed ({type(error).__name__}): {error}')

    def report_problem(self, key: str, message: str) -> None:
        """Count a problem under key (recent ones make the status WARN) and log it, throttled."""
        self.problems.add(key, message)
        self.warn_throttled(key, message)

    def report_bad_input(self, key: str, message: str) -> None:
        """Count a rejected input as 'bad <key>', keep it as the last bad input, log it."""
        self.last_bad_input = message
        self.report_problem(f'bad {key}', message)

    @staticmethod
    def free_gpu_memory() -> None:
        """Hand cached CUDA memory back once a model is dropped (no-op without torch/CUDA)."""
        if 'torch' in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

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

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Undo what a transition that raised left behind, then return to unconfigured."""
        # rclpy's default returns SUCCESS without cleaning up: a subscription or the model made
        # before the exception would stay alive in the unconfigured state, and the next
        # activate would subscribe twice.
        try:
            self.stop_inputs()
            self.release_resources()
        except Exception:  # noqa: BLE001 - nothing is left to keep consistent: finalize
            self.get_logger().error(
                f'cleaning up after a transition from {state.label} raised:\n'
                f'{traceback.format_exc().rstrip()}')
            return TransitionCallbackReturn.FAILURE
        # state is the primary state the failed transition started from.
        self.configure_error = (f'a transition from {state.label} raised (see the log); the '
                                'node was cleaned up and is unconfigured')
        self._publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def fail_configure(self, reason: str) -> TransitionCallbackReturn:
        """Log why configure failed, report it as ERROR on /diagnostics, return FAILURE."""
        self.get_logger().error(reason)
        self.configure_error = f'configure failed: {reason}'
        self._publish_diagnostics()  # at once: a supervisor need not wait a period
        return TransitionCallbackReturn.FAILURE

    def destroy_node(self) -> None:
        """Stop /diagnostics, then destroy the node."""
        self.stop_diagnostics()
        super().destroy_node()

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


def node_help(executable: str, summary: str, specs: Sequence[ParamSpec]) -> str:
    """Return the --help text of a node executable: usage, summary, every parameter."""
    lines = [f'usage: {executable} [-h] [--ros-args [-r FROM:=TO] [-p NAME:=VALUE] '
             '[--params-file FILE] ...]', '', summary.strip(), '', 'parameters (set with -p or '
             'a params file; `ros2 param describe` shows them on a running node):']
    for spec in specs:
        constraints = f' [{spec.constraints}]' if spec.constraints else ''
        read_only = ' (read-only)' if spec.read_only else ''
        lines.append(f'  {spec.name} ({spec.kind.value}, default {spec.default!r}){read_only}'
                     f'{constraints}')
        lines.append(f'      {spec.description}')
    return '\n'.join(lines) + '\n'


def wants_help(args: Sequence[str] | None) -> bool:
    """Return whether -h/--help is among the non-ROS command-line arguments."""
    argv = list(sys.argv[1:] if args is None else args)
    return any(arg in ('-h', '--help') for arg in remove_ros_args(argv))


def warn_unused_overrides(nodes: Sequence[IvfLifecycleNode]) -> list[str]:
    """Warn once about each given parameter that no node of this process declares (typos)."""
    # ivf-graph hands every -p and '/**' value to both nodes: a name one of them takes is fine.
    unused: list[str] = []
    for node in nodes:
        names = [name for name in node.undeclared_overrides() if name not in unused
                 and not any(other.has_parameter(name) for other in nodes)]
        if names:
            declared = sorted({spec.name for other in nodes for spec in other.specs})
            node.get_logger().warning(
                f'ignoring parameter(s) {", ".join(names)}: no node here declares them '
                f'(declared: {", ".join(declared)})')
            unused += names
    return unused


def spin_nodes(factories: Sequence[Callable[[], IvfLifecycleNode]],
               args: list[str] | None = None,
               connect: Callable[[list[IvfLifecycleNode]], None] | None = None) -> int:
    """Init rclpy with args, build, connect and start the nodes, spin them, clean up."""
    # Our own handlers: the context must stay valid while the nodes release their resources.
    # A shell starting us in the background leaves SIGINT ignored: restore Ctrl-C.
    with installed_signal_handlers({signal.SIGTERM: _interrupt,
                                    signal.SIGINT: signal.default_int_handler}):
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
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
            warn_unused_overrides(nodes)
            if connect is not None:
                connect(nodes)
            for node in nodes:
                node.start()
            # Short waits: Python only runs the signal handlers between them (an idle graph, e.g.
            # unconfigured nodes with no timers, would otherwise block Ctrl-C forever).
            while rclpy.ok() and not all(node.lifecycle_state == 'finalized' for node in nodes):
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
