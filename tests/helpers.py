"""Test helpers: the repo's data, and running the real `tfxsp` command in a process."""
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PENGUINS_DIR = REPO_ROOT / "data" / "penguins"
TFXSP = str(Path(sys.executable).with_name("tfxsp"))


def run_tfxsp(args, cwd, timeout=900, env=None) -> subprocess.CompletedProcess:
    """Runs `tfxsp ARGS` as a user would, in `cwd`, and returns its exit code and output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([TFXSP, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


