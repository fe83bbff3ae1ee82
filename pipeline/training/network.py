"""Keeping a local training cluster off the network.

TensorFlow's gRPC servers (the workers and parameter servers of a local cluster, and the collective-ops server of
every multi-worker task, the chief's included) listen on every interface, whatever host the cluster spec names, and
run whatever graphs they are sent: TensorFlow 2.16 binds "0.0.0.0:<port>" (gRPC makes it the dual-stack [::]) and
lets a caller choose only the port (ServerDef.port); see docs/limits-and-security.md. So a local cluster runs in a
network namespace of its own whose only interface is loopback (`unshare --net`, where Linux allows it); where it
cannot, the cluster uses the host's loopback addresses, and the launcher says so at run time: in the log, and in a
record in the Trainer's ModelRun output (`MARKER`) that `tfxsp run` shows on the terminal.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys

LOOPBACK = "127.0.0.1"
# Set in the processes of an isolated local cluster (see isolated_argv).
ISOLATED_ENV = "TFXSP_ISOLATED_NETWORK"
# Where a local cluster records, under the Trainer's model_run_dir, whether it ran isolated (write_marker).
MARKER = os.path.join("training", "network.json")
_UNSHARE_WORKS: dict[tuple, bool] = {}
_UNSHARE_ERRORS: dict[tuple, str] = {}


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


def why_not_isolated() -> str | None:
    """Why can_isolate() is false, for a person (None when it is true)."""
    if shutil.which("unshare") is None:
        return "there is no `unshare` command on PATH"
    if can_isolate():
        return None
    prefix = (shutil.which("unshare"), "--net", "--map-root-user")
    error = _UNSHARE_ERRORS.get(prefix) or "it failed"
    return f"`unshare --net --map-root-user` is not allowed here ({error})"


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
            result = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
            _UNSHARE_WORKS[prefix] = result.returncode == 0
            said = result.stderr.decode("utf-8", "replace").strip().splitlines()
            _UNSHARE_ERRORS[prefix] = said[-1] if said else f"exit status {result.returncode}"
        except (OSError, subprocess.TimeoutExpired) as e:
            _UNSHARE_WORKS[prefix] = False
            _UNSHARE_ERRORS[prefix] = str(e)
    return list(prefix) if _UNSHARE_WORKS[prefix] else []


def bring_up_loopback() -> None:
    """Brings up `lo` (down in a new network namespace) with the SIOCSIFFLAGS ioctl."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, request)[:18])[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


def write_marker(model_run_dir: str, record: dict) -> None:
    """Writes `record` (isolated, reason, the cluster's addresses) to <model_run_dir>/MARKER."""
    import tensorflow as tf  # gfile: model_run_dir may be remote storage
    path = os.path.join(model_run_dir, MARKER)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(record, f, indent=1)


def read_marker(model_run_dir: str) -> dict | None:
    """What a local cluster recorded under `model_run_dir` (None: no local cluster ran, or not yet). Local paths
    only: the reader (tfxsp run) has no business importing TensorFlow for it."""
    try:
        with open(os.path.join(model_run_dir, MARKER)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def listening_sockets(ports: list[int]) -> list[str]:
    """The TCP sockets listening on `ports` in this network namespace, as "address:port" (Linux /proc/net)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, port = fields[1].partition(":")
            if fields[3] != "0A" or int(port, 16) not in ports:  # 0A: LISTEN
                continue
            packed = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(packed[i:i + 4][::-1] for i in range(0, len(packed), 4))
            host = socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw)
            found.append(f"{host}:{int(port, 16)}" if width == 8 else f"[{host}]:{int(port, 16)}")
    return sorted(set(found))
