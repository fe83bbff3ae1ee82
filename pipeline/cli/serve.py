"""`tfxsp serve`: the embedded TF Serving-compatible model server over the configured model base path, in the
foreground (serving/cli.py does the work; it exits as tensorflow_model_server does)."""
from __future__ import annotations

import os
import sys

import click

from pipeline.cli.options import load, set_option


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@set_option
@click.pass_context
def serve(ctx: click.Context, set_items: tuple[str, ...]) -> None:
    """Serve the model base path in the foreground (Ctrl-C stops).

    Runs the embedded TF Serving-compatible server over <serving_model_base>/<model_name> on the
    configured ports, from its model config file <serving_model_base>/<model_name>.models.config
    (written with the defaults when missing; tfxsp models label/pin/rollback change it). Any
    tensorflow_model_server flag may follow and overrides those defaults,
    e.g. tfxsp serve --enable_batching --file_system_poll_wait_seconds=5.
    """
    config = load(set_items)
    from serving import cli as serving_cli
    defaults = [f"--model_name={config.model_name}", f"--model_base_path={config.serving_model_dir}",
                f"--port={config.grpc_port}", f"--rest_api_port={config.rest_port}",
                f"--bind_address={config.serving_host}"]
    if not any(arg.startswith(("--model_config_file", "--help", "--version")) for arg in ctx.args):
        os.makedirs(config.serving_model_dir, exist_ok=True)
        # The model config file that tfxsp models label/pin/rollback write (the default one when there is none
        # yet), re-read every model_config_poll_s; the server ignores --model_name/--model_base_path then.
        from pipeline.lifecycle import model_config
        model_config.ensure(config.model_config_file, config.model_name, config.serving_model_dir)
        defaults += [f"--model_config_file={config.model_config_file}",
                     f"--model_config_file_poll_wait_seconds={config.model_config_poll_s}",
                     # At start-up the labelled versions are not loaded yet; TF Serving checks labels before.
                     "--allow_version_labels_for_unavailable_models"]
    else:
        defaults = defaults[2:]  # a model config file names the models itself
    sys.exit(serving_cli.main(defaults + list(ctx.args)))
