"""Warnings `tfxsp run` must put on the terminal although they come from inside a component, whose output goes to the
run's log file: read from what the component records in its outputs."""
from __future__ import annotations

import os

from pipeline.training import network

TRAINER = "Trainer"
MODEL_RUN = "model_run"


def model_run_dir(pipeline_root: str, execution_id: int) -> str:
    """Where the Trainer execution `execution_id` writes its ModelRun output, before ML Metadata records it: TFX's
    layout, <pipeline_root>/<node id>/<output key>/<execution id> (tfx/orchestration/portable/outputs_utils.py)."""
    return os.path.join(pipeline_root, TRAINER, MODEL_RUN, str(execution_id))


def training_network(model_run: str | None, running: bool) -> str | None:
    """A warning when the Trainer's local cluster in `model_run` was not network-isolated, else None."""
    record = network.read_marker(model_run) if model_run else None
    if not record or record.get("isolated", True):
        return None
    ports = ", ".join(str(p) for p in record.get("ports", []))
    listen, trains = ("listen", "trains") if running else ("listened", "trained")
    return (f"Warning: the local {record.get('strategy', '')} training cluster is not network-isolated: "
            f"{record.get('reason') or 'no loopback-only namespace'}. Its TensorFlow servers {listen} on every "
            f"interface of this host (ports {ports}) while it {trains}, and run the graphs anyone who reaches them "
            "sends (see docs/limits-and-security.md).")
