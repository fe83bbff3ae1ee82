"""The `tfxsp` command: one click group, one module per command or command group.

    init         pipeline/cli/init.py         look at a folder of CSV files, write tfxsp.toml
    run          pipeline/cli/run.py          the pipeline here, and its summary
    serve        pipeline/cli/serve.py        the model server in the foreground
    tensorboard  pipeline/cli/tensorboard.py  TensorBoard over every Trainer run
    runs         pipeline/cli/runs.py         runs recorded in ML Metadata
    artifacts    pipeline/cli/artifacts.py    artifacts recorded in ML Metadata
    lineage      pipeline/cli/lineage.py      what produced an artifact, what it produced
    models       pipeline/cli/models.py       pushed model versions (label, promote, pin, unpin, rollback:
                 pipeline/cli/model_actions.py)
    model        pipeline/cli/model.py        one version's signatures, run, metrics and data
    predict      pipeline/cli/predict.py      batch scoring of a CSV with a pushed version (pipeline/scoring/)
    monitor      pipeline/cli/monitor.py      the served model's logged requests vs its training data
    kubeflow     pipeline/cli/kubeflow.py     compile for and submit to Kubeflow Pipelines
    ui           pipeline/cli/ui.py           the browser dashboard over the runs

Exit codes: pipeline/cli/exit_codes.py.
"""
from __future__ import annotations

import os
import sys

import click

from pipeline.cli import (
    artifacts,
    exit_codes,
    init,
    kubeflow,
    lineage,
    model,
    models,
    monitor,
    predict,
    run,
    runs,
    serve,
    tensorboard,
    ui,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """tfx-serving-pipeline: CSV to a trained, evaluated, pushed and served TFX model."""


for command in (init.init, run.run, serve.serve, tensorboard.tensorboard, runs.runs, artifacts.artifacts,
                lineage.lineage, models.models, model.model, predict.predict, kubeflow.kubeflow, monitor.monitor,
                ui.ui):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
        code = exit_codes.OK
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:  # usage errors: exit 2, as click itself exits
        e.show()
        code = e.exit_code
    except click.Abort:
        code = exit_codes.FAILED
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else exit_codes.FAILED
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TensorFlow 2.16's function objects print "Exception ignored in
    # AtomicFunction.__del__" tracebacks when they are collected during shutdown.
    os._exit(code)


if __name__ == "__main__":
    main()
