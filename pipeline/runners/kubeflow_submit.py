"""Submitting runs of a compiled pipeline to Kubeflow Pipelines 2 with the kfp client, and following them.

Every request is bounded (the kfp client sets no timeout of its own), and whatever the client raises becomes one
KubeflowError sentence: a host that refuses, never answers, or rejects a request with its HTTP status and message.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from typing import Any

HEALTHZ_PATH = "/apis/v2beta1/healthz"
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's service-account token file (in-cluster auth)


class KubeflowError(Exception):
    """Kubeflow Pipelines could not be reached, or answered with an error."""


class CredentialsError(ValueError):
    """The credentials given cannot be read (a bad token file)."""


class WaitTimeout(Exception):
    """The run was still going when waiting for it gave up (the run goes on)."""


def _auth_header(existing_token: str | None) -> dict[str, str]:
    token = existing_token
    if not token and os.environ.get(SA_TOKEN_ENV):
        try:
            with open(os.environ[SA_TOKEN_ENV]) as f:
                token = f.read().strip()
        except OSError as e:
            raise CredentialsError(f"{SA_TOKEN_ENV}={os.environ[SA_TOKEN_ENV]}: {e.strerror}") from None
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
            raise KubeflowError(
                f"{url} answered HTTP {e.code} {e.reason}: {_server_message(e.read())}"
                + (" (is this the address of a Kubeflow Pipelines 2 API server?)"
                   if e.code == 404 else "")) from None
        if e.code in (401, 403) and not _client_authenticates_itself(host):
            raise KubeflowError(
                f"{url} answered HTTP {e.code} {e.reason}: {_server_message(e.read())} "
                + ("(the token was not accepted)" if headers else
                   "(it needs credentials: --existing-token, KF_PIPELINES_SA_TOKEN_PATH, ...)")
            ) from None
        # Other answers: the kfp client's own requests will tell.
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            raise KubeflowError(
                f"{host} refused the connection: nothing listens there. Is the API server "
                "running, and reachable (e.g. kubectl port-forward -n kubeflow "
                "svc/ml-pipeline-ui 8080:80, then --host http://localhost:8080)?") from None
        if isinstance(reason, TimeoutError):
            raise _no_answer(host, timeout) from None
        raise KubeflowError(f"cannot reach {host}: {reason}") from None
    except TimeoutError:
        raise _no_answer(host, timeout) from None
    except OSError as e:  # connection reset, ...
        raise KubeflowError(f"cannot reach {host}: {e}") from None


def _no_answer(host: str, timeout: float) -> KubeflowError:
    return KubeflowError(f"{host} did not answer within {timeout:g} s (it accepts "
                               "connections but sends nothing back; check the address and "
                               "--request-timeout)")


@contextlib.contextmanager
def _bounded_requests(timeout: float) -> Iterator[None]:
    """Gives every request of the kfp client a connect and read timeout. The client sets none and offers no option
    for one, so its generated REST layer's request method is wrapped for the duration of our calls."""
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
        raise KubeflowError(f"{host} rejected {what} with {status}: "
                                  f"{_server_message(e.body) if e.body else e.reason}") from None
    except urllib3.exceptions.MaxRetryError as e:
        cause = e.reason
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
            raise _no_answer(host, timeout) from None
        if isinstance(cause, urllib3.exceptions.NewConnectionError) and \
                "refused" in str(cause).lower():
            raise KubeflowError(f"{host} refused the connection ({what})") from None
        raise KubeflowError(f"cannot reach {host} ({what}): {cause}") from None
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError):
        raise _no_answer(host, timeout) from None
    except urllib3.exceptions.HTTPError as e:
        raise KubeflowError(f"cannot reach {host} ({what}): {e}") from None
    except TimeoutError as e:  # kfp's health check gave up
        raise KubeflowError(f"{host}: {e}") from None
    except ValueError as e:  # kfp's own checks, e.g. several experiments with the same name
        raise KubeflowError(f"{what}: {e}") from None


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
    # The client knows the UI's URL prefix (it differs behind Google's inverse proxy) but exposes it only privately.
    prefix = client._get_url_prefix() if hasattr(client, "_get_url_prefix") else host
    return f"{prefix.rstrip('/')}/#/runs/details/{run_id}"


def wait_for_run(client: Any, sub: Submission, run_id: str, timeout: float,
                 poll_interval: float, echo: Callable[[str], None] = print) -> Any:
    """Polls the run until it reaches a terminal state; raises WaitTimeout when `timeout` seconds pass first."""
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
            raise WaitTimeout(f"Run {run_id} is still {state} after {timeout:g} s; stopped waiting "
                              "(the run goes on).")
        time.sleep(poll_interval)


