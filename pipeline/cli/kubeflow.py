"""`tfxsp kubeflow compile | submit`: compile the pipeline for Kubeflow Pipelines 2 and submit runs to it.

Exit codes (pipeline/cli/exit_codes.py): 0 compiled / submitted (with --wait: the run succeeded); 1 the run ended
FAILED, CANCELED or SKIPPED; 2 bad configuration or package (nothing was sent); 5 Kubeflow Pipelines could not be
reached (refused, no answer in time) or rejected a request (its HTTP status and message are shown); 6 --wait gave up
after --timeout seconds while the run was still going.
"""
from __future__ import annotations

import os
import time
import warnings

import click

from pipeline.cli import exit_codes
from pipeline.cli.options import fail, load, set_option
from pipeline.config import ConfigError, PipelineConfig


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def kubeflow() -> None:
    """Run the pipeline on Kubeflow Pipelines 2: compile it to YAML, submit runs."""


# ------------------------------------------------------------------------------------------ compile
def _compile(config: PipelineConfig, output: str):
    from pipeline.cli import console
    from pipeline.runners import kubeflow as kubeflow_runner
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's import: not a run
    console.quiet_logs(verbose=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = kubeflow_runner.compile_pipeline(config, output)
    except ConfigError as e:
        fail("Error:", str(e))
    click.echo(f"Compiled {len(compiled.tasks)} tasks of pipeline "
               f"{kubeflow_runner.kfp_pipeline_name(config.pipeline_name)} to {compiled.path}")
    click.echo(f"  image: {compiled.image}")
    click.echo(f"  Beam:  {' '.join(config.beam_pipeline_args())}")
    if compiled.vertex_only_tasks:
        click.secho(
            "  note: " + ", ".join(compiled.vertex_only_tasks) + " compile to TFX resolver "
            "executors, which Vertex AI Pipelines runs but open-source KFP 2 backends do not "
            "('non-container and non-importer executor not implemented'); compile with "
            "--set kubeflow_backend=kfp for those.", fg="yellow")
    return compiled


@kubeflow.command("compile")
@set_option
@click.option("--output", "-o", default=None, metavar="PATH",
              help="Where to write the pipeline spec (YAML).  [default: build/pipeline.yaml]")
def compile_command(set_items: tuple[str, ...], output: str | None) -> None:
    """Compile the pipeline with KubeflowV2DagRunner into a KFP 2 pipeline spec (YAML)."""
    from pipeline.runners import kubeflow as kubeflow_runner
    _compile(load(set_items), output or kubeflow_runner.DEFAULT_OUTPUT)


@kubeflow.command()
@click.option("--host", envvar="KF_PIPELINES_ENDPOINT", required=True, metavar="URL",
              help="Kubeflow Pipelines API (or UI) address, e.g. http://localhost:8080 "
                   "[env KF_PIPELINES_ENDPOINT].")
@click.option("--experiment", default=None, help="Experiment to add the run to (created when "
              "missing).  [default: the pipeline name]")
@click.option("--run-name", default=None, help="Run name.  [default: <pipeline> <timestamp>]")
@click.option("--pipeline-root", default=None, metavar="URI",
              help="Pipeline root of the run: gs://..., s3://... or minio://...  [default: config "
                   "kubeflow_pipeline_root, else the cluster's default]")
@click.option("--namespace", default=None, help="Kubernetes namespace (multi-user Kubeflow).")
@click.option("--existing-token", envvar="KFP_EXISTING_TOKEN", default=None, metavar="TOKEN",
              help="Bearer token sent with every request [env KFP_EXISTING_TOKEN]. Without it, the "
                   "kfp client's own credentials apply: KF_PIPELINES_SA_TOKEN_PATH, "
                   "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID, ...")
@click.option("--package", default=None, metavar="PATH",
              help="Compiled pipeline spec.  [default: build/pipeline.yaml, compiled when missing]")
@click.option("--cache/--no-cache", "enable_caching", default=None,
              help="Override the compiled caching option of every task.")
@click.option("--wait", is_flag=True, help="Follow the run to its end; exit 0 only if it succeeded.")
@click.option("--timeout", default=3600.0, show_default=True, metavar="S",
              help="With --wait: seconds to wait for the run to end.")
@click.option("--request-timeout", default=30.0, show_default=True, metavar="S",
              help="Seconds to wait for each answer of the API server.")
@click.option("--poll-interval", default=10.0, show_default=True, hidden=True)
@set_option
def submit(host: str, experiment: str | None, run_name: str | None,
           pipeline_root: str | None, namespace: str | None, existing_token: str | None,
           package: str | None, enable_caching: bool | None, wait: bool, timeout: float,
           request_timeout: float, poll_interval: float, set_items: tuple[str, ...]) -> None:
    """Create a run of the compiled pipeline on Kubeflow Pipelines, print its id and URL."""
    from pipeline.runners import kubeflow as kubeflow_runner
    from pipeline.runners import kubeflow_submit as kfp
    if not host.startswith(("http://", "https://")):
        fail("Error:", f"--host {host!r}: give the scheme, e.g. http://localhost:8080")
    config = load(set_items, kubeflow_pipeline_root=pipeline_root)
    try:
        name = kubeflow_runner.kfp_pipeline_name(config.pipeline_name)
    except ConfigError as e:
        fail("Error:", str(e))
    if package is None:
        package = kubeflow_runner.DEFAULT_OUTPUT
        if not os.path.exists(package):
            _compile(config, package)
    if kubeflow_runner.package_pipeline_name(package) is None:
        fail("Error:", f"{package} is not a compiled pipeline spec (run 'tfxsp kubeflow compile')")
    root = config.kubeflow_pipeline_root or None
    if root is None or root.startswith("minio://"):
        click.secho("note: TFX's executors open artifact URIs with TensorFlow's file system, which "
                    "reads gs:// (and s3:// with tensorflow-io) but not minio://; "
                    + ("the run uses the cluster's default pipeline root. " if root is None else "")
                    + "Pass --pipeline-root gs://BUCKET/PATH.", err=True, fg="yellow")
    sub = kfp.Submission(
        host=host, package=package, experiment=experiment or name,
        run_name=run_name or f"{name} {time.strftime('%Y-%m-%d %H-%M-%S')}",
        pipeline_root=root, namespace=namespace, existing_token=existing_token,
        enable_caching=enable_caching, request_timeout=request_timeout)
    try:
        client, run_id = kfp.submit_run(sub)
    except kfp.CredentialsError as error:
        fail("Error:", str(error))
    except kfp.KubeflowError as error:
        fail("Kubeflow Pipelines error:", str(error), exit_codes.UNREACHABLE)
    click.echo(f"Submitted run '{sub.run_name}' in experiment '{sub.experiment}'"
               + (f" (pipeline root {root})" if root else ""))
    click.echo(f"Run id:  {run_id}")
    click.echo(f"Run URL: {kfp.run_url(client, host, run_id)}")
    if not wait:
        return
    click.echo(f"Waiting for the run (up to {timeout:g} s):")
    try:
        run = kfp.wait_for_run(client, sub, run_id, timeout, poll_interval, echo=click.echo)
    except kfp.WaitTimeout as error:
        fail("Still running:", str(error), exit_codes.TIMED_OUT)
    except kfp.KubeflowError as error:
        fail("Kubeflow Pipelines error:", str(error), exit_codes.UNREACHABLE)
    state = str(run.state).upper()
    if state == "SUCCEEDED":
        click.secho(f"Run {run_id} SUCCEEDED", fg="green")
        return
    error = getattr(getattr(run, "error", None), "message", None)
    click.secho(f"Run {run_id} {state}" + (f": {error}" if error else ""), err=True, fg="red")
    raise SystemExit(exit_codes.FAILED)
