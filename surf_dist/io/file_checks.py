"""Files a user gives and files a command writes, nothing else (``files`` re-exports them):

  text = read_text_file(path, "config file")       # a regular readable file, UTF-8: else one
                                                   # ValueError saying what it is instead
  text = results_json(summary, "summary.json")     # strict JSON; a NaN: a divergence, named
  with all_or_nothing(out): ...                    # a failed write leaves none of its files
  atomic_write_text(path, text)                    # readers see the old file or the new one
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path


# --------------------------------------------------------------------------- files a user gives

def check_input_file(path, what: str) -> Path:
    """``path`` is a regular file that can be read: else ValueError saying what it is instead
    (nothing, a link to nothing, a loop of links, a folder, a FIFO or device) and the fix. The
    one check of issue 25 for every file a user names (--config, a topology, an edge list)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{what} {path} is a link that leads back to itself (a loop of links); fix or "
                             "remove the link") from None
        if path.is_symlink():
            raise ValueError(f"{what} {path} is a link to {os.readlink(path)}, which does not exist; fix or "
                             "remove the link") from None
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ValueError(f"{what} {path} does not exist") from None
        raise ValueError(f"{what} {path}: {err.strerror or err}") from None
    import stat
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{what} {path} is a folder, not a file; name the file in it")
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else "a device" if
                stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a socket" if
                stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise ValueError(f"{what} {path} is {kind}, not a file it can read twice; save it to a file and name that")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{what} {path} cannot be read (permission denied); choose a file you may read")
    return path


def read_text_file(path, what: str, hint: str = "") -> str:
    """The text of a user's file (``check_input_file``), UTF-8 (a byte-order mark is dropped):
    UTF-16 and binary files are ValueErrors that say so."""
    path = check_input_file(path, what)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            raw.decode("utf-16")
            raise ValueError(f"{what} {path} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
        except UnicodeDecodeError:
            pass
    raise ValueError(f"{what} {path} is not text" + (f" ({hint})" if hint else ""))


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
    os.fchmod(fd, 0o666 & ~current_umask())    # as open() would make it (mkstemp: 0600), like the plots
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _first_non_finite(data, where: str = ""):
    """(path, index, value, the sibling ``rounds`` list or None) of the first NaN or infinity
    in nested dicts and lists of numbers, or None."""
    import math
    import numbers
    number = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)   # noqa: E731
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, (list, tuple)) and value and all(number(v) for v in value):
                bad = next((i for i, v in enumerate(value) if not math.isfinite(float(v))), None)
                if bad is not None:
                    rounds = data.get("rounds") if key != "rounds" else None
                    return f"{where}{key}", bad, value[bad], rounds if isinstance(rounds, list) else None
                continue
            found = _first_non_finite(value, f"{where}{key}.")
            if found:
                return found
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            found = _first_non_finite(value, f"{where}[{i}].".replace(".[", "["))
            if found:
                return found
    elif number(data) and not math.isfinite(float(data)):
        return where.rstrip("."), None, data, None
    return None


def results_json(data, name: str, **options) -> str:
    """``data`` as strict JSON text (no bare NaN or Infinity, which JSON does not have): the
    one writer of every results file (summary.json, NAME.json, bench.json). A NaN or an
    infinity is a run that diverged: FloatingPointError naming where, and along a curve the
    round and the last finite round, before anything is written."""
    found = _first_non_finite(data)
    if found:
        where, index, value, rounds = found
        if rounds is not None and index is not None and index < len(rounds):
            last = f"last finite round {rounds[index - 1]}" if index else "no finite round"
            at = f" at round {rounds[index]} ({last})"
        else:
            at = f" (entry {index})" if index is not None else ""
        raise FloatingPointError(f"the run diverged: {where} is {value}{at}, so {name} was not written (a "
                                 "result with NaN is no result); lower the step sizes (--lr) or check "
                                 "the model")
    return json.dumps(data, allow_nan=False, **options)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def all_or_nothing(folder: Path):
    """The files a block writes into ``folder`` stay only if the whole block succeeds: on any
    error (a full disk, a name too long, SIGTERM) those it created are removed again, so that a
    failed write leaves no partial results that make a rerun refuse the folder as not empty."""
    folder = Path(folder)
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    try:
        yield folder
    except BaseException:
        for name in (set(os.listdir(folder)) if folder.is_dir() else set()) - before:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)
