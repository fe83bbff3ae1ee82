"""`tfxsp model show [served|latest|VERSION]`: a pushed version's signatures read from its real SavedModel, with
the run, blessing and serving validation from a real ML Metadata store (tests/support/model_history.py); unknown
and quarantined versions exit 2."""
from __future__ import annotations

import json

import pytest

from tests.support.model_history import Version, make_history
from tests.support.processes import run_tfxsp

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("show"), [Version(1), Version(2), Version(3, quarantined=True)])


def _show(history, *args):
    return run_tfxsp(["model", "show", *args, *history.set_args], cwd=history.root, timeout=300)


def test_served_version_as_json_has_signatures_and_provenance(history):
    result = _show(history, "served", "--format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(result.stdout)
    assert shown["model"]["version"] == "2" and shown["model"]["served"] is True  # 3 was quarantined
    assert shown["model"]["blessed"] is True and shown["model"]["run_id"] == "run-2"
    assert shown["model"]["serving_validation"]["outcome"] == "passed"
    signature = shown["signatures"]["serving_default"]
    assert signature["method"] == "tensorflow/serving/predict"
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT" and signature["inputs"]["x"]["shape"] == [-1]
    assert signature["outputs"]["y"]["dtype"] == "DT_FLOAT"


def test_a_version_number_as_a_table_like_saved_model_cli(history):
    result = _show(history, "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Model version 1 (present)" in result.stdout
    assert "signature_def['serving_default']:" in result.stdout
    assert "inputs['x'] tensor_info:" in result.stdout and "dtype: DT_FLOAT" in result.stdout
    assert "shape: (-1,)" in result.stdout and "Method name is: tensorflow/serving/predict" in result.stdout


@pytest.mark.parametrize("which, message", [("9", "'9' is not a pushed version"), ("newest", "is not a pushed"),
                                            ("3", "no longer exists")])
def test_unknown_or_gone_versions_exit_2(history, which, message):
    result = _show(history, which)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
