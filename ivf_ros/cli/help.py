"""What the command-line tools share: help formatter, argument types, exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show '(default: ...)' only for real defaults: not None (the help says it) or False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # '(default: None)' after '--config ... (default: the package config/train.yaml)'
        # contradicted the help text, and every flag said '(default: False)'.
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def node_parameter(node_name: str, name: str, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """Return an argparse type: text as kind, checked as the node's parameter of that name."""
    from ivf_ros.nodes.param_specs import ParameterValueError, spec_by_name

    spec = spec_by_name(node_name)[name]

    def parse(text: str) -> Any:
        try:
            return spec.check(kind(text))
        except (ValueError, ParameterValueError) as error:
            # The node's own range: an --imgsz 0 gave AP 0 for every input, without a word.
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def interrupted_exit_code(interrupt: KeyboardInterrupt) -> int:
    """Return the shell's code for a stop by signal: 143 for SIGTERM, else 130 (Ctrl-C)."""
    # The bag player raises KeyboardInterrupt('SIGTERM') when SIGTERM stopped it.
    return 143 if str(interrupt) == 'SIGTERM' else 130
