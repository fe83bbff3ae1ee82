"""The Kubeflow Pipelines path, without a cluster.

Compile: the pipeline compiled by `tfxsp kubeflow compile` is read back with the KFP SDK's own
loader (the one `kfp.Client` uses on a package) and proto (PipelineSpec), and compared with the TFX
pipeline object it came from: every node is a task, with the configured image, its executor and its
arguments; the DAG's edges are the pipeline's upstream links; the spec round-trips.

Submit: the real `kfp` client (2.5.0) talks to a recording HTTP server on 127.0.0.1 that answers in
KFP's v2beta1 REST shape; the tests check what the client sent, and the errors for a host that
refuses, never answers, or answers with an error.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline.cli import kubeflow as kubeflow_cli
from pipeline.config import ConfigError, load_config
from pipeline.runners import kubeflow as kubeflow_runner
from tests.support.paths import REPO_ROOT, TFXSP

pytestmark = pytest.mark.timeout(300)

IMAGE = "registry.example.com/ml/tfx-serving-pipeline:test-1"
CLUSTER = {
    "pipeline_image": IMAGE,
    "kubeflow_pipeline_root": "gs://ml-bucket/tfx",
    "kubeflow_data_root": "gs://ml-bucket/data/penguins",
    "kubeflow_serving_model_base": "gs://ml-bucket/serving",
    # Beam settings must reach every step: a distributed runner, as a cluster would use.
    "beam_runner": "flink",
    "beam_job_endpoint": "flink-jobserver.flink:8099",
    "beam_environment_type": "EXTERNAL",
    "beam_environment_config": "localhost:50000",
    "train_steps": "123",
}
KFP_ENTRYPOINT = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]


# ------------------------------------------------------------------------------------------ compile
@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The pipeline compiled for the cluster settings above, ServingValidator included."""
    overrides = dict(CLUSTER, serving_validation="true")
    config = load_config(overrides, environ={})
    path = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    result = kubeflow_runner.compile_pipeline(config, str(path))
    return config, result


def _load_spec(path) -> pipeline_spec_pb2.PipelineSpec:
    with open(path) as f:
        documents = list(yaml.safe_load_all(f))
    assert len(documents) == 1
    # Strict parse: an unknown field anywhere is an error.
    return json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())


def _tasks_of(node_id: str, tasks) -> list[str]:
    """A TFX node is one task, or several named '<node id>-...' (a resolver's query steps)."""
    if node_id in tasks:
        return [node_id]
    return [t for t in tasks if t.startswith(node_id + "-")]


def _executor(spec, task_name) -> pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec:
    # The deployment spec is a Struct in PipelineSpec; KFP reads it as a PipelineDeploymentConfig.
    deployment = json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec),
                                       pipeline_spec_pb2.PipelineDeploymentConfig())
    component = spec.components[spec.root.dag.tasks[task_name].component_ref.name]
    return deployment.executors[component.executor_label]


def _param(task, name):
    return task.inputs.parameters[name].runtime_value.constant


def test_the_kfp_client_loads_the_package_and_the_spec_parses_strictly(compiled):
    from kfp.client.client import _extract_pipeline_yaml
    config, result = compiled
    doc = _extract_pipeline_yaml(result.path)  # what kfp.Client does with a package file
    spec = _load_spec(result.path)
    assert doc.pipeline_spec == spec
    assert spec.pipeline_info.name == "penguin-serving"
    assert spec.schema_version == "2.1.0"
    assert spec.sdk_version.startswith("tfx-1.16")


def test_the_spec_round_trips(compiled):
    _, result = compiled
    spec = _load_spec(result.path)
    again = json_format.ParseDict(
        yaml.safe_load(yaml.safe_dump(json_format.MessageToDict(spec))),
        pipeline_spec_pb2.PipelineSpec())
    assert again == spec
    assert pipeline_spec_pb2.PipelineSpec.FromString(spec.SerializeToString()) == spec


def test_every_node_of_the_pipeline_is_a_task_and_nothing_else(compiled):
    _, result = compiled
    tasks = _load_spec(result.path).root.dag.tasks
    nodes = result.pipeline.components
    assert {"CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= {n.id for n in nodes}
    covered = []
    for node in nodes:
        assert _tasks_of(node.id, tasks), f"{node.id} is missing from the compiled pipeline"
        covered += _tasks_of(node.id, tasks)
    assert sorted(covered) == sorted(tasks)
    assert result.tasks == sorted(tasks)


def test_every_component_runs_its_executor_in_the_configured_image_with_the_beam_args(compiled):
    config, result = compiled
    spec = _load_spec(result.path)
    beam_args = config.beam_pipeline_args()
    assert "--runner=PortableRunner" in beam_args
    from tfx.dsl.components.base import base_component, executor_spec
    components = [n for n in result.pipeline.components
                  if isinstance(n, base_component.BaseComponent)
                  and isinstance(n.executor_spec, executor_spec.ExecutorClassSpec)]
    assert len(components) >= 8
    for node in components:
        container = _executor(spec, node.id).container
        assert container.image == IMAGE, node.id
        assert list(container.command) == KFP_ENTRYPOINT, node.id
        args = list(container.args)
        executor_class = node.executor_spec.executor_class
        assert args[args.index("--executor_class_path") + 1] == \
            f"{executor_class.__module__}.{executor_class.__name__}", node.id
        assert args[-len(beam_args):] == beam_args, node.id
        # Every execution property that the component sets reaches the task as an argument.
        task = spec.root.dag.tasks[node.id]
        for name, value in node.exec_properties.items():
            if value is not None:
                assert name in task.inputs.parameters, f"{node.id}: {name} not passed"


def test_arguments_carry_the_cluster_paths_and_the_configuration(compiled):
    config, result = compiled
    tasks = _load_spec(result.path).root.dag.tasks
    assert _param(tasks["CsvExampleGen"], "input_base").string_value == "gs://ml-bucket/data/penguins"
    push = json.loads(_param(tasks["Pusher"], "push_destination").string_value)
    assert push["filesystem"]["base_directory"] == "gs://ml-bucket/serving/penguin"
    assert json.loads(_param(tasks["Trainer"], "train_args").string_value) == {"num_steps": 123}
    # The training settings, the dataset contract decided from the data (the same as Transform's), and the hash of
    # the code the Trainer runs.
    custom_config = json.loads(_param(tasks["Trainer"], "custom_config").string_value)
    contract = json.loads(_param(tasks["Transform"], "custom_config").string_value)["dataset"]
    assert custom_config == {**config.trainer_hparams(), "dataset": contract,
                             "code_fingerprint": custom_config["code_fingerprint"]}
    assert contract["label"]["name"] == "species" and contract["task"] == "classification"
    assert re.fullmatch(r"[0-9a-f]{64}", custom_config["code_fingerprint"])
    eval_config = json.loads(_param(tasks["Evaluator"], "eval_config").string_value)
    accuracy = next(m for m in eval_config["metrics_specs"][0]["metrics"]
                    if m["class_name"] == "SparseCategoricalAccuracy")
    assert accuracy["per_slice_thresholds"][0]["threshold"]["value_threshold"]["lower_bound"] == 0.9


def test_module_files_are_named_where_the_image_has_them(compiled):
    _, result = compiled
    tasks = _load_spec(result.path).root.dag.tasks
    for task, local in (("Transform", "pipeline/modules/transform.py"),
                        ("Trainer", "pipeline/modules/trainer.py")):
        module_file = _param(tasks[task], "module_file").string_value
        assert module_file == f"{kubeflow_runner.IMAGE_SOURCE_DIR}/{local}"
        assert (REPO_ROOT / local).is_file()
        # Not packaged into a wheel under the compile-time pipeline root.
        assert "module_path" not in tasks[task].inputs.parameters
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(rf"^WORKDIR {re.escape(kubeflow_runner.IMAGE_SOURCE_DIR)}$", dockerfile, re.M)
    assert re.search(r"^COPY pipeline pipeline$", dockerfile, re.M)
    assert re.search(r"^FROM tensorflow/tfx:1\.16\.0$", dockerfile, re.M)
    assert "TF_USE_LEGACY_KERAS=1" in dockerfile


def test_no_local_path_or_pipeline_root_is_baked_in(compiled):
    _, result = compiled
    text = Path(result.path).read_text()
    assert str(REPO_ROOT) not in text
    assert "gs://ml-bucket/tfx" not in text.replace("gs://ml-bucket/tfx/", "")
    assert "sqlite" not in text and "metadata.db" not in text
    assert result.pipeline.metadata_connection_config is None


def _spec_edges(spec, nodes) -> set[tuple[str, str]]:
    tasks = spec.root.dag.tasks
    owner = {t: n.id for n in nodes for t in _tasks_of(n.id, tasks)}
    edges = set()
    for name, task in tasks.items():
        producers = set(task.dependent_tasks)
        producers |= {a.task_output_artifact.producer_task for a in task.inputs.artifacts.values()
                      if a.HasField("task_output_artifact")}
        producers |= {p.task_output_parameter.producer_task
                      for p in task.inputs.parameters.values()
                      if p.HasField("task_output_parameter")}
        edges |= {(owner[p], owner[name]) for p in producers if owner[p] != owner[name]}
    return edges


def test_dag_edges_are_the_local_pipelines_edges(compiled):
    _, result = compiled
    nodes = result.pipeline.components
    expected = {(up.id, node.id) for node in nodes for up in node.upstream_nodes}
    assert ("Transform", "Trainer") in expected and ("Trainer", "Pusher") in expected
    assert _spec_edges(_load_spec(result.path), nodes) == expected


def test_serving_validator_is_part_of_the_compiled_pipeline(compiled):
    """The checks above cover it like every other component; its artifact type compiles under
    its namespaced TYPE_NAME."""
    config, result = compiled
    assert config.serving_validation
    assert "ServingValidator" in _load_spec(result.path).root.dag.tasks


def _resolver_tasks(spec):
    return sorted(t for t in spec.root.dag.tasks
                  if _executor(spec, t).WhichOneof("spec") == "resolver")


def test_for_open_source_kfp_every_task_is_a_container(compiled):
    """Open-source KFP 2 cannot run TFX resolver nodes: kubeflow_backend=kfp leaves the baseline
    Resolver out, so the backend accepts every task."""
    config, result = compiled
    assert config.kubeflow_backend == "kfp"
    assert _resolver_tasks(_load_spec(result.path)) == [] and result.vertex_only_tasks == []
    assert "Evaluator" in result.tasks


def test_for_vertex_the_baseline_resolver_is_compiled_and_reported(tmp_path):
    config = load_config(dict(CLUSTER, kubeflow_backend="vertex"), environ={})
    result = kubeflow_runner.compile_pipeline(config, str(tmp_path / "pipeline.yaml"))
    resolvers = _resolver_tasks(_load_spec(result.path))
    assert resolvers and all(t.startswith("latest_blessed_model_resolver") for t in resolvers)
    assert result.vertex_only_tasks == resolvers


def test_the_local_and_kubeflow_runners_share_one_binding(tmp_path):
    from pipeline.runners import local as local_runner
    config = load_config(dict(CLUSTER, data_root=str(REPO_ROOT / "data" / "penguins"),
                              tfx_root=str(tmp_path), serving_validation="false",
                              kubeflow_backend="vertex"), environ={})
    local = local_runner.bind_pipeline(config)
    cluster = kubeflow_runner.build_pipeline(config)
    # The same nodes; the local baseline resolver also reads the Trainer's model (pipeline/baseline.py), so it
    # sorts after the Trainer there.
    assert sorted(n.id for n in local.components) == sorted(n.id for n in cluster.components)
    assert local.beam_pipeline_args == cluster.beam_pipeline_args == config.beam_pipeline_args()
    assert local.metadata_connection_config is not None
    assert cluster.metadata_connection_config is None
    by_id = {n.id: n for n in cluster.components}
    for node in local.components:
        if node.id in ("CsvExampleGen", "Pusher", "Transform", "Trainer"):
            continue  # paths and module files differ by design
        if node.id == "latest_blessed_model_resolver":
            # Kubeflow's compiler translates only TFX's own strategy; the local one leaves out this run's model.
            assert node.exec_properties["resolver_class"].__name__ == "LatestBlessedOtherModelStrategy"
            assert by_id[node.id].exec_properties["resolver_class"].__name__ == "LatestBlessedModelStrategy"
            continue
        assert node.exec_properties == by_id[node.id].exec_properties, node.id


@pytest.mark.parametrize("overrides, message", [
    ({"kubeflow_pipeline_root": "", "kubeflow_serving_model_base": ""},
     "'kubeflow_serving_model_base' is empty"),
    ({"pipeline_name": "Penguin Serving!"}, "Kubeflow Pipelines needs a name"),
    ({"kubeflow_data_root": "", "data_root": "/somewhere/else"}, "'kubeflow_data_root' is empty"),
])
def test_incomplete_cluster_settings_are_rejected(overrides, message):
    config = load_config(dict(CLUSTER, **overrides, serving_validation="false"), environ={})
    with pytest.raises(ConfigError, match=re.escape(message)):
        kubeflow_runner.build_pipeline(config)


def test_compile_command_writes_the_yaml_and_rejects_bad_settings(tmp_path):
    output = tmp_path / "out" / "pipeline.yaml"
    sets = [arg for k, v in CLUSTER.items() for arg in ("--set", f"{k}={v}")]
    sets += ["--set", "serving_validation=false"]
    result = CliRunner().invoke(kubeflow_cli.kubeflow, ["compile", "-o", str(output), *sets])
    assert result.exit_code == 0, result.output
    assert f"to {output}" in result.output and IMAGE in result.output
    assert _load_spec(output).pipeline_info.name == "penguin-serving"

    result = CliRunner().invoke(kubeflow_cli.kubeflow, [
        "compile", "-o", str(tmp_path / "x.json"), *sets])
    assert result.exit_code == 2 and ".yaml" in result.output
    result = CliRunner().invoke(kubeflow_cli.kubeflow, [
        "compile", "--set", "kubeflow_pipeline_root=http://not-a-bucket"])
    assert result.exit_code == 2 and "kubeflow_pipeline_root" in result.output


def test_compile_with_a_mysql_metadata_url_embeds_no_password(tmp_path):
    """On Kubeflow each step records to the cluster's own ML Metadata: a local mysql:// store (a team's shared one)
    is not compiled in, its password least of all."""
    secret = "kfp-S3cret-pw"
    output = tmp_path / "pipeline.yaml"
    sets = [arg for k, v in CLUSTER.items() for arg in ("--set", f"{k}={v}")]
    sets += ["--set", "serving_validation=false", "--set", f"metadata_url=mysql://tfxsp:{secret}@db.internal:3306/mlmd"]
    result = CliRunner().invoke(kubeflow_cli.kubeflow, ["compile", "-o", str(output), *sets])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert secret not in text + result.output and "db.internal" not in text
    assert _load_spec(output).pipeline_info.name == "penguin-serving"


# ------------------------------------------------------------------------------------------- submit
class FakeKFP:
    """A recording Kubeflow Pipelines API server (v2beta1 REST) on 127.0.0.1, in its own thread."""

    def __init__(self, run_states=("SUCCEEDED",), experiments=(), fail=None, hang=None):
        self.requests: list[dict] = []
        self.run_states = list(run_states)
        self.experiments = [dict(e) for e in experiments]
        self.fail = fail or {}  # (method, path) -> (status, json body)
        self.hang = hang  # (method, path) that never gets an answer
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request):
        from aiohttp import web
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.path,
                              "query": dict(request.query), "headers": dict(request.headers),
                              "json": json.loads(body) if body else None})
        key = (request.method, request.path)
        if key == self.hang:
            await asyncio.sleep(3600)
        if key in self.fail:
            status, payload = self.fail[key]
            return web.json_response(payload, status=status)
        if key == ("GET", "/apis/v2beta1/healthz"):
            return web.json_response({"commit_sha": "fake", "tag_name": "2.0.5",
                                      "multi_user": False})
        if key == ("GET", "/apis/v2beta1/experiments"):
            wanted = json.loads(request.query["filter"])["predicates"][0]["stringValue"]
            found = [e for e in self.experiments if e["display_name"] == wanted]
            return web.json_response({"experiments": found, "total_size": len(found)}
                                     if found else {})
        if key == ("POST", "/apis/v2beta1/experiments"):
            experiment = dict(json.loads(body), experiment_id=f"exp-{len(self.experiments) + 1}")
            self.experiments.append(experiment)
            return web.json_response(experiment)
        if key == ("POST", "/apis/v2beta1/runs"):
            run = json.loads(body)
            return web.json_response({"run_id": "run-1", "display_name": run["display_name"],
                                      "experiment_id": run["experiment_id"], "state": "PENDING"})
        if key == ("GET", "/apis/v2beta1/runs/run-1"):
            state = self.run_states.pop(0) if len(self.run_states) > 1 else self.run_states[0]
            answer = {"run_id": "run-1", "state": state}
            if state == "FAILED":
                answer["error"] = {"code": 2, "message": "Trainer: OOMKilled"}
            return web.json_response(answer)
        return web.json_response({"error": "not found", "code": 5, "message": "not found"},
                                 status=404)

    def _serve(self):
        from aiohttp import web
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> FakeKFP:
        self._thread.start()
        assert self._ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        for task in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(task.cancel)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]

    def one(self, method, path) -> dict:
        matching = [r for r in self.requests if (r["method"], r["path"]) == (method, path)]
        assert len(matching) == 1, self.calls()
        return matching[0]


@pytest.fixture
def submit(compiled, tmp_path, monkeypatch):
    """Runs `tfxsp kubeflow submit --package <compiled> ARGS` in process; returns (result, secs)."""
    import kfp.client.client as kfp_client
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KFP_EXISTING_TOKEN",
                "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID",
                "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))

    def invoke(*args):
        start = time.monotonic()
        result = CliRunner().invoke(kubeflow_cli.kubeflow, [
            "submit", "--package", compiled[1].path, "--poll-interval", "0.05", *args])
        return result, time.monotonic() - start
    return invoke


def test_submit_sends_the_compiled_spec_root_experiment_and_run_name(compiled, submit):
    with FakeKFP() as kfp_server:
        result, _ = submit("--host", kfp_server.url, "--pipeline-root", "gs://ml-bucket/runs",
                           "--experiment", "nightly", "--run-name", "penguins-42",
                           "--existing-token", "s3cret")
    assert result.exit_code == 0, result.output
    # What kfp 2.5.0 calls: our bounded health probe, the client's own health check (no
    # namespace given), the experiment lookup by name, its creation, then the run.
    assert kfp_server.calls() == [
        ("GET", "/apis/v2beta1/healthz"), ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/experiments"), ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs")]
    assert all(r["headers"].get("Authorization") == "Bearer s3cret" for r in kfp_server.requests)
    assert kfp_server.one("POST", "/apis/v2beta1/experiments")["json"]["display_name"] == "nightly"
    run = kfp_server.one("POST", "/apis/v2beta1/runs")["json"]
    assert run["display_name"] == "penguins-42"
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["pipeline_root"] == "gs://ml-bucket/runs"
    with open(compiled[1].path) as f:
        assert run["pipeline_spec"] == yaml.safe_load(f)
    assert "Run id:  run-1" in result.output
    assert f"Run URL: {kfp_server.url}/#/runs/details/run-1" in result.output


def test_submit_with_namespace_reuses_an_existing_experiment(compiled, submit):
    existing = {"experiment_id": "exp-7", "display_name": "penguin-serving", "namespace": "team-a"}
    with FakeKFP(experiments=[existing]) as kfp_server:
        result, _ = submit("--host", kfp_server.url, "--namespace", "team-a")
    assert result.exit_code == 0, result.output
    # With a namespace the client skips its health check; the experiment exists, so no creation.
    assert kfp_server.calls() == [("GET", "/apis/v2beta1/healthz"),
                                  ("GET", "/apis/v2beta1/experiments"),
                                  ("POST", "/apis/v2beta1/runs")]
    assert kfp_server.one("GET", "/apis/v2beta1/experiments")["query"]["namespace"] == "team-a"
    run = kfp_server.one("POST", "/apis/v2beta1/runs")["json"]
    assert run["experiment_id"] == "exp-7"
    assert run["display_name"].startswith("penguin-serving ")
    assert "pipeline_root" not in run["runtime_config"]  # the cluster's default root
    assert "not minio://" in result.output  # ... which TFX cannot use if it is MinIO


def test_pipeline_root_from_config_and_no_cache(compiled, submit):
    with FakeKFP() as kfp_server:
        result, _ = submit("--host", kfp_server.url, "--no-cache",
                           "--set", "kubeflow_pipeline_root=s3://ml-bucket/tfx")
    assert result.exit_code == 0, result.output
    run = kfp_server.one("POST", "/apis/v2beta1/runs")["json"]
    assert run["runtime_config"]["pipeline_root"] == "s3://ml-bucket/tfx"
    tasks = run["pipeline_spec"]["root"]["dag"]["tasks"]
    assert all(t["cachingOptions"] == {} or t["cachingOptions"].get("enableCache") is False
               for t in tasks.values())


@pytest.mark.parametrize("states, code, says", [
    (["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"], 0, "SUCCEEDED"),
    (["RUNNING", "FAILED"], 1, "FAILED: Trainer: OOMKilled"),
    (["RUNNING", "CANCELED"], 1, "CANCELED"),
])
def test_wait_follows_the_run_and_exits_with_its_state(submit, states, code, says):
    with FakeKFP(run_states=states) as kfp_server:
        result, _ = submit("--host", kfp_server.url, "--pipeline-root", "gs://b/r", "--wait")
    assert result.exit_code == code, result.output
    assert says in result.output
    assert kfp_server.calls().count(("GET", "/apis/v2beta1/runs/run-1")) == len(states)
    assert "RUNNING" in result.output or states[0] != "RUNNING"


def test_wait_gives_up_after_the_timeout(submit):
    with FakeKFP(run_states=["RUNNING"]) as kfp_server:
        result, seconds = submit("--host", kfp_server.url, "--pipeline-root", "gs://b/r",
                                 "--wait", "--timeout", "0.5")
    assert result.exit_code == 6, result.output
    assert "still RUNNING after 0.5 s" in result.output
    assert seconds < 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_named(submit):
    port = _free_port()  # nothing listens there any more
    result, seconds = submit("--host", f"http://127.0.0.1:{port}", "--pipeline-root", "gs://b/r")
    assert result.exit_code == 5, result.output
    assert f"http://127.0.0.1:{port} refused the connection" in result.output
    assert seconds < 10


def test_a_host_that_never_answers_times_out(submit):
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result, seconds = submit("--host", url, "--pipeline-root", "gs://b/r",
                                 "--request-timeout", "1")
    assert result.exit_code == 5, result.output
    assert "did not answer within 1 s" in result.output
    assert seconds < 10


def test_a_server_that_stops_answering_mid_submission_times_out(submit):
    with FakeKFP(hang=("POST", "/apis/v2beta1/runs")) as kfp_server:
        result, seconds = submit("--host", kfp_server.url, "--pipeline-root", "gs://b/r",
                                 "--request-timeout", "1")
    assert result.exit_code == 5, result.output
    assert "did not answer within 1 s" in result.output
    assert seconds < 15


def test_a_rejected_package_shows_the_servers_message(submit):
    message = ("Failed to create a run: Invalid input error: unknown template format: "
               "pipeline spec is invalid")
    fail = {("POST", "/apis/v2beta1/runs"): (400, {"error": message, "code": 3,
                                                    "message": message, "details": []})}
    with FakeKFP(fail=fail) as kfp_server:
        result, _ = submit("--host", kfp_server.url, "--pipeline-root", "gs://b/r")
    assert result.exit_code == 5, result.output
    assert "rejected the run with HTTP 400 Bad Request" in result.output
    assert message in result.output


def test_a_server_error_on_the_health_check_is_shown(submit):
    fail = {("GET", "/apis/v2beta1/healthz"): (503, {"error": "ml-pipeline is starting",
                                                     "code": 14,
                                                     "message": "ml-pipeline is starting"})}
    with FakeKFP(fail=fail) as kfp_server:
        result, seconds = submit("--host", kfp_server.url, "--pipeline-root", "gs://b/r")
    assert result.exit_code == 5, result.output
    assert "HTTP 503" in result.output and "ml-pipeline is starting" in result.output
    assert kfp_server.calls() == [("GET", "/apis/v2beta1/healthz")]  # nothing was submitted
    assert seconds < 10


@pytest.mark.parametrize("token, says", [
    (None, "it needs credentials"), ("wrong", "the token was not accepted")])
def test_a_host_that_wants_credentials_says_so(submit, token, says):
    fail = {("GET", "/apis/v2beta1/healthz"): (401, {"error": "Unauthenticated", "code": 16,
                                                     "message": "Unauthenticated"})}
    with FakeKFP(fail=fail) as kfp_server:
        result, seconds = submit("--host", kfp_server.url, "--pipeline-root", "gs://b/r",
                                 *(["--existing-token", token] if token else []))
    assert result.exit_code == 5, result.output
    assert "HTTP 401" in result.output and says in result.output
    assert kfp_server.calls() == [("GET", "/apis/v2beta1/healthz")]
    assert seconds < 10


@pytest.mark.parametrize("args, says", [
    (["--pipeline-root", "http://bucket/x"], "'kubeflow_pipeline_root'"),
    (["--package", "/nonexistent/pipeline.yaml"], "is not a compiled pipeline spec"),
    (["--host", "127.0.0.1:{port}"], "give the scheme"),
])
def test_bad_input_is_rejected_before_anything_is_sent(submit, args, says):
    with FakeKFP() as kfp_server:
        args = [a.format(port=kfp_server.port) for a in args]
        result, _ = submit("--host", kfp_server.url, *args)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert kfp_server.requests == []


def test_tfxsp_has_the_kubeflow_commands(compiled):
    """The real console script (its exit codes go through pipeline.cli.main)."""
    with FakeKFP(run_states=["RUNNING", "SUCCEEDED"]) as kfp_server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
        result = subprocess.run(
            [TFXSP, "kubeflow", "submit", "--host", kfp_server.url, "--package",
             compiled[1].path, "--pipeline-root", "gs://b/r", "--wait", "--poll-interval", "0.1"],
            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Run id:  run-1" in result.stdout and "SUCCEEDED" in result.stdout
