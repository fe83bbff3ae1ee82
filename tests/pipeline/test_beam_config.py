"""`beam_runner` and its settings: mapped to Beam options in one place, rejected before anything runs
when they are incomplete."""
import pytest

from pipeline.config import ConfigError, load_config
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import run_tfxsp


def _args(**overrides):
    return load_config({k: str(v) for k, v in overrides.items()}, environ={}).beam_pipeline_args()


def test_direct_is_the_in_memory_default():
    assert _args() == ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def test_direct_multiprocess_runs_n_worker_processes():
    assert _args(beam_runner="direct-multiprocess", beam_direct_num_workers=2) == [
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.mark.parametrize("runner", ["flink", "spark"])
def test_flink_and_spark_use_the_portable_runner_with_the_job_endpoint(runner):
    # DOCKER (the default) runs the SDK workers from the pipeline image unless told otherwise.
    assert _args(beam_runner=runner, beam_job_endpoint="jobserver:8099",
                 pipeline_image="gcr.io/p/tfxsp:1") == [
        "--runner=PortableRunner", "--job_endpoint=jobserver:8099", "--environment_type=DOCKER",
        "--environment_config=gcr.io/p/tfxsp:1"]
    assert _args(beam_runner=runner, beam_job_endpoint="localhost:8099",
                 beam_environment_type="EXTERNAL", beam_environment_config="localhost:50000") == [
        "--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL",
        "--environment_config=localhost:50000"]
    assert _args(beam_runner=runner, beam_job_endpoint="localhost:8099",
                 beam_environment_type="LOOPBACK") == [
        "--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=LOOPBACK"]


def test_dataflow_gets_project_region_temp_location_and_the_worker_image():
    assert _args(beam_runner="dataflow", gcp_project="my-proj", gcp_region="europe-west4",
                 beam_temp_location="gs://my-bucket/tmp",
                 pipeline_image="europe-docker.pkg.dev/my-proj/ml/tfxsp:3") == [
        "--runner=DataflowRunner", "--project=my-proj", "--region=europe-west4",
        "--temp_location=gs://my-bucket/tmp",
        "--sdk_container_image=europe-docker.pkg.dev/my-proj/ml/tfxsp:3"]


def test_the_runner_comes_from_the_environment_too():
    config = load_config({}, environ={"TFXSP_BEAM_RUNNER": "direct-multiprocess",
                                      "TFXSP_BEAM_DIRECT_NUM_WORKERS": "3"})
    assert config.beam_pipeline_args()[0] == "--direct_running_mode=multi_processing"


DATAFLOW = {"beam_runner": "dataflow", "gcp_project": "p", "gcp_region": "us-central1",
            "beam_temp_location": "gs://b/tmp", "pipeline_image": "gcr.io/p/tfxsp:1"}


@pytest.mark.parametrize("overrides, message", [
    ({"beam_runner": "samza"}, "'beam_runner' = 'samza': must be one of direct, "
                               "direct-multiprocess, flink, spark, dataflow"),
    ({"beam_runner": "direct-multiprocess", "beam_direct_num_workers": "0"},
     "'beam_direct_num_workers' = 0: must be >= 1"),
    ({"beam_runner": "flink"}, "'beam_job_endpoint' = '': beam_runner=flink needs the job service"),
    ({"beam_runner": "spark", "beam_job_endpoint": "sparkhost"}, "beam_runner=spark needs"),
    ({"beam_runner": "flink", "beam_job_endpoint": "h:8099", "beam_environment_type": "VM"},
     "'beam_environment_type' = 'VM': must be one of DOCKER, EXTERNAL, PROCESS, LOOPBACK"),
    ({"beam_runner": "flink", "beam_job_endpoint": "h:8099", "beam_environment_type": "EXTERNAL"},
     "'beam_environment_config' = '': beam_environment_type=EXTERNAL needs it"),
    ({**DATAFLOW, "gcp_project": ""}, "'gcp_project' = '': beam_runner=dataflow needs it"),
    ({**DATAFLOW, "gcp_region": " "}, "'gcp_region' = ' ': beam_runner=dataflow needs it"),
    ({**DATAFLOW, "beam_temp_location": "/tmp/beam"}, "'beam_temp_location' = '/tmp/beam'"),
    ({**DATAFLOW, "pipeline_image": "tfxsp:latest"}, "'pipeline_image' = 'tfxsp:latest'"),
    ({"kubeflow_pipeline_root": "/local/path"}, "'kubeflow_pipeline_root' = '/local/path'"),
    ({"kubeflow_pipeline_root": "gs://"}, "must be a gs://, s3:// or minio:// URI with a bucket"),
])
def test_incomplete_runner_settings_are_rejected(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides, environ={})
    assert message in str(err.value)


def test_settings_of_other_runners_are_not_required():
    load_config({"beam_runner": "direct", "beam_environment_type": "EXTERNAL"}, environ={})
    load_config({**DATAFLOW, "beam_job_endpoint": ""}, environ={})


def test_tfxsp_run_rejects_them_before_anything_runs(tmp_path):
    result = run_tfxsp(["run", "--set", f"data_root={PENGUINS_DIR}", "--set", "tfx_root=runs",
                        "--set", "beam_runner=flink"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "beam_job_endpoint" in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_local_pipeline_carries_the_beam_args(tmp_path):
    from pipeline.runners import local as local_runner
    config = load_config({"data_root": str(PENGUINS_DIR), "tfx_root": str(tmp_path),
                          "beam_runner": "direct-multiprocess", "beam_direct_num_workers": "2"},
                         environ={})
    assert local_runner.bind_pipeline(config).beam_pipeline_args == [
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def test_a_local_run_on_dataflow_is_refused_before_anything_runs(tmp_path):
    from pipeline.runners import local as local_runner
    config = load_config({**DATAFLOW, "data_root": str(PENGUINS_DIR), "tfx_root": str(tmp_path)},
                         environ={})
    with pytest.raises(ConfigError, match="run it from Kubeflow"):
        local_runner.run(config)
    assert list(tmp_path.iterdir()) == []
