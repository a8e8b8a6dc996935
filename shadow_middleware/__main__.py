"""Command line: ``python -m shadow_middleware <command> ...``.

Commands:

* ``check-config PATH`` -- validate a TOML configuration file (with the ``SHADOW_*``
  environment overrides applied, unless ``--no-env``) and print the effective
  configuration, header values masked. ``telemetry_setup`` is resolved (imported, not
  called). Exit status 0 when valid, 2 otherwise.
* ``report SPANS...`` -- summarise shadow spans and apply a promotion policy (see
  ``shadow_middleware.report``). Exit status 0 promote, 1 do not promote, 2 not enough data.

A command is a :class:`Command` in ``COMMANDS``. The report wing is imported only when the
``report`` command's parser is built.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._config import ShadowConfig, describe
from ._configfile import ENV_PREFIX, FOREIGN_ENV, ConfigErrors

__all__ = ["COMMANDS", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """One sub-command: its parser's texts, how to add its arguments, and what it runs."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the TOML file")
    parser.add_argument("--no-env", action="store_true", help="ignore SHADOW_* environment variables")


def _check_config(args: argparse.Namespace) -> int:
    environ = {} if args.no_env else dict(os.environ)
    try:
        if args.no_env or not args.path:
            # An empty PATH is a file that cannot be read, not "no file" as an empty SHADOW_CONFIG is.
            config = ShadowConfig.from_toml(args.path)
        else:
            config = ShadowConfig.from_env({**environ, "SHADOW_CONFIG": args.path})
    except ValueError as exc:
        for line in exc.errors if isinstance(exc, ConfigErrors) else str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    if config.telemetry_setup is not None:
        problem = _setup_problem(config.telemetry_setup)
        if problem is not None:
            print(f"error: ShadowConfig.telemetry_setup: {problem}", file=sys.stderr)
            return 2
    applied = sorted(v for v in environ if v.startswith(ENV_PREFIX) and v not in FOREIGN_ENV)
    if applied:
        print(f"# environment overrides applied: {', '.join(applied)}")
    print(describe(config), end="")
    return 0


def _setup_problem(spec: str) -> str | None:
    """What is wrong with ``telemetry_setup``, resolved as the helper process resolves it
    (import the module, get the attribute, check it is callable) but not called; None if
    nothing. A typo there would leave the helper crash-looping and every exchange dropped."""
    import importlib

    module_name, _, qualname = spec.partition(":")
    # As `python -m` would: the current directory's packages are importable (the console
    # script does not put it on sys.path).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        return f"cannot import {module_name!r} ({type(exc).__name__}: {exc}), from {spec!r}"
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            return f"{module_name!r} has no attribute {qualname!r}, from {spec!r}"
    if not callable(target):
        return f"{spec!r} is not callable (a {type(target).__name__})"
    return None


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    from .report.cli import add_arguments  # the report wing, only when asked for

    add_arguments(parser)


def _report(args: argparse.Namespace) -> int:
    from .report.cli import run

    return run(args)


COMMANDS: list[Command] = [
    Command(
        "check-config",
        "validate a configuration file and print the effective configuration",
        "Validate a TOML configuration file as the middleware reads it, with the SHADOW_* "
        "environment variables applied on top (as if SHADOW_CONFIG=PATH were set), and print "
        "the effective configuration as TOML with header values masked. telemetry_setup is "
        "resolved (its module imported, the function found; it is not called). Every unknown key or "
        "variable and every bad value is reported, one per line. Exit status 0 when valid, "
        "2 otherwise.",
        _check_config_arguments,
        _check_config,
    ),
    Command(
        "report",
        "summarise shadow spans and decide whether to promote the candidate",
        "Summarise shadow spans (OTLP/JSON lines, plain or gzip) per target and route: outcomes, "
        "agreement, decision flips, latency, and with --ground-truth the quality of both models; "
        "then apply a promotion policy. Exit status 0 promote, 1 do not promote, "
        "2 not enough data or a usage error.",
        _report_arguments,
        _report,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    # The usage line names the command as it was run: the console script, or the module.
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    script = script.removesuffix(".exe")
    parser = argparse.ArgumentParser(
        prog=script if script.startswith("shadow-middleware") else "python -m shadow_middleware",
        description="shadow_middleware tools",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit status (argparse usage errors: 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
