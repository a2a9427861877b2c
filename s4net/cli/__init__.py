"""The ``s4net`` command line (:mod:`~s4net.cli.commands`) and the framework both CLIs share
(:mod:`~s4net.cli.framework`: sub-commands, one-line errors and exit codes, argument types)."""

from s4net.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
