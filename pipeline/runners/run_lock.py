"""One `tfxsp run` at a time per pipeline root: an exclusive flock(2) on `<pipeline_root>/tfxsp-run.lock`.

The holder writes who it is into the file (pid, host, start time, command line) and empties it when it releases the
lock. The kernel drops a flock when the last descriptor of the file closes, so a run that dies, SIGKILL included,
leaves no lock behind, only its record: the next run takes the lock over and finds that record
(`RunLock.previous`), which is how it knows that the run before it ended without finishing.

Readers (`tfxsp runs`) ask `lock_state(pipeline_root)` whether a run holds the lock now. They take a shared lock
for an instant to find out; a run starting in that instant retries for `wait_s` before it calls the lock held.

A lock is only as wide as the file system's flock: local disks, not NFS between machines.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import sys
import time

LOCK_FILE = "tfxsp-run.lock"


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who held (or holds) a run lock, as the holder recorded it."""
    pid: int
    started_ms: int  # milliseconds since the epoch
    host: str
    command: str

    @property
    def started(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_ms / 1000))

    def describe(self) -> str:
        return f"pid {self.pid}{'' if self.host == socket.gethostname() else ' on ' + self.host}, " \
               f"started {self.started}"

    def alive(self) -> bool | None:
        """Whether the process still runs (None: it ran on another host, this one cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False


class RunLockHeld(Exception):
    """Another process holds the pipeline root's run lock."""

    def __init__(self, path: str, holder: Holder | None):
        self.path, self.holder = path, holder
        if holder is None:
            who = "another process (it has not recorded who it is yet)"
        elif holder.alive() is False:
            who = (f"a process that {holder.describe()} started: pid {holder.pid} itself is gone, but a process it "
                   "started still holds the lock file open")
        else:
            who = f"another tfxsp run ({holder.describe()}: {holder.command})"
        super().__init__(f"{path} is locked by {who}.")


@dataclasses.dataclass(frozen=True)
class LockState:
    """What `lock_state` found: whether any `tfxsp run` ever locked this pipeline root (`exists`), whether one holds
    the lock now (`held`), and its record (None when it has not written it yet)."""
    exists: bool
    held: bool
    holder: Holder | None = None


class RunLock:
    """`with RunLock(pipeline_root) as lock:` the block runs holding the pipeline root's run lock, or
    RunLockHeld is raised before it starts."""

    def __init__(self, pipeline_root: str, wait_s: float = 2.0):
        self.path = os.path.join(pipeline_root, LOCK_FILE)
        self.wait_s = wait_s
        self.previous: Holder | None = None  # the record of a holder that ended without releasing the lock
        self.holder: Holder | None = None  # this process's record, once it holds the lock
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        give_up = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    holder = _read(fd)
                    os.close(fd)
                    raise RunLockHeld(self.path, holder) from None
                time.sleep(0.1)
        self._fd = fd
        self.previous = _read(fd)
        self.holder = Holder(pid=os.getpid(), started_ms=int(time.time() * 1000), host=socket.gethostname(),
                             command=" ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dataclasses.asdict(self.holder)).encode() + b"\n", 0)
        os.fsync(fd)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty file: the last holder finished
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def lock_state(pipeline_root: str) -> LockState:
    """Whether a `tfxsp run` holds the run lock of `pipeline_root` now, and who."""
    path = os.path.join(pipeline_root, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockState(exists=False, held=False)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return LockState(exists=True, held=True, holder=_read(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockState(exists=True, held=False)
    finally:
        os.close(fd)


def _read(fd: int) -> Holder | None:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(**record) if isinstance(record, dict) else None
    except (OSError, ValueError, TypeError):
        return None
