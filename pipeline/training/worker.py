"""The processes that pipeline/training/launcher.py starts:

  python -m pipeline.training.worker train --fn-args FILE --train-fn M:F   M:F as the task TF_CONFIG names
  python -m pipeline.training.worker run --fn-args FILE --train-fn M:F     run_training (a fresh TF runtime)
  python -m pipeline.training.worker server                 tf.distribute.Server for TF_CONFIG's task
  python -m pipeline.training.worker loopback -- CMD ...    bring up `lo` (new network namespace), exec CMD

Each dies with the process that started it (PR_SET_PDEATHSIG), so no worker outlives its Trainer.
"""
import argparse
import ctypes
import os
import signal
import sys
import traceback

import pipeline  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow is imported
from pipeline.training import fn_args as fn_args_lib
from pipeline.training import launcher, network
from pipeline.training.cluster import PARENT_ENV


def die_with_parent() -> bool:
    """Linux: SIGKILL this process when the process that started it exits. False when that process has exited
    already: it died before the signal was set (this process's imports take a while), and this one must not go on.
    The parent is the pid cluster.PARENT_ENV names, not whatever getppid() says by now (a reaper, after such a
    death)."""
    expected = int(os.environ.get(PARENT_ENV) or os.getppid())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    return os.getppid() == expected


def _touch(path):
    if path:
        with open(path, "w"):
            pass


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not die_with_parent():
        return 1
    if argv[:1] == ["loopback"]:
        command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        network.bring_up_loopback()
        os.environ[network.ISOLATED_ENV] = "1"
        os.execvp(command[0], command)

    parser = argparse.ArgumentParser(prog="python -m pipeline.training.worker")
    parser.add_argument("command", choices=["train", "run", "server"])
    parser.add_argument("--fn-args", help="the Trainer's FnArgs (fn_args.save)")
    parser.add_argument("--train-fn", help="the training function, package.module:function")
    parser.add_argument("--ready-file", help="created once this process is up")
    args = parser.parse_args(argv)
    if args.command == "server":
        launcher.run_server_task(args.ready_file)
        return 0

    # train / run: SIGTERM unwinds (finally blocks stop this process's own children).
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    from absl import logging
    logging.set_verbosity(logging.INFO)
    fn_args = fn_args_lib.load(args.fn_args)
    _touch(args.ready_file)
    if args.command == "train":
        launcher.resolve(args.train_fn)(fn_args)
    else:
        launcher.run_training(fn_args, args.train_fn)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TensorFlow 2.16 can hang or print spurious errors in it after
    # distributed training.
    os._exit(code)
