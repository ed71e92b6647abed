"""Two "hosts" on one machine: network namespaces ``surfh1`` (10.77.0.1) and ``surfh2``
(10.77.0.2; names suffixed by ``SURF_DIST_TESTBED_TAG`` where set) joined by one veth pair, with no route anywhere else, so that whatever runs inside
them can reach only the two addresses and its own loopback.

``create()`` skips the calling test (with the reason) where ``ip`` is missing or namespaces can't
be made (not root, no CAP_SYS_ADMIN). ``private_host(argv)`` runs ``argv`` in a mount namespace of
its own that sees nothing of this machine's folders but the system ones and the Python
environment (a host with its own disk); ``sees(pid, path)`` says whether such a process sees a
path, and raises where it cannot tell. Creation and removal are idempotent. ``remove()`` ends
the processes of each namespace (never ``ray stop``: the namespaces share the process table, so
it would kill every Ray process on the machine), then deletes the namespaces.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TAG = os.environ.get("SURF_DIST_TESTBED_TAG", "")     # e.g. "b": surfh1b, surfh2b (two checkouts testing at once)
assert TAG.isalnum() and len(TAG) <= 8 or not TAG, f"SURF_DIST_TESTBED_TAG={TAG!r}: up to 8 letters or digits"
HOSTS = {f"surfh1{TAG}": (f"surfv1{TAG}", "10.77.0.1"), f"surfh2{TAG}": (f"surfv2{TAG}", "10.77.0.2")}


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def exists(name: str) -> bool:
    return name in ip("netns", "list").stdout.split()


def pids(name: str) -> list[int]:
    if not exists(name):
        return []
    return [int(p) for p in ip("netns", "pids", name, check=False).stdout.split() if p.isdigit()]


def kill_all(names, grace_s: float = 5.0) -> None:
    """SIGTERM every process in the namespaces ``names``, then SIGKILL what is left after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for name in names:
            for pid in pids(name):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + wait_s
        while any(pids(n) for n in names) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not any(pids(n) for n in names):
            return


def remove() -> None:
    """End every process of both namespaces, then delete them (no-op where they are gone)."""
    names = [n for n in HOSTS if exists(n)]
    kill_all(names)
    for name in names:
        ip("netns", "del", name, check=False)


def create() -> dict[str, tuple[str, str]]:
    """Fresh namespaces (any left over are removed first); {namespace: (interface, address)}."""
    if shutil.which("ip") is None:
        pytest.skip("the 'ip' command (iproute2) is missing")
    remove()
    first, second = HOSTS
    probe = ip("netns", "add", first, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create network namespaces: {probe.stderr.strip()}")
    try:
        ip("netns", "add", second)
        (if1, _), (if2, _) = HOSTS.values()
        ip("link", "add", if1, "netns", first, "type", "veth", "peer", "name", if2, "netns", second)
        for name, (iface, addr) in HOSTS.items():
            ip("-n", name, "addr", "replace", f"{addr}/24", "dev", iface)
            ip("-n", name, "link", "set", iface, "up")
            ip("-n", name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as err:
        remove()
        pytest.skip(f"cannot set up the namespaces' veth pair: {err.stderr.strip()}")
    return dict(HOSTS)


def run_in(name: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", name, *argv], check=False, **kwargs)


SYSTEM_FOLDERS = ("bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "sys", "usr",
                  "var")
ALSO_HIDDEN = ("/var/tmp", "/dev/shm")
STAGE = "/mnt"


def environment_folders() -> list[str]:
    """What a host needs of this machine to run surf-dist: the interpreter's installation, the
    virtual environment and, for an editable install, the package folder of the checkout (only
    it: the rest of the repository stays hidden)."""
    import surf_dist
    found = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, Path(surf_dist.__file__).parent)}
    return sorted(found, key=len)


def hidden_folders() -> list[str]:
    """Every top-level folder that is not the system's (/tmp, /root, /home, /work, /opt...), and
    the shared temporary folders: each gets an empty tmpfs in the private view."""
    tops = [str(p) for p in Path("/").iterdir() if p.is_dir() and not p.is_symlink() and p.name not in SYSTEM_FOLDERS]
    return sorted(tops) + [f for f in ALSO_HIDDEN if os.path.isdir(f)]


def private_host(argv: list[str], keep: list[str] | None = None) -> list[str]:
    """``argv`` in a private mount namespace where every folder of ``hidden_folders()`` is an
    empty tmpfs, except the paths of ``keep`` (default ``environment_folders()``), bound back
    read-only, and the working folder is ``/``. The kept paths are staged through a tmpfs on
    ``STAGE`` before the others are covered, then that stage is detached."""
    keep = environment_folders() if keep is None else keep
    lines = ["set -e", f"mount -t tmpfs tmpfs {STAGE}"]
    for i, path in enumerate(keep):
        lines += [f"mkdir -p {STAGE}/k{i}", f"mount --bind {shlex.quote(path)} {STAGE}/k{i}"]
    lines += [f"mount -t tmpfs tmpfs {shlex.quote(f)}" for f in hidden_folders() if f != STAGE]
    for i, path in enumerate(keep):
        lines += [f"mkdir -p {shlex.quote(path)}", f"mount --bind {STAGE}/k{i} {shlex.quote(path)}",
                  f"mount -o remount,bind,ro {shlex.quote(path)}"]
    lines += [f"umount -l {STAGE}", f"mount -t tmpfs tmpfs {STAGE}", "cd /", 'exec "$@"']
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "; ".join(lines), "sh", *argv]


def sees(pid: int, path) -> bool:
    """Whether process ``pid`` (in a private view: its mount namespace must differ from this
    process's) sees ``path``. Raises RuntimeError where it cannot tell (the process gone, the
    same view as ours, nsenter failing): a failed look is never a "no"."""
    try:
        theirs, ours = os.readlink(f"/proc/{pid}/ns/mnt"), os.readlink("/proc/self/ns/mnt")
    except OSError as err:
        raise RuntimeError(f"cannot read process {pid}'s mount namespace: {err}") from err
    if theirs == ours:
        raise RuntimeError(f"process {pid} shares this process's view of the filesystem: no private host")
    looked = subprocess.run(["nsenter", "-t", str(pid), "-m", "sh", "-c",
                             'if test -e "$1"; then echo seen; else echo unseen; fi', "sh", str(path)],
                            capture_output=True, text=True, timeout=30)
    answer = looked.stdout.strip()
    if looked.returncode != 0 or answer not in ("seen", "unseen"):
        raise RuntimeError(f"could not look for {path} in process {pid}'s view (exit {looked.returncode}): "
                           f"{looked.stderr.strip()[-300:]}")
    return answer == "seen"
