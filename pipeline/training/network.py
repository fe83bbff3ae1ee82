"""Keeping a local training cluster off the network.

TensorFlow's gRPC servers (the workers and parameter servers of a local cluster) listen on every interface,
whatever host the cluster spec names, and run whatever graphs they are sent. So a local cluster runs in a network
namespace of its own whose only interface is loopback (`unshare --net`, where Linux allows it); where it cannot, the
cluster uses the host's loopback addresses and the launcher says so at run time.
"""
from __future__ import annotations

import fcntl
import shutil
import socket
import struct
import subprocess
import sys

LOOPBACK = "127.0.0.1"
# Set in the processes of an isolated local cluster (see isolated_argv).
ISOLATED_ENV = "TFXSP_ISOLATED_NETWORK"
_UNSHARE_WORKS: dict[tuple, bool] = {}


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free on the loopback interface right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def can_isolate() -> bool:
    """Whether this machine lets us start a process in a new loopback-only network namespace."""
    return bool(_unshare_prefix())


def isolated_argv(argv: list[str]) -> list[str]:
    """`argv` run in a new network namespace whose only interface is loopback, so that the TensorFlow servers it
    starts are reachable from nowhere else. Needs Linux `unshare` and user namespaces (or root); returns `argv`
    unchanged where that is not possible (check can_isolate() first to say so)."""
    prefix = _unshare_prefix()
    if not prefix:
        return argv
    return [*prefix, sys.executable, "-m", "pipeline.training.worker", "loopback", "--", *argv]


def _unshare_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if not unshare:
        return []
    prefix = (unshare, "--net", "--map-root-user")
    if prefix not in _UNSHARE_WORKS:
        try:
            _UNSHARE_WORKS[prefix] = subprocess.run([*prefix, "true"], capture_output=True,
                                                    timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _UNSHARE_WORKS[prefix] = False
    return list(prefix) if _UNSHARE_WORKS[prefix] else []


def bring_up_loopback() -> None:
    """Brings up `lo` (down in a new network namespace) with the SIOCSIFFLAGS ioctl."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, request)[:18])[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))
