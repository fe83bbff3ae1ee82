"""Any tabular CSV, not just the penguins: real datasets that packages of the lock ship (binary classification with
string labels, multi-class with integer labels, regression) and a messy CSV made here go through the whole
pipeline, and the served model, asked over REST with plain JSON rows of the eval split (gaps and all), answers
with the metric the Evaluator measured, beyond the naive baseline."""
from __future__ import annotations

import csv
import json
import math
import os
import urllib.request

import pytest
from ml_metadata import metadata_store

from data import public_datasets
from pipeline.config import load_config
from pipeline.dataset import analysis, examples
from pipeline.metadata.report import collect
from pipeline.metadata.runs import latest_run_id
from serving import launcher
from tests.support import datasets
from tests.support.processes import free_port, run_tfxsp

pytestmark = pytest.mark.timeout(1800)
TRAINING = ["--set", "train_steps=400", "--set", "epochs=8"]
CASES = {  # dataset -> (label, task, the classes or None)
    "breast_cancer": ("diagnosis", "classification", ["benign", "malignant"]),
    "wine": ("cultivar", "classification", ["0", "1", "2"]),
    "diabetes": ("progression", "regression", None),
    "messy": (datasets.MESSY_LABEL, "classification", ["Adelie", "Chinstrap", "Gentoo"]),
}


def _data(name: str, folder) -> str:
    if name == "messy":
        return str(datasets.write_messy(folder))
    return public_datasets.write(name, str(folder))


@pytest.fixture(scope="module", params=list(CASES))
def pipeline_run(request, tmp_path_factory):
    """One real `tfxsp run` per dataset; the messy one through `tfxsp init` and its tfxsp.toml."""
    name = request.param
    label, task, _ = CASES[name]
    root = tmp_path_factory.mktemp(name)
    data = _data(name, root / "data")
    ports = {"grpc_port": str(free_port()), "rest_port": str(free_port())}
    settings = {"tfx_root": str(root / "runs"), "model_name": name, **ports}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    if name == "messy":
        init = run_tfxsp(["init", data, "--label", label], cwd=root, timeout=600)
        assert init.returncode == 0, init.stdout + init.stderr
        result = run_tfxsp(["run", *sets, *TRAINING], cwd=root)  # reads ./tfxsp.toml
    else:
        result = run_tfxsp(["run", "--set", f"data_root={data}", "--set", f"label={label}", *sets, *TRAINING],
                           cwd=root)
    config = load_config({"data_root": data, "label": label, **settings}, environ={})
    return name, result, config, root


def _answers(config, rows: list[dict], output: str) -> list:
    with launcher.start_server(config.model_name, config.serving_model_dir, kind="embedded",
                               grpc_port=free_port(), rest_port=free_port()) as server:
        body = json.dumps({"signature_name": "serving_raw", "instances": rows}).encode()
        request = urllib.request.Request(f"{server.rest_url}/v1/models/{config.model_name}:predict", data=body)
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    return [p[output] if isinstance(p, dict) else p for p in predictions]


def test_the_pipeline_blesses_pushes_and_serves_it(pipeline_run):
    name, result, config, root = pipeline_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    label, task, _ = CASES[name]
    assert f"Dataset: {task} of '{label}'" in result.stdout
    assert "Blessing: blessed" in result.stdout and "Serving validation: passed" in result.stdout
    if name == "messy":
        toml = (root / "tfxsp.toml").read_text()
        for column, role in datasets.MESSY_ROLES.items():
            assert f'"{column}" = {{role = "{role}"' in toml or f'{column} = {{role = "{role}"' in toml, column


def test_the_served_model_answers_eval_rows_with_the_evaluator_s_metric(pipeline_run):
    name, result, config, _ = pipeline_run
    assert result.returncode == 0
    store = metadata_store.MetadataStore(config.metadata_connection_config())
    report = collect(store, latest_run_id(store, config.pipeline_name))
    contract = analysis.analyze(config).contract
    pairs = [(row, label) for row, label in examples.rows_and_labels(report.examples_uri, contract)
             if label is not None]
    rows, labels = [r for r, _ in pairs], [label for _, label in pairs]
    assert len(rows) >= 40
    if any(isinstance(v, float) and math.isnan(v) or v == "" for row in rows for v in row.values()):
        assert name in ("messy",)  # the gaps of real rows travel as NaN and "", and are filled as in training
    overall = report.metrics["Overall"]
    if contract.task == "classification":
        classes = _answers(config, rows, "classes")
        assert set(classes) <= set(CASES[name][2])
        accuracy = sum(c == label for c, label in zip(classes, labels)) / len(labels)
        assert accuracy == pytest.approx(overall["sparse_categorical_accuracy"], abs=1e-6)
        assert accuracy >= contract.baseline + 0.02, (accuracy, contract.baseline)
        if contract.num_classes == 2:
            assert "auc/class_1" in overall
    else:
        predictions = _answers(config, rows, "predictions")
        rmse = math.sqrt(sum((p - y) ** 2 for p, y in zip(predictions, labels)) / len(labels))
        assert rmse == pytest.approx(overall["root_mean_squared_error"], rel=1e-3)
        assert rmse <= 0.98 * contract.baseline, (rmse, contract.baseline)
        assert "mean_absolute_error" in overall


def test_tfxsp_predict_scores_the_whole_csv_with_the_metric_of_its_own_output(pipeline_run, tmp_path):
    """Batch scoring of the dataset's own CSV, gaps, missing markers and all: every row scored (none rejected),
    each input cell kept, and the metric printed is the one the output file's columns give."""
    name, result, config, root = pipeline_run
    assert result.returncode == 0
    label, task, classes = CASES[name]
    data = config.data_root if os.path.isfile(config.data_root) else os.path.join(
        config.data_root, sorted(f for f in os.listdir(config.data_root) if f.endswith(".csv"))[0])
    out = tmp_path / "scored.csv"
    sets = ["--set", f"tfx_root={config.tfx_root}", "--set", f"model_name={config.model_name}"]
    scored = run_tfxsp(["predict", data, "-o", str(out), "--format", "json", *sets], cwd=root, timeout=600)
    assert scored.returncode == 0, scored.stdout + scored.stderr[-3000:]
    summary = json.loads(scored.stdout)
    with open(data, newline="", encoding="utf-8-sig") as f:
        rows_in = list(csv.DictReader(f))
    with open(out, newline="", encoding="utf-8") as f:
        rows_out = list(csv.DictReader(f))
    assert summary["rows"] == len(rows_in) == len(rows_out) and summary["rejects"] == 0
    assert all(r_out[k] == v for r_in, r_out in zip(rows_in, rows_out) for k, v in r_in.items())
    predicted = f"predicted_{label}"
    markers = {"", *analysis.analyze(config).contract.missing_markers}
    labelled = [r for r in rows_out if r[label].strip() not in markers]
    assert summary["metric"]["labelled"] == len(labelled)
    if task == "classification":
        assert {r[predicted] for r in rows_out} <= set(classes)
        accuracy = sum(r[predicted] == r[label].strip() for r in labelled) / len(labelled)
        assert summary["metric"]["accuracy"] == pytest.approx(accuracy)
    else:
        errors = [float(r[predicted]) - float(r[label]) for r in labelled]
        assert summary["metric"]["rmse"] == pytest.approx(math.sqrt(sum(x * x for x in errors) / len(errors)),
                                                          rel=1e-5)
