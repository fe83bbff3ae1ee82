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
    configured ports. Any tensorflow_model_server flag may follow and overrides those defaults,
    e.g. tfxsp serve --enable_batching --file_system_poll_wait_seconds=5.
    """
    config = load(set_items)
    from serving import cli as serving_cli
    defaults = [f"--model_name={config.model_name}", f"--model_base_path={config.serving_model_dir}",
                f"--port={config.grpc_port}", f"--rest_api_port={config.rest_port}",
                f"--bind_address={config.serving_host}"]
    if not any(arg.startswith(("--model_config_file", "--help", "--version")) for arg in ctx.args):
        os.makedirs(config.serving_model_dir, exist_ok=True)
    else:
        defaults = defaults[2:]  # a model config file names the models itself
    sys.exit(serving_cli.main(defaults + list(ctx.args)))
