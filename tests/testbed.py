"""Two "hosts" on one machine: network namespaces ``surfh1`` (10.77.0.1) and ``surfh2``
(10.77.0.2) joined by one veth pair, with no route anywhere else, so that whatever runs inside
them can reach only the two addresses and its own loopback.

``create()`` skips the calling test (with the reason) where ``ip`` is missing or namespaces can't
be made (not root, no CAP_SYS_ADMIN). Creation and removal are idempotent. ``remove()`` ends
the processes of each namespace (never ``ray stop``: the namespaces share the process table, so
it would kill every Ray process on the machine), then deletes the namespaces.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

HOSTS = {"surfh1": ("surfv1", "10.77.0.1"), "surfh2": ("surfv2", "10.77.0.2")}


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
    probe = ip("netns", "add", "surfh1", check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create network namespaces: {probe.stderr.strip()}")
    try:
        ip("netns", "add", "surfh2")
        (if1, _), (if2, _) = HOSTS.values()
        ip("link", "add", if1, "netns", "surfh1", "type", "veth", "peer", "name", if2, "netns", "surfh2")
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
