"""Whole `tfxsp run`s whose serving validation cannot prove anything against the model (issue 12, point 8): a model
server that does not load the pushed version in time, one whose gRPC API does not answer, and a version superseded
by a newer push. Each is "could not validate": exit 4, the version stays where it is (nothing is quarantined), and
the summary says so. A model fault is still rolled back, and two quarantines of one version number never collide:
tests/components/test_serving_validation.py.
"""
import os
import re
import shutil

import pytest

from pipeline.config import load_config
from pipeline.metadata import report as report_api
from pipeline.metadata import store as store_api
from serving import half_plus_two, launcher
from tests.support.lifecycle import Tfxsp
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(2400)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _run(root, overrides: dict, **more: str) -> Tfxsp:
    args = [a for key, value in {**overrides, **more}.items() for a in ("--set", f"{key}={value}")]
    run = Tfxsp(["run", *args], root)
    run.wait(1500)
    return run


def _validation(config, run: Tfxsp) -> tuple[dict, str]:
    """The serving validation report of the run `run` printed the summary of, and its pushed version."""
    run_id = re.search(r"^Pipeline run (\S+) \(", run.stdout, re.M).group(1)
    report = report_api.collect(store_api.open_store(config.metadata_connection_config()), run_id)
    return report.serving_validation, report.pushed_version


def _versions(path) -> list[str]:
    return sorted(d for d in os.listdir(path) if d.isdigit())


def test_only_model_faults_are_rolled_back(tmp_path):
    grpc_port, rest_port = free_port(), free_port()
    overrides = {"data_root": str(PENGUINS_DIR), "tfx_root": str(tmp_path / "runs"), "grpc_port": str(grpc_port),
                 "rest_port": str(rest_port), "train_steps": "40", "epochs": "2", "probe_deadline_s": "10"}
    config = load_config(overrides, environ={})
    base = config.serving_model_dir
    quarantine = base + ".quarantine"

    # 1. A TF Serving model server already answers on the REST port, so the run uses it; but it serves another
    # model base path, so the pushed version never becomes AVAILABLE there: a server fault, not the model's.
    elsewhere = tmp_path / "elsewhere" / config.model_name
    half_plus_two.export(str(elsewhere), version=1)
    with launcher.start_server(config.model_name, str(elsewhere), grpc_port=grpc_port, rest_port=rest_port,
                               kind="embedded", poll_wait_s=0.5):
        run = _run(tmp_path, overrides)
    assert run.popen.returncode == 4, run.output()
    validation, version = _validation(config, run)
    assert (validation["outcome"], validation["fault"]) == ("inconclusive", "server"), validation
    reason = (f"could not validate version {version}: model status (REST) failed for version {version} at "
              f"http://127.0.0.1:{rest_port}/v1/models/{config.model_name}: version {version} is not AVAILABLE "
              "after 10 s; the server reports version 1 AVAILABLE")
    assert validation["reason"] == reason and "rollback" not in validation
    output = _flat(run.stdout)
    assert f"Serving validation: could not validate - {reason}" in output
    assert f"Version {version} stays where it is (not rolled back)." in output
    assert "Serving validation could not validate the push:" in _flat(run.stderr)
    assert _versions(base) == [version] and not os.path.exists(quarantine)

    # 2. A server that has the pushed version over REST, but no gRPC API where the run looks for it.
    closed = free_port()
    with launcher.start_server(config.model_name, base, grpc_port=free_port(), rest_port=rest_port, kind="embedded",
                               poll_wait_s=0.5):
        run = _run(tmp_path, overrides, grpc_port=str(closed))
    assert run.popen.returncode == 4, run.output()
    validation, second = _validation(config, run)
    assert (validation["outcome"], validation["fault"]) == ("inconclusive", "server"), validation
    assert validation["reason"].startswith(
        f"could not validate version {second}: model status (gRPC) failed for version {second} at "
        f"127.0.0.1:{closed}: no answer within 10 s: 127.0.0.1:{closed} (UNAVAILABLE"), validation["reason"]
    assert second in _versions(base) and not os.path.exists(quarantine)

    # 3. A newer push than the run's: the server the run starts serves it, and never the run's version. Superseded,
    # so left alone.
    newer = str(int(second) + 1_000_000)
    shutil.copytree(os.path.join(base, second), os.path.join(base, newer))
    run = _run(tmp_path, overrides, probe_deadline_s="8")
    assert run.popen.returncode == 4, run.output()
    assert "Started a model server" in run.stdout
    validation, third = _validation(config, run)
    assert (validation["outcome"], validation["fault"]) == ("inconclusive", "superseded"), validation
    assert validation["reason"].startswith(
        f"could not validate version {third}: version {third} was superseded by version {newer}; ")
    assert f"version {newer} AVAILABLE" in validation["reason"]
    assert {version, second, third, newer} <= set(_versions(base)) and not os.path.exists(quarantine)
