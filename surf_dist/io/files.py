"""Protections any command can use: errors as one line, output folders checked before any work,
a lock on the folder being written, atomic writes, negative numbers as flag values, Ctrl-C.

Nothing here knows about SURF: a command calls

  argv = join_negative_values(argv, parser)            # `--lr -1e-3` is a value, not a flag
  check_output_folder(out, force)                      # before the work: writable, empty, unlocked
  with claimed_output(out, force) as out: ...          # created, locked; removed again if the
                                                       # command fails before writing anything
  return run_guarded("train", work, interrupted)       # one line and exit 2 / 130, no traceback
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import re
import sys
import tempfile
from pathlib import Path

LOCK_NAME = ".surf-dist.lock"
PROBE_PREFIX = ".surf-dist-probe-"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
USER_ERRORS = (ValueError, OSError, FloatingPointError)   # FileNotFoundError is an OSError
NUMBER = re.compile(r"^-(\d|\.\d|inf(inity)?$|nan$)", re.IGNORECASE)


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


def one_line(message) -> str:
    """A message on one line: inner line breaks become '; '."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


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
    message = describe_os_error(err) if isinstance(err, OSError) and err.strerror else one_line(err)
    return f"{command}: error: {message}"


def run_guarded(command: str, work, interrupted=None, other_errors: dict | None = None) -> int:
    """Run ``work()`` and turn what a user can cause into one line on stderr and an exit code.

    ``command``: the prefix, e.g. ``surf-dist train``. ``interrupted()``: the line printed on
    Ctrl-C (exit 130), e.g. the command that resumes. ``other_errors``: {exception type: exit
    code} for errors that are not the user's (a lost worker: 1). Anything else is a bug: one
    line asking for a report, exit 1 (``SURF_DIST_DEBUG=1`` shows the traceback)."""
    try:
        return work()
    except KeyboardInterrupt:
        text = interrupted() if interrupted else "interrupted"
        print(f"{command}: error: {one_line(text)}", file=sys.stderr)
        return EXIT_INTERRUPTED
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


# --------------------------------------------------------------------------- output folders

def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` takes (255 if unknown)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (following links)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_path_components(path: Path, flag: str = "--out") -> None:
    """Every component of ``path`` can be a folder: no name too long, no regular file on the
    way, no link to nothing. Raises ValueError naming the component and the fix."""
    absolute = Path(os.path.abspath(path))
    if len(os.fsencode(str(absolute))) >= 4096:
        raise ValueError(f"{flag} {path}: the path is {len(os.fsencode(str(absolute)))} bytes long, "
                         "the limit is 4095; choose a shorter path")
    current = Path(absolute.anchor)
    for part in absolute.parts[1:]:
        limit = name_max(nearest_existing(current))
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"{flag} {path}: the name {part[:24]}... is {len(os.fsencode(part))} bytes "
                             f"long, the file system takes at most {limit}; choose a shorter name")
        current = current / part
        if current.is_symlink() and not current.exists():
            raise ValueError(f"{flag} {path}: {current} is a link to {os.readlink(current)}, which does "
                             "not exist; remove the link or point it at a folder")
        if current.exists() and not current.is_dir() and current != absolute:
            raise ValueError(f"{flag} {path}: {current} is a file, not a folder; choose another path")


def check_writable(folder: Path, flag: str = "--out", shown: Path | None = None) -> None:
    """Create and remove a probe file in ``folder``: the only test that also holds for root, a
    read-only mount, a full disk or quotas. Raises ValueError with the reason."""
    try:
        _create_and_remove_probe(folder / f"{PROBE_PREFIX}{os.getpid()}")
    except OSError as err:
        raise ValueError(f"{flag} {shown or folder}: cannot write in {folder} "
                         f"({err.strerror or err}); choose a writable folder") from None


def _create_and_remove_probe(probe: Path) -> None:
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    os.unlink(probe)


def is_empty_folder(path: Path) -> bool:
    """True if ``path`` holds nothing but our lock file."""
    return all(entry.name == LOCK_NAME for entry in path.iterdir())


def check_output_folder(path: Path, force: bool = False, resume: bool = False, flag: str = "--out") -> None:
    """Everything about an output folder that can be known before any work, creating nothing:
    its path can be made, it is writable, it is empty (unless ``force``) or, with ``resume``,
    exists, and no other process holds its lock."""
    path = Path(path)
    check_path_components(path, flag)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} exists and is not a folder; choose another path")
    if resume and not path.is_dir():
        raise ValueError(f"--resume: {path} does not exist; drop --resume to start a new run there")
    check_writable(nearest_existing(path), flag, path)
    if path.is_dir():
        holder = lock_holder(path)
        if holder is not None:
            raise ValueError(locked_message(path, holder))
        if not force and not resume and not is_empty_folder(path):
            raise ValueError(f"{flag} {path} is not empty; choose a new folder or pass --force "
                             "(nothing was written)")


# --------------------------------------------------------------------------- the lock

def locked_message(folder: Path, pid: int | str) -> str:
    return (f"{folder} is being written by another surf-dist process (pid {pid}, lock file "
            f"{folder / LOCK_NAME}); wait for it to finish, or choose another folder")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def lock_holder(folder: Path) -> int | str | None:
    """The pid holding ``folder``'s lock (``?`` if unreadable), or None if it is free."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or "?"
        return None
    finally:
        os.close(fd)


class FolderLock:
    """An exclusive lock on a folder: ``FOLDER/.surf-dist.lock`` holds the writer's pid and an
    ``flock``. The kernel drops the flock when the process dies, so a lock left by a killed
    process is taken over (and said so on stderr); a live holder is a ValueError at once."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        for _ in range(10):   # the holder may unlink the file between our open and our flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd) or "?"
                os.close(fd)
                raise ValueError(locked_message(self.folder, holder)) from None
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        else:
            raise ValueError(f"could not lock {self.path}: it keeps changing; is another process "
                             "writing the folder?")
        stale = _read_pid(fd)
        if stale is not None and stale != os.getpid() and not _pid_alive(stale):
            print(f"surf-dist: note: took over the stale lock {self.path} of process {stale}, "
                  "which is no longer running", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)      # unlink before unlocking: a waiter then finds no file
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def claimed_output(path: Path, force: bool = False, resume: bool = False, flag: str = "--out"):
    """Create ``path`` (and missing parents), lock it, and yield it. If the body fails while
    the folders it created still hold nothing, they are removed again: a failed command leaves
    no empty ``--out`` behind. Rechecks emptiness under the lock (another process may have
    written it since ``check_output_folder``)."""
    path = Path(path)
    created = []
    missing = Path(os.path.abspath(path))
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    path.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(path)
    try:
        lock.acquire()
    except BaseException:
        _remove_empty(created)
        raise
    try:
        if not force and not resume and not is_empty_folder(path):
            raise ValueError(f"{flag} {path} is not empty; choose a new folder or pass --force "
                             "(nothing was written)")
        yield path
    except BaseException:
        lock.release()
        _remove_empty(created)
        raise
    else:
        lock.release()


def _remove_empty(created: list[Path]) -> None:
    for folder in created:            # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()            # only succeeds if nothing was written


# --------------------------------------------------------------------------- helper processes

def helper_pool(workers: int):
    """A spawn-started ``ProcessPoolExecutor`` whose processes ignore Ctrl-C (the main process
    alone reports it, in one line, then ``stop_pool`` ends them) and end with their parent if it
    is killed (Linux), so no orphan keeps computing."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_helper_started)


def _helper_started() -> None:
    import ctypes
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:                                        # PR_SET_PDEATHSIG: SIGTERM when the parent dies
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def stop_pool(pool) -> None:
    """Cancel what ``pool`` has not started and end its processes now (after an error or Ctrl-C
    its results are not wanted, and an orphan would keep computing)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def rescue_text(text: str, name: str) -> Path:
    """Save ``text`` under the temporary folder when the intended place cannot be written, so
    nothing computed is lost; returns the path to name in the error."""
    fd, path = tempfile.mkstemp(prefix="surf-dist-rescued-", suffix=f"-{name}")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(path)


# --------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs):
    """Open a temporary file next to ``path``; on success it is flushed, fsynced and renamed
    over ``path`` (readers see the old file or the new one, never half of it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)
