"""Starts TensorBoard over several Trainer runs (what `tfxsp tensorboard` execs):

    python -m pipeline.tensorboard_main --runs-dir DIR [--run NAME=PATH ...] [TensorBoard flags]

Two things it does that a plain `tensorboard --logdir_spec` does not:

* The runs are symbolic links in one folder (DIR/NAME -> PATH), passed as --logdir. With
  --logdir_spec TensorBoard gives its plugins no logdir, and the embedding projector (which looks
  for projector_config.pbtxt under <logdir>/<run>) shows nothing. Remote runs (gs://...), which
  cannot be linked, fall back to --logdir_spec.
* TensorBoard 2.16 imports `pkg_resources`, which setuptools >= 81 no longer ships (the locked
  environment has setuptools 84). When it is missing, a stand-in with the two functions
  TensorBoard uses (iter_entry_points, parse_version) is installed first.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import types


def install_pkg_resources_shim() -> None:
    try:
        import pkg_resources  # noqa: F401
        return
    except ImportError:
        pass
    from packaging import version

    class _EntryPoint:
        def __init__(self, entry_point):
            self._entry_point = entry_point
            self.name = entry_point.name

        def resolve(self):
            return self._entry_point.load()

        load = resolve

    def iter_entry_points(group, name=None):
        found = importlib.metadata.entry_points().select(group=group)
        return [_EntryPoint(ep) for ep in found if name is None or ep.name == name]

    shim = types.ModuleType("pkg_resources")
    shim.iter_entry_points = iter_entry_points
    shim.parse_version = version.parse
    sys.modules["pkg_resources"] = shim


def link_runs(runs_dir: str, runs: dict[str, str]) -> None:
    """Makes runs_dir hold exactly one symbolic link per run, NAME -> PATH."""
    os.makedirs(runs_dir, exist_ok=True)
    for entry in os.listdir(runs_dir):
        path = os.path.join(runs_dir, entry)
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
    for name, target in runs.items():
        os.symlink(os.path.abspath(target), os.path.join(runs_dir, name))


def tensorboard_args(runs_dir: str, runs: dict[str, str]) -> list[str]:
    """The --logdir (or, for remote runs, --logdir_spec) flags for `runs`."""
    if any("://" in target for target in runs.values()) or "://" in runs_dir:
        return ["--logdir_spec", ",".join(f"{name}:{target}" for name, target in runs.items())]
    link_runs(runs_dir, runs)
    return ["--logdir", runs_dir]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tensorboard_main")
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=PATH")
    args, tensorboard_flags = parser.parse_known_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    install_pkg_resources_shim()
    from tensorboard import main as tensorboard
    sys.argv = ["tensorboard", *tensorboard_args(args.runs_dir, runs), *tensorboard_flags]
    tensorboard.run_main()


if __name__ == "__main__":
    main()
