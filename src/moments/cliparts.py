"""What every `moments` command module builds its parser with: the command and group
helpers, the handler type, and the settings loader the commands share.

Only argparse and the standard library at import time: `moments --help`, and every
command's start, build the whole parser, so a client library imported here (or at the
top of a command module) is paid by every command. Commands import theirs when they run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from textwrap import dedent
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moments.settings import Settings

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

Handler = Callable[[argparse.Namespace], int]


def add_command(
    sub: Subparsers,
    name: str,
    help_: str,
    examples: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    """`moments ... NAME`: its help is `help_` above the options and `examples` below."""
    p = sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog="examples:\n" + dedent(examples).strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler, command_parser=p)
    return p


def add_group(sub: Subparsers, name: str, help_: str, examples: str) -> Subparsers:
    """A command of subcommands (`moments NAME COMMAND`): alone, it prints its help."""
    p = add_command(sub, name, help_, examples, show_subcommands)
    return p.add_subparsers(title=f"{name} commands", metavar="COMMAND")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (`--top 0` printed an empty table,
    `--top -1` one without its last row)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: write a whole number of 1 or more")
    return value


def show_subcommands(args: argparse.Namespace) -> int:
    """The handler of a group called without a subcommand."""
    args.command_parser.print_help()
    return 2


def command_settings() -> Settings:
    """The settings, with their secrets and (unless MOMENTS_LOG_PII) subscriber numbers
    masked in every log line from here on."""
    from moments.logmask import install_pii_masking
    from moments.settings import load_settings

    settings = load_settings()
    install_pii_masking(mask=not settings.log_pii, secrets=settings.secret_values())
    return settings
