"""Runs a command that dies with the process that started it.

    python -I -S serving/die_with_parent.py PARENT_PID SIGNAL -- COMMAND [ARG ...]

sets Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGNAL)``) in this process, checks that its parent is
still ``PARENT_PID`` (else the parent died before the signal was set, and COMMAND is not run: exit 1), then
replaces itself with COMMAND (``execvp``: same pid, same process group). The setting survives ``execve`` (except
into a set-user-ID or file-capability binary), so COMMAND gets SIGNAL when the parent goes, however it goes:
SIGKILL included, which no handler in the parent can see.

The kernel sends the signal when the *thread* that forked the child exits, not the process (prctl(2)):
``serving.launcher`` forks from the main thread, or from a thread that lives as long as the process.

Standard library only, and run with ``-I -S`` by path, so it starts in milliseconds whatever the environment.
Elsewhere than Linux it only runs COMMAND.
"""
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write(__doc__)
        return 2
    parent, signum, command = int(argv[0]), int(signal.Signals[argv[1]]), argv[3:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            sys.stderr.write(f"die_with_parent: prctl failed: {os.strerror(ctypes.get_errno())}\n")
            return 1
        if os.getppid() != parent:  # the parent exited before prctl took effect
            return 1
    try:
        os.execvp(command[0], command)
    except OSError as e:
        sys.stderr.write(f"die_with_parent: cannot run {command[0]}: {e.strerror}\n")
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
