"""`tfxsp kubeflow ...`: compile the pipeline for Kubeflow Pipelines 2 and submit runs to it.

Exit codes: 0 compiled / submitted (with --wait: the run succeeded); 1 the run ended FAILED,
CANCELED or SKIPPED; 2 bad configuration or package (nothing was sent); 4 Kubeflow Pipelines could
not be reached (refused, no answer in time) or rejected a request (its HTTP status and message are
shown); 5 --wait gave up after --timeout seconds while the run was still going.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click

from pipeline.config import ConfigError, PipelineConfig, load_config, parse_set_options

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_WAIT_TIMEOUT = 0, 1, 2, 4, 5
HEALTHZ_PATH = "/apis/v2beta1/healthz"
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's service-account token file (in-cluster auth)


class KubeflowUnavailable(click.ClickException):
    """Kubeflow Pipelines did not answer, or answered with an error."""
    exit_code = EXIT_UNREACHABLE

    def show(self, file=None) -> None:
        click.secho(f"Kubeflow Pipelines error: {self.message}", err=True, fg="red")


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT

    def show(self, file=None) -> None:
        click.secho(f"Error: {self.message}", err=True, fg="red")


def _load(set_items: tuple[str, ...], **overrides: str) -> PipelineConfig:
    try:
        values = parse_set_options(list(set_items))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return load_config(values)
    except ConfigError as e:
        raise BadInput(f"configuration: {e}") from None


set_option = click.option(
    "--set", "set_items", multiple=True, metavar="KEY=VALUE",
    help="Override a setting of pipeline/config.py (repeatable), e.g. --set pipeline_image=...")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def kubeflow() -> None:
    """Run the pipeline on Kubeflow Pipelines 2: compile it to YAML, submit runs."""


# ------------------------------------------------------------------------------------------ compile
def _compile(config: PipelineConfig, output: str):
    from pipeline import console, kubeflow_runner
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's import: not a run
    console.quiet_logs(verbose=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = kubeflow_runner.compile_pipeline(config, output)
    except ConfigError as e:
        raise BadInput(str(e)) from None
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
    from pipeline import kubeflow_runner
    _compile(_load(set_items), output or kubeflow_runner.DEFAULT_OUTPUT)


# ------------------------------------------------------------------------------------------- submit
def _auth_header(existing_token: str | None) -> dict[str, str]:
    token = existing_token
    if not token and os.environ.get(SA_TOKEN_ENV):
        try:
            with open(os.environ[SA_TOKEN_ENV]) as f:
                token = f.read().strip()
        except OSError as e:
            raise BadInput(f"{SA_TOKEN_ENV}={os.environ[SA_TOKEN_ENV]}: {e.strerror}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}


def _server_message(body: Any) -> str:
    """The message in a KFP error answer ({"error": ..., "message": ..., "code": ...}), else the
    start of the body."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = (body or "").strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            message = data.get("message") or data.get("error")
            if message:
                return str(message)
    except ValueError:
        pass
    return text[:500] or "(empty answer)"


def _client_authenticates_itself(host: str) -> bool:
    """Whether the kfp client gets a token that the probe does not have: IAP / OAuth client ids,
    or Google's inverse proxy (*.googleusercontent.com)."""
    return "googleusercontent.com" in host or any(
        os.environ.get(v) for v in ("KF_PIPELINES_IAP_OAUTH2_CLIENT_ID",
                                    "KF_PIPELINES_APP_OAUTH2_CLIENT_ID"))


def probe(host: str, timeout: float, headers: dict[str, str]) -> None:
    """One bounded GET of KFP's health endpoint, so that a host that refuses, never answers or
    rejects us is named as such within `timeout` seconds, instead of hanging or retrying (the kfp
    client retries its health check 5 times, 5 s apart)."""
    url = host.rstrip("/") + HEALTHZ_PATH
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as kfp: no env proxy
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 404:
            raise KubeflowUnavailable(
                f"{url} answered HTTP {e.code} {e.reason}: {_server_message(e.read())}"
                + (" (is this the address of a Kubeflow Pipelines 2 API server?)"
                   if e.code == 404 else "")) from None
        if e.code in (401, 403) and not _client_authenticates_itself(host):
            raise KubeflowUnavailable(
                f"{url} answered HTTP {e.code} {e.reason}: {_server_message(e.read())} "
                + ("(the token was not accepted)" if headers else
                   "(it needs credentials: --existing-token, KF_PIPELINES_SA_TOKEN_PATH, ...)")
            ) from None
        # Other answers: the kfp client's own requests will tell.
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            raise KubeflowUnavailable(
                f"{host} refused the connection: nothing listens there. Is the API server "
                "running, and reachable (e.g. kubectl port-forward -n kubeflow "
                "svc/ml-pipeline-ui 8080:80, then --host http://localhost:8080)?") from None
        if isinstance(reason, TimeoutError):
            raise _no_answer(host, timeout) from None
        raise KubeflowUnavailable(f"cannot reach {host}: {reason}") from None
    except TimeoutError:
        raise _no_answer(host, timeout) from None
    except OSError as e:  # connection reset, ...
        raise KubeflowUnavailable(f"cannot reach {host}: {e}") from None


def _no_answer(host: str, timeout: float) -> KubeflowUnavailable:
    return KubeflowUnavailable(f"{host} did not answer within {timeout:g} s (it accepts "
                               "connections but sends nothing back; check the address and "
                               "--request-timeout)")


@contextlib.contextmanager
def _bounded_requests(timeout: float) -> Iterator[None]:
    """Gives every request of the kfp client a connect and read timeout (it sets none)."""
    from kfp_server_api import rest
    original = rest.RESTClientObject.request

    def request(self, *args, _request_timeout=None, **kwargs):
        return original(self, *args, _request_timeout=_request_timeout or (timeout, timeout),
                        **kwargs)

    rest.RESTClientObject.request = request
    try:
        yield
    finally:
        rest.RESTClientObject.request = original


@contextlib.contextmanager
def _kfp_errors(host: str, timeout: float, what: str) -> Iterator[None]:
    """Turns what the kfp client raises into one clear sentence."""
    import kfp_server_api
    import urllib3
    try:
        yield
    except kfp_server_api.ApiException as e:
        status = f"HTTP {e.status} {e.reason or ''}".strip() if e.status else "an error"
        raise KubeflowUnavailable(f"{host} rejected {what} with {status}: "
                                  f"{_server_message(e.body) if e.body else e.reason}") from None
    except urllib3.exceptions.MaxRetryError as e:
        cause = e.reason
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
            raise _no_answer(host, timeout) from None
        if isinstance(cause, urllib3.exceptions.NewConnectionError) and \
                "refused" in str(cause).lower():
            raise KubeflowUnavailable(f"{host} refused the connection ({what})") from None
        raise KubeflowUnavailable(f"cannot reach {host} ({what}): {cause}") from None
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError):
        raise _no_answer(host, timeout) from None
    except urllib3.exceptions.HTTPError as e:
        raise KubeflowUnavailable(f"cannot reach {host} ({what}): {e}") from None
    except TimeoutError as e:  # kfp's health check gave up
        raise KubeflowUnavailable(f"{host}: {e}") from None
    except ValueError as e:  # kfp's own checks, e.g. several experiments with the same name
        raise KubeflowUnavailable(f"{what}: {e}") from None


@dataclasses.dataclass
class Submission:
    host: str
    package: str
    experiment: str
    run_name: str
    pipeline_root: str | None
    namespace: str | None
    existing_token: str | None
    enable_caching: bool | None
    request_timeout: float


def _client(sub: Submission):
    import kfp
    kwargs: dict[str, Any] = {"host": sub.host, "existing_token": sub.existing_token}
    if sub.namespace:
        kwargs["namespace"] = sub.namespace
    if not sub.existing_token and os.environ.get(SA_TOKEN_ENV):
        kwargs["credentials"] = kfp.client.ServiceAccountTokenVolumeCredentials(
            os.environ[SA_TOKEN_ENV])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "This client only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(**kwargs)


def submit_run(sub: Submission) -> tuple[Any, str]:
    """Creates (or finds) the experiment and creates the run; returns (client, run id)."""
    probe(sub.host, sub.request_timeout, _auth_header(sub.existing_token))
    quiet = io.StringIO()  # kfp prints its own "Experiment details" / "Run details" lines
    with _bounded_requests(sub.request_timeout), contextlib.redirect_stdout(quiet):
        with _kfp_errors(sub.host, sub.request_timeout, "the connection"):
            client = _client(sub)
        with _kfp_errors(sub.host, sub.request_timeout, "the run"):
            result = client.create_run_from_pipeline_package(
                sub.package, arguments={}, run_name=sub.run_name,
                experiment_name=sub.experiment, namespace=sub.namespace,
                pipeline_root=sub.pipeline_root, enable_caching=sub.enable_caching)
    return client, result.run_id


def run_url(client: Any, host: str, run_id: str) -> str:
    prefix = client._get_url_prefix() if hasattr(client, "_get_url_prefix") else host
    return f"{prefix.rstrip('/')}/#/runs/details/{run_id}"


def wait_for_run(client: Any, sub: Submission, run_id: str, timeout: float,
                 poll_interval: float, echo: Callable[[str], None] = click.echo) -> Any:
    """Polls the run until it reaches a terminal state; raises click.exceptions.Exit(5) at timeout."""
    deadline = time.monotonic() + timeout
    last_state = None
    while True:
        with _bounded_requests(sub.request_timeout), \
                _kfp_errors(sub.host, sub.request_timeout, "the run status request"):
            run = client.get_run(run_id)
        state = str(run.state or "PENDING").upper()
        if state != last_state:
            echo(f"  {time.strftime('%H:%M:%S')} {state}")
            last_state = state
        if state in TERMINAL_STATES:
            return run
        if time.monotonic() + poll_interval > deadline:
            click.secho(f"Run {run_id} is still {state} after {timeout:g} s; stopped waiting "
                        "(the run goes on).", err=True, fg="yellow")
            raise click.exceptions.Exit(EXIT_WAIT_TIMEOUT)
        time.sleep(poll_interval)


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
    from pipeline import kubeflow_runner
    if not host.startswith(("http://", "https://")):
        raise BadInput(f"--host {host!r}: give the scheme, e.g. http://localhost:8080")
    config = _load(set_items, kubeflow_pipeline_root=pipeline_root)
    try:
        name = kubeflow_runner.kfp_pipeline_name(config.pipeline_name)
    except ConfigError as e:
        raise BadInput(str(e)) from None
    if package is None:
        package = kubeflow_runner.DEFAULT_OUTPUT
        if not os.path.exists(package):
            _compile(config, package)
    if kubeflow_runner.package_pipeline_name(package) is None:
        raise BadInput(f"{package} is not a compiled pipeline spec (run 'tfxsp kubeflow compile')")
    root = config.kubeflow_pipeline_root or None
    if root is None or root.startswith("minio://"):
        click.secho("note: TFX's executors open artifact URIs with TensorFlow's file system, which "
                    "reads gs:// (and s3:// with tensorflow-io) but not minio://; "
                    + ("the run uses the cluster's default pipeline root. " if root is None else "")
                    + "Pass --pipeline-root gs://BUCKET/PATH.", err=True, fg="yellow")
    sub = Submission(
        host=host, package=package, experiment=experiment or name,
        run_name=run_name or f"{name} {time.strftime('%Y-%m-%d %H-%M-%S')}",
        pipeline_root=root, namespace=namespace, existing_token=existing_token,
        enable_caching=enable_caching, request_timeout=request_timeout)
    client, run_id = submit_run(sub)
    click.echo(f"Submitted run '{sub.run_name}' in experiment '{sub.experiment}'"
               + (f" (pipeline root {root})" if root else ""))
    click.echo(f"Run id:  {run_id}")
    click.echo(f"Run URL: {run_url(client, host, run_id)}")
    if not wait:
        return
    click.echo(f"Waiting for the run (up to {timeout:g} s):")
    run = wait_for_run(client, sub, run_id, timeout, poll_interval)
    state = str(run.state).upper()
    if state == "SUCCEEDED":
        click.secho(f"Run {run_id} SUCCEEDED", fg="green")
        return
    error = getattr(getattr(run, "error", None), "message", None)
    click.secho(f"Run {run_id} {state}" + (f": {error}" if error else ""), err=True, fg="red")
    sys.exit(EXIT_RUN_FAILED)
