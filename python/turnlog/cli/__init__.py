"""The ``turnlog`` command: list, read, check, repair and export the sessions of a workspace.

``turnlog --workspace DIR COMMAND ...`` (or ``python -m turnlog``). The workspace defaults to
``$TURNLOG_WORKSPACE``, else the current folder. Commands: ``ls``, ``show``, ``append``,
``doctor``, ``compact``, ``rm``, ``export``, ``adopt``, ``bench``; ``turnlog COMMAND --help``
for each, and ``docs/CLI.md`` for a walk-through.

Output is a table or text for people and JSON with ``--json`` (every command, before or after
it). Long work draws a progress bar on stderr when stderr is a terminal, and nothing when it is
piped. Errors are one line on stderr, ``turnlog: error: ...``, with exit status 2 for a wrong
command line and 1 for a command that could not do all of its work (``doctor`` also exits 1
when it finds damage; ``ls`` and ``compact`` go on past a session they cannot read, and exit 1
at the end). Only the standard library is used; redis-py only with ``--backend redis``.

This module holds the command line (``build_parser``) and ``main``; the rest lives beside it:
``workspace`` (opening the folder or server and its backend), ``output`` (stdout, error lines,
exit statuses, ``CliError``), ``table`` (tables, sizes, safe text, the progress bar), the
commands in ``inspect`` (``ls``, ``show``, ``doctor``, ``export``: they change nothing),
``edit`` (``append``, ``compact``, ``rm``), ``adopt`` and ``bench``, and ``doctor`` (why a
line is corrupt).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import IMPLEMENTATION, __version__
from ..backends import format as _format
from .adopt import cmd_adopt
from .bench import cmd_bench
from .edit import cmd_append, cmd_compact, cmd_rm
from .inspect import SORTS, cmd_doctor, cmd_export, cmd_ls, cmd_show
from .output import (
    BROKEN_PIPE,
    FAILURE,
    INTERRUPTED,
    OK,
    PROG,
    USAGE,
    CliError,
    error,
    os_error,
    quote,
)
from .workspace import DEFAULT_REDIS_URL

__all__ = ["CliError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``turnlog: error: ls: ...``), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        command = self.prog[len(PROG) :].strip()
        raise CliError(f"{command}: {message}" if command else message, USAGE)


# --- argument types -----------------------------------------------------------------------------


def _session_key(text: str) -> str:
    """A key as the stores take it (checked here, so a bad one is a usage error)."""
    try:
        _format.key_to_name(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(f"invalid session key {quote(text)}: {problem}") from None
    return text


def _at_least(low: int, rule: str) -> Callable[[str], int]:
    """The argument type of a whole number of ``low`` or more (``1,000`` and ``1_000`` too)."""

    def whole(text: str) -> int:
        try:
            value = int(text.replace(",", "").replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        return value

    return whole


_positive = _at_least(1, "must be at least 1")
#: ``--tail N``: 0 or more (every backend takes any size: more than a session holds is all of it).
_tail = _at_least(0, "must not be negative")


# --- the parser ---------------------------------------------------------------------------------

_EPILOG = """\
examples:
  turnlog -w ./workspace ls --sort activity
  turnlog show telegram_user123 --tail 20
  turnlog append telegram_user123 --role user --content "hello"
  echo '{"role":"assistant","content":"hi!"}' | turnlog append telegram_user123 -
  turnlog doctor && echo clean
  turnlog compact --all
  turnlog export telegram_user123 --format markdown > chat.md

The workspace is --workspace, else $TURNLOG_WORKSPACE, else the current folder;
with --backend redis, the server is --redis-url, else $TURNLOG_REDIS_URL.
Exit status: 0 done, 1 failed (or doctor found damage, or a session was unreadable),
2 wrong command line.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``turnlog`` (every subcommand sets ``run``)."""
    parser = _Parser(
        prog=PROG,
        description="Look into, repair and export a turnlog workspace of chat sessions.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} ({IMPLEMENTATION})"
    )
    # The shared options work before the command and after it; given after, they win. SUPPRESS
    # keeps a subcommand that does not repeat them from resetting what was given before it.
    common = _Parser(add_help=False)
    for target, default in ((parser, None), (common, argparse.SUPPRESS)):
        target.add_argument(
            "-w",
            "--workspace",
            metavar="DIR",
            default=default,
            help="the workspace folder (default: $TURNLOG_WORKSPACE, else .)",
        )
        target.add_argument(
            "--backend",
            choices=("jsonl", "sqlite", "redis"),
            default="jsonl" if default is None else default,
            help="how the workspace stores sessions (default: jsonl)",
        )
        target.add_argument(
            "--redis-url",
            metavar="URL",
            default=default,
            help=f"with --backend redis (default: $TURNLOG_REDIS_URL, else {DEFAULT_REDIS_URL})",
        )
        target.add_argument(
            "--redis-prefix",
            metavar="PREFIX",
            default=default,
            help="with --backend redis: the prefix of its keys (default: turnlog:)",
        )
        target.add_argument(
            "--json",
            action="store_true",
            default=False if default is None else default,
            help="print JSON instead of a table or text",
        )

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[common])
        sub.set_defaults(run=run)
        return sub

    ls = command("ls", cmd_ls, "list the sessions: messages, size, activity, damage")
    ls.add_argument(
        "--sort",
        choices=tuple(SORTS),
        default="key",
        help="key (default, A to Z); messages, size, activity, corrupt (most or newest first)",
    )
    ls.add_argument("--reverse", action="store_true", help="reverse the order")

    show = command("show", cmd_show, "print a session's messages, oldest first")
    show.add_argument("key", type=_session_key, metavar="KEY")
    show.add_argument(
        "--tail", type=_tail, metavar="N", help="only the newest N messages (0: none)"
    )

    append = command(
        "append",
        cmd_append,
        "add a message: --role and --content, or JSON on stdin (an object, an array, lines)",
    )
    append.add_argument("key", type=_session_key, metavar="KEY")
    append.add_argument(
        "stdin",
        nargs="?",
        choices=("-",),
        metavar="-",
        help="read the message(s) as JSON from stdin",
    )
    append.add_argument("--role", help="who speaks: user, assistant, system, tool...")
    append.add_argument("--content", help="the text of the message")

    adopt = command(
        "adopt",
        cmd_adopt,
        "give the keys in FILE the files ZeroClaw wrote for them (a dry run without --apply)",
    )
    adopt.add_argument(
        "--keys",
        required=True,
        metavar="FILE",
        help="the bot's session keys, one a line (-: stdin)",
    )
    adopt.add_argument("--apply", action="store_true", help="adopt (default: only show the plan)")

    doctor = command(
        "doctor",
        cmd_doctor,
        "find corrupt lines (line number and why); exit status 1 if any",
    )
    doctor.add_argument("keys", nargs="*", type=_session_key, metavar="KEY")

    compact = command("compact", cmd_compact, "rewrite sessions with only their valid lines")
    compact.add_argument("keys", nargs="*", type=_session_key, metavar="KEY")
    compact.add_argument("--all", action="store_true", help="every session of the workspace")

    rm = command("rm", cmd_rm, "delete sessions (transcript and metadata)")
    rm.add_argument("keys", nargs="+", type=_session_key, metavar="KEY")

    export = command("export", cmd_export, "write a session as JSON lines, JSON or Markdown")
    export.add_argument("key", type=_session_key, metavar="KEY")
    export.add_argument(
        "--format",
        choices=("jsonl", "json", "markdown"),
        help="default: jsonl (json with --json)",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")

    bench = command("bench", cmd_bench, "time Rust vs pure Python on a generated, damaged session")
    bench.add_argument(
        "--messages",
        type=_positive,
        default=100_000,
        metavar="N",
        help="valid messages in the session (default: 100,000)",
    )
    return parser


# --- main ---------------------------------------------------------------------------------------


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush of what
    is still buffered does not fail again (the recipe in Python's ``signal`` docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test's capture): nothing will flush it at exit


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``turnlog`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Never raises (but ``SystemExit`` never reaches the caller either): every failure is one line
    on stderr. ``TURNLOG_DEBUG=1`` lets unexpected exceptions through, with their traceback.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help and --version print, then "exit"
            return done.code if isinstance(done.code, int) else OK
        if args.backend != "redis" and (args.redis_url or args.redis_prefix):
            # Not ignored: it would quietly list the local workspace instead of the server.
            raise CliError("--redis-url and --redis-prefix need --backend redis", USAGE)
        status: int = args.run(args)
        sys.stdout.flush()
        return status
    except CliError as failure:
        error(str(failure))
        return failure.status
    except KeyboardInterrupt:
        error("interrupted")
        return INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except OSError as failure:
        error(os_error(failure))
        return FAILURE
    except Exception as failure:
        if os.environ.get("TURNLOG_DEBUG", "").strip() not in ("", "0"):
            raise
        error(f"{type(failure).__name__}: {failure}")
        return FAILURE
