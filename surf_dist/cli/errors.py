"""What a command shows when something goes wrong: one line on stderr and an exit code (2: the
user's error, 130: Ctrl-C, 1: a bug), never a traceback; argparse errors as one line; negative
numbers read as flag values. Nothing here knows about SURF."""
from __future__ import annotations

import argparse
import errno
import os
import re
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143          # 128 + SIGTERM
USER_ERRORS = (ValueError, OSError, FloatingPointError)   # FileNotFoundError is an OSError
NUMBER = re.compile(r"^-(\d|\.\d|inf(inity)?$|nan$)", re.IGNORECASE)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a job scheduler's stop): handled as Ctrl-C is (one line, the
    resume hint, the lock released, nothing half written), exit 143."""


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises ``Terminated`` in the main thread (``cli.main.entry``)."""
    import signal

    def handler(signum, frame):
        raise Terminated
    signal.signal(signal.SIGTERM, handler)


class UsageError(ValueError):
    """A command line argparse could not parse; ``prog`` is the (sub)command's name."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise ``UsageError`` (one line, no usage block), so
    that the caller prints ``PROG: error: MESSAGE (see PROG --help)`` and returns 2."""

    def error(self, message: str):
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


MAX_LINE = 2000      # characters of an error line; a value of megabytes is cut in the middle (issue 25)


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and end with the number
    of characters left out between them: an error line stays readable whatever a value holds."""
    text = str(text)
    if len(text) <= limit:
        return text
    head, tail = limit - 400, 200
    return f"{text[:head]} ...[{len(text) - head - tail:,} characters left out]... {text[-tail:]}"


def one_line(message) -> str:
    """A message on one line (inner line breaks become '; '), at most ``MAX_LINE`` long."""
    return shorten("; ".join(part.strip() for part in str(message).splitlines() if part.strip()))


def describe_os_error(err: OSError) -> str:
    """``strerror: filename`` of an OSError, with the fix for the common ones."""
    what = err.strerror or type(err).__name__
    where = f": {err.filename}" if err.filename else ""
    hint = {errno.EACCES: "choose a folder you may write to",
            errno.EROFS: "choose a folder on a writable file system",
            errno.ENOSPC: "free disk space or choose another disk",
            errno.ENAMETOOLONG: "use a shorter name"}.get(err.errno, "")
    text = str(err) if not err.strerror else f"{what}{where}"
    return text + (f"; {hint}" if hint else "")


def error_line(command: str, err: BaseException) -> str:
    """``surf-dist COMMAND: error: MESSAGE`` on one line."""
    message = shorten(describe_os_error(err)) if isinstance(err, OSError) and err.strerror else one_line(err)
    return f"{command}: error: {message}"


def run_guarded(command: str, work, interrupted=None, other_errors: dict | None = None) -> int:
    """Run ``work()`` and turn what a user can cause into one line on stderr and an exit code.

    ``command``: the prefix, e.g. ``surf-dist train``. ``interrupted()``: the line printed on
    Ctrl-C (exit 130), e.g. the command that resumes. ``other_errors``: {exception type: exit
    code} for errors that are not the user's (a lost worker: 1). Anything else is a bug: one
    line asking for a report, exit 1 (``SURF_DIST_DEBUG=1`` shows the traceback)."""
    try:
        return work()
    except KeyboardInterrupt as err:
        text = interrupted() if interrupted else "interrupted"
        if isinstance(err, Terminated):
            text = "terminated (SIGTERM)" + text.removeprefix("interrupted")
        print(f"{command}: error: {one_line(text)}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    except USER_ERRORS as err:
        print(error_line(command, err), file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # noqa: BLE001 - the last line of defence against a traceback
        for kind, code in (other_errors or {}).items():
            if isinstance(err, kind):
                print(error_line(command, err), file=sys.stderr)
                return code
        if os.environ.get("SURF_DIST_DEBUG"):
            raise
        print(f"{command}: error: internal error {type(err).__name__}: {one_line(err)[:300]} "
              "(a bug: please report it; SURF_DIST_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- numbers on the command line

def join_negative_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--lr -1e-3`` -> ``--lr=-1e-3`` for every option of ``parser`` (or its subcommands) that
    takes a value, so argparse reads a negative number as the value (it otherwise takes
    ``-1e-3`` for an unknown flag) and the config check can say what is wrong with it."""
    takes_value = _options_taking_a_value(parser)
    joined, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token in takes_value and i + 1 < len(argv) and NUMBER.match(argv[i + 1]):
            joined.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        joined.append(token)
        i += 1
    return joined


def _options_taking_a_value(parser: argparse.ArgumentParser) -> set[str]:
    names = set()
    for action in parser._actions:   # argparse has no public walk of its actions
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names |= _options_taking_a_value(sub)
        elif action.option_strings and action.nargs != 0:
            names |= {s for s in action.option_strings if s.startswith("--")}
    return names


# --------------------------------------------------------------------------- paths on the command line

def check_path_text(text, flag: str) -> None:
    """A path given as text names something: not empty (an unset shell variable: ``--out
    "$OUT"``, which would mean the current folder) and not only blanks. ValueError naming
    the flag."""
    if text is None:
        return
    if not str(text).strip():
        shown = "an empty string" if not str(text) else f"only blanks ({str(text)!r})"
        raise ValueError(f"{flag} is {shown}, which names no file or folder (an unset shell variable?); "
                         "give a path (write ./ for the current folder)")
