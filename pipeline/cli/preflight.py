"""Checks that run before the pipeline, so that a setting it cannot use fails in a second with a clear message
instead of after training, and nothing is pushed: the output folders must be writable, and the serving ports free
for the model server the serving validation needs, and a MySQL metadata store reachable and usable. (The data's
checks are pipeline/dataset's.)"""
from __future__ import annotations

import os
import tempfile

from pipeline.config import PipelineConfig


class PreflightError(ValueError):
    """A setting the pipeline cannot use; the message says what and where."""


def check_writable(config: PipelineConfig) -> None:
    _check_writable(config.serving_model_dir, "serving model base path (config 'serving_model_base')")
    _check_writable(config.pipeline_root, "pipeline root (config 'tfx_root')")


def _check_writable(directory: str, what: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".tfxsp-write-check-"):
            pass
    except OSError as e:
        raise PreflightError(f"The {what} {directory} is not writable: {e.strerror}. Choose a folder you can "
                             "write to.") from None


def check_serving_ports(config: PipelineConfig) -> None:
    """The model server the serving validation needs must be able to listen. Found only after training, a taken
    port would fail the probe and roll back a good model. A TF Serving model server already answering on the REST
    port is used; any other program there (recognised by its answer, serving.launcher.probe_rest) is an error."""
    if not config.serving_validation:
        return
    from serving import launcher
    answer = launcher.probe_rest(config.serving_host, config.rest_port)
    if answer.kind == "model_server":
        return  # a model server already runs there; the run uses it
    if answer.kind == "other":
        raise PreflightError(
            f"Serving port {config.rest_port} on {config.serving_host} is taken by a program that is not a TF "
            f"Serving model server: {answer.detail}. The serving validation would probe it. Stop that program, pick "
            "free ports (--set grpc_port=... --set rest_port=...), or skip the probe "
            "(--set serving_validation=false).")
    busy = [port for port in (config.grpc_port, config.rest_port)
            if not launcher.port_is_free(config.serving_host, port)]
    if busy:
        raise PreflightError(
            f"Serving ports in use: {', '.join(map(str, busy))} on {config.serving_host} is taken by another "
            f"program, and no model server answers at {config.rest_url}, so none can be started for the serving "
            "validation. Stop that program, pick free ports (--set grpc_port=... --set rest_port=...), or skip the "
            "probe (--set serving_validation=false).")


def check_metadata_store(config: PipelineConfig) -> None:
    """A mysql:// store that cannot be reached or opened (wrong password, no database, another schema version)
    would fail the run's first component; found here, it fails before anything runs."""
    from pipeline.metadata import store
    try:
        store.check_writable_store(config.metadata_connection_config())
    except store.MetadataError as e:
        raise PreflightError(str(e)) from None
