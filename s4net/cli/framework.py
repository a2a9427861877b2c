"""Helpers shared by the ``s4net`` and ``wsss`` command lines."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence

from s4net.errors import InputError, TrainingStopped

Handler = Callable[[argparse.Namespace], int]


def command_parser(prog: str, description: str, version: str) -> tuple[argparse.ArgumentParser, Any]:
    """A top-level parser with ``--version`` and a required sub-command; returns it and its sub-parsers."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, commands


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def add_cpu_bf16(parser: argparse.ArgumentParser, default: str = "off") -> None:
    """``--cpu-bf16 off|on|auto`` of a trainer: bfloat16 autocast on the CPU (resolved by
    :func:`s4net.engine.resolve_cpu_bf16`)."""
    parser.add_argument("--cpu-bf16", choices=("off", "on", "auto"), default=default,
                        help="bfloat16 autocast on CPU; auto: on where oneDNN supports bfloat16 (AVX512-BF16 or AMX "
                             f"CPUs; default: {default})")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-v`` for debug logging, ``-q`` for warnings only."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, configure logging and call the subcommand's handler.

    Bad input (:class:`InputError`, a missing file) ends with a one-line
    ``prog command: error: ...`` on stderr and exit status 2; a failing machine
    (``OSError``: disk full, read-only output, no permission) with one line and
    status 1; a diverging training (a loss that is not finite) with one line and
    status 3; a training stopped by SIGTERM or SIGUSR1 after saving its state with one
    line and status 75 (:data:`~s4net.engine.preemption.EXIT_PREEMPTED`: run it again to
    resume); anything else is a bug and keeps its traceback.
    """
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    handler: Handler = args.handler
    try:
        return handler(args)
    except InputError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingStopped as exc:
        print(f"{parser.prog} {args.command}: {exc.label}{exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine, not the input: disk full, read-only or forbidden folder, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{parser.prog} {args.command}: error: {where}{exc.strerror or exc} (finished outputs are kept; "
              "run the same command again once this is fixed)", file=sys.stderr)
        return 1


def named_pairs(items: Sequence[str], option: str, form: str = "NAME=PATH") -> list[tuple[str, str]]:
    """``NAME=VALUE`` command-line items split in order; a malformed one is an :class:`InputError` naming ``option``."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError(None, f"{option}: expected {form}, got {item!r}")
        pairs.append((name, value))
    return pairs
