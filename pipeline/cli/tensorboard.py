"""`tfxsp tensorboard`: TensorBoard over the Trainer logs of every run recorded in ML Metadata.

The command finds the ModelRun artifacts and execs this module's main, which starts TensorBoard:

    python -m pipeline.cli.tensorboard --runs-dir DIR [--run NAME=PATH ...] [TensorBoard flags]

The runs are symbolic links in one folder (DIR/NAME -> PATH), passed as --logdir: with --logdir_spec TensorBoard
gives its plugins no logdir, and the embedding projector (which looks for projector_config.pbtxt under
<logdir>/<run>) shows nothing. Remote runs (gs://...), which cannot be linked, fall back to --logdir_spec.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings

import click

from pipeline.cli import exit_codes
from pipeline.cli.options import fail, guarded, load, set_option


@click.command()
@set_option
@click.option("--port", default=6006, show_default=True, help="TensorBoard's port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
def tensorboard(set_items: tuple[str, ...], port: int, host: str) -> None:
    """Open TensorBoard over the Trainer logs of every run recorded in ML Metadata."""
    from pipeline.cli import console
    from pipeline.metadata import store
    console.quiet_logs(verbose=False)
    config = load(set_items)
    metadata = guarded(lambda: store.open_store(config.metadata_connection_config()))
    model_runs = metadata.get_artifacts_by_type("ModelRun")
    if not model_runs:
        fail("No Trainer logs:", "ML Metadata records no ModelRun artifact yet; run the pipeline first (make "
             "run-local).", exit_codes.BAD_INPUT)
    runs = [f"--run=trainer_{a.id}={a.uri}" for a in model_runs]
    console.console.print(f"TensorBoard over {len(model_runs)} Trainer run(s) at http://{host}:{port}/")
    os.execv(sys.executable, [sys.executable, "-m", "pipeline.cli.tensorboard", "--runs-dir",
                              os.path.join(config.pipeline_root, "tensorboard_runs"), *runs,
                              "--host", host, "--port", str(port)])


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
    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.tensorboard")
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=PATH")
    args, tensorboard_flags = parser.parse_known_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    # TensorBoard 2.16 imports pkg_resources (setuptools < 81, pinned for it), which warns that it is deprecated.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from tensorboard import main as tensorboard_main
    sys.argv = ["tensorboard", *tensorboard_args(args.runs_dir, runs), *tensorboard_flags]
    tensorboard_main.run_main()


if __name__ == "__main__":
    main()
