"""TFX's cache sees every file the Trainer runs: an edit to the training launcher (pipeline/training/), which TFX
itself does not hash, re-runs the Trainer; an unchanged re-run reuses it.

The runs are real partial runs of the pipeline (tools/trainer_driver.py, LocalDagRunner up to the Trainer) of a
copy of the project, so that the test can edit a file without touching the checkout it runs from.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from ml_metadata import metadata_store

from pipeline.config import load_config
from pipeline.metadata.executions import node_results
from pipeline.metadata.runs import pipeline_runs
from tests.support.paths import PENGUINS_DIR, REPO_ROOT

pytestmark = pytest.mark.timeout(1200)
SETTINGS = ["train_steps=40", "epochs=2", "eval_steps=2", "histogram_freq=0", "tensorboard_update_freq=0"]


def _copy_project(target) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("pipeline", "components", "serving", "tools"):
        shutil.copytree(REPO_ROOT / folder, target / folder, ignore=ignore)


def _run_to_trainer(project, tfx_root) -> dict[str, str]:
    """One partial run of the copy's pipeline up to the Trainer; the state of each of its nodes."""
    sets = [arg for setting in [*SETTINGS, f"data_root={PENGUINS_DIR}"] for arg in ("--set", setting)]
    # `python -m` from the copy's folder imports the copy's packages, ahead of the installed checkout.
    result = subprocess.run([sys.executable, "-m", "tools.trainer_driver", "pipeline", "--tfx-root", str(tfx_root),
                             "--to-node", "Trainer", *sets], cwd=project, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(project)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    config = load_config({"tfx_root": str(tfx_root)}, environ={})
    store = metadata_store.MetadataStore(config.metadata_connection_config())
    run = pipeline_runs(store, config.pipeline_name)[-1]
    return {node.node_id: node.state for node in node_results(store, [run])[run.id]}


def test_an_edit_to_the_training_launcher_reruns_the_trainer(tmp_path):
    project, tfx_root = tmp_path / "project", tmp_path / "runs"
    _copy_project(project)

    first = _run_to_trainer(project, tfx_root)
    assert first["Trainer"] == "complete" and first["Transform"] == "complete", first

    unchanged = _run_to_trainer(project, tfx_root)
    assert unchanged["Trainer"] == "cached" and unchanged["Transform"] == "cached", unchanged

    launcher = project / "pipeline" / "training" / "launcher.py"
    launcher.write_text(launcher.read_text() + "\n# An edit that TFX's own module-file hash does not see.\n")
    edited = _run_to_trainer(project, tfx_root)
    assert edited["Transform"] == "cached", edited  # its code did not change
    assert edited["Trainer"] == "complete", edited  # the launcher it runs did
