"""The processes that pipeline/distributed.py starts:

  python -m pipeline.worker train --fn-args FILE   train_and_export as the task TF_CONFIG names
  python -m pipeline.worker run --fn-args FILE     run_training (in a fresh TensorFlow runtime)
  python -m pipeline.worker serve                  tf.distribute.Server for TF_CONFIG's task
  python -m pipeline.worker loopback -- CMD ...    bring up `lo` (new network namespace), exec CMD

Each dies with the process that started it (PR_SET_PDEATHSIG), so no worker outlives its Trainer.
"""
import argparse
import ctypes
import json
import os
import signal
import sys
import traceback

import pipeline  # noqa: F401  - sets TF_USE_LEGACY_KERAS before TensorFlow is imported


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the process that started it exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _touch(path):
    if path:
        with open(path, "w"):
            pass


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent exited before the line above took effect
        return 1
    from pipeline import distributed
    if argv[:1] == ["loopback"]:
        command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        distributed.bring_up_loopback()
        os.environ[distributed.ISOLATED_ENV] = "1"
        os.execvp(command[0], command)

    parser = argparse.ArgumentParser(prog="python -m pipeline.worker")
    parser.add_argument("command", choices=["train", "run", "serve"])
    parser.add_argument("--fn-args", help="JSON file of the Trainer's FnArgs")
    parser.add_argument("--ready-file", help="created once this process is up")
    args = parser.parse_args(argv)
    if args.command == "serve":
        distributed.serve(args.ready_file)
        return 0

    # train / run: SIGTERM unwinds (finally blocks stop this process's own children).
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    from absl import logging
    logging.set_verbosity(logging.INFO)
    from pipeline.modules import trainer
    with open(args.fn_args) as f:
        fn_args = distributed.fn_args_from_dict(json.load(f))
    _touch(args.ready_file)
    if args.command == "train":
        trainer.train_and_export(fn_args)
    else:
        distributed.run_training(fn_args, trainer.train_and_export)
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
