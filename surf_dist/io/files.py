"""Output folders checked before any work, a lock on the folder being written, atomic writes.

Nothing here knows about SURF: a command calls

  check_output_folder(out, force)                      # before the work: writable, empty, unlocked
  with claimed_output(out, force) as out: ...          # created, locked; removed again if the
                                                       # command fails before writing anything
  atomic_write_text(out / "summary.json", text)        # readers see the old file or the new one

(one-line errors and exit codes: ``cli/errors.py``; helper process pools: ``runtime/pools.py``)
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from pathlib import Path

from .file_checks import (  # noqa: F401 - the files a user gives and a command writes, used through files too
    all_or_nothing,
    atomic_open,
    atomic_write_text,
    check_input_file,
    current_umask,
    read_text_file,
    rescue_text,
    results_json,
)

LOCK_NAME = ".surf-dist.lock"
ROOM_FOR_NAMES = 64            # bytes kept below PATH_MAX for what a command writes in its folder
PROBE_PREFIX = ".surf-dist-probe-"


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


def _is_link_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def check_path_components(path: Path, flag: str = "--out") -> None:
    """Every component of ``path`` can be a folder: no name too long, no regular file on the
    way, no link to nothing. Raises ValueError naming the component and the fix."""
    absolute = Path(os.path.abspath(path))
    size = len(os.fsencode(str(absolute)))
    if size >= 4096:
        raise ValueError(f"{flag} {path}: the path is {size} bytes long, the limit is 4095; choose a shorter path")
    if size + 1 + ROOM_FOR_NAMES >= 4096:       # the work would finish and its results not fit (issue 25)
        raise ValueError(f"{flag} {path}: the path is {size} bytes long, which leaves no room for the names of the "
                         f"files written in it (the limit is 4095 in all); choose a path below {4095 - 1 - ROOM_FOR_NAMES} bytes")
    current = Path(absolute.anchor)
    for part in absolute.parts[1:]:
        limit = name_max(nearest_existing(current))
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"{flag} {path}: the name {part[:24]}... is {len(os.fsencode(part))} bytes "
                             f"long, the file system takes at most {limit}; choose a shorter name")
        current = current / part
        if current.is_symlink() and _is_link_loop(current):
            raise ValueError(f"{flag} {path}: {current} is a link that leads back to itself (a loop of links); "
                             "remove the link or point it at a folder")
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
