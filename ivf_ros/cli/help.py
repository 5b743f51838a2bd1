"""What the command-line tools share: the help formatter."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show '(default: ...)' only for real defaults: not None (the help says it) or False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # '(default: None)' after '--config ... (default: the package config/train.yaml)'
        # contradicted the help text, and every flag said '(default: False)'.
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)
