"""Every page of `tfxsp ui` and its JSON twin, on the store of the session's real pipeline run (tests/conftest.py),
in SQLite and on a real MariaDB server (the first pipeline of the shared store): the first run blessed, pushed and
probed a model. Later tests of the session may add runs to that store, so the
first run is found by position (the oldest), never assumed to be the newest."""
import hashlib
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from ml_metadata import metadata_store

from pipeline.config import load_config
from pipeline.metadata import runs as runs_api
from tests.support.dashboard import Dashboard

# The runs fixture picks the shared runs by name: the shared_runs group of tests/conftest.py.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.xdist_group("shared_runs")]

COMPONENTS = ["CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform", "Trainer",
              "Evaluator", "Pusher", "ServingValidator"]


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def runs(request):
    return request.getfixturevalue({"sqlite": "pipeline_runs", "mariadb": "mariadb_pipeline_runs"}[request.param])


@pytest.fixture(scope="module")
def first_run(runs):
    store = metadata_store.MetadataStore(runs.config.metadata_connection_config())
    return runs_api.pipeline_runs(store, runs.config.pipeline_name)[0].name


@pytest.fixture(scope="module")
def dashboard(runs):
    served = Dashboard(runs.config)
    yield served
    served.close()


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _ok(dashboard, path, content_type="text/html"):
    status, kind, text, _ = dashboard.get(path)
    assert status == 200, f"{path}: {status}\n{text[:3000]}"
    assert kind == content_type
    return json.loads(text) if content_type == "application/json" else text


def _quoted(run_id):
    return urllib.parse.quote(run_id, safe="")


def _svgs_parse(text):
    """Every inline SVG of a page is well-formed XML (a browser would draw nothing of a broken one)."""
    pictures = re.findall(r"<svg .*?</svg>", text, flags=re.S)
    for picture in pictures:
        ET.fromstring(picture)
    return len(pictures)


def test_runs_page_and_json_list_the_first_run_with_its_outcome(dashboard, first_run):
    data = _ok(dashboard, "/api/runs?per_page=200", "application/json")
    first = next(r for r in data["runs"] if r["run_id"] == first_run)
    assert first["state"] == "complete" and first["blessed"] is True
    assert first["pushed_version"].isdigit() and first["serving_validation"] == "passed"
    assert data["total"] == len(data["runs"]) >= 1 and data["page"] == 1
    assert [r["run_id"] for r in data["runs"]] == sorted((r["run_id"] for r in data["runs"]), reverse=True)
    page = _ok(dashboard, "/runs?per_page=200")
    assert first_run in page and first["pushed_version"] in page and "passed" in page


def test_runs_pages_split_the_list_and_reject_bad_numbers(dashboard):
    everything = _ok(dashboard, "/api/runs?per_page=200", "application/json")
    one = _ok(dashboard, "/api/runs?per_page=1&page=1", "application/json")
    assert one["pages"] == everything["total"] and [r["run_id"] for r in one["runs"]] == \
        [everything["runs"][0]["run_id"]]
    status, kind, text, _ = dashboard.get("/api/runs?page=zero")
    assert status == 400 and "page must be a whole number" in json.loads(text)["message"]
    status, _, text, _ = dashboard.get(f"/runs?page={everything['total'] + 1}&per_page=1")
    assert status == 404 and "There is no page" in text


def test_run_page_shows_the_graph_with_node_states_and_each_node_inputs_outputs_parameters(dashboard, first_run):
    data = _ok(dashboard, f"/api/runs/{_quoted(first_run)}", "application/json")
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert set(COMPONENTS) <= set(nodes) and all(n["state"] == "complete" for n in nodes.values())
    trainer = nodes["Trainer"]
    assert {o["type"] for o in trainer["outputs"]} >= {"Model", "ModelRun"}
    assert {i["type"] for i in trainer["inputs"]} >= {"Examples", "TransformGraph", "Schema"}
    assert all(o["uri"] for o in trainer["outputs"]) and "train_args" in trainer["parameters"]
    assert data["failures"] == [] and data["metrics"]["Overall"]["sparse_categorical_accuracy"] >= 0.9
    page = _ok(dashboard, f"/runs/{_quoted(first_run)}")
    assert _svgs_parse(page) == 1
    graph = re.search(r"<svg .*?</svg>", page, flags=re.S).group(0)
    for component in COMPONENTS:  # a box per node, framed in its state's colour, linking to its details
        execution_id = nodes[component]["execution_id"]
        assert f'href="#node-{execution_id}"' in graph and f'id="node-{execution_id}"' in page
        assert f">{component}</text>" in graph
    assert "#16a34a" in graph  # complete
    assert "setTimeout" not in page  # a finished run does not refresh itself


def test_data_page_shows_each_feature_statistics_and_the_anomalies(dashboard, first_run):
    data = _ok(dashboard, f"/api/runs/{_quoted(first_run)}/data", "application/json")
    assert data["statistics_found"] and data["validated"] and data["problems"] == []
    splits = {s["split"]: s for s in data["splits"]}
    assert set(splits) == {"train", "eval"} and splits["train"]["examples"] > splits["eval"]["examples"] > 0
    features = {f["name"]: f for f in splits["train"]["features"]}
    body_mass = features["body_mass_g"]
    assert body_mass["type"] in ("INT", "FLOAT") and 2000 < body_mass["mean"] < 7000
    assert body_mass["minimum"] < body_mass["mean"] < body_mass["maximum"] and len(body_mass["histogram"]) > 1
    assert 0 <= body_mass["missing"] < 0.05
    assert body_mass["count"] == round(splits["train"]["examples"] * (1 - body_mass["missing"]))
    species = features["species"]
    assert species["type"] == "STRING" and species["unique"] == 3
    assert {t["value"] for t in species["top"]} == {"Adelie", "Gentoo", "Chinstrap"}
    assert isinstance(data["anomalies"], list)
    page = _ok(dashboard, f"/runs/{_quoted(first_run)}/data")
    assert "body_mass_g" in page and "Adelie" in page and _svgs_parse(page) >= 4  # numeric histograms


def test_evaluation_page_shows_the_metric_per_slice_thresholds_blessing_and_baseline(dashboard, first_run):
    data = _ok(dashboard, f"/api/runs/{_quoted(first_run)}/evaluation", "application/json")
    assert data["blessed"] is True and data["gate_metric"] == "sparse_categorical_accuracy"
    assert data["by_slice"]["Overall"] >= 0.9 and {"species=Adelie", "island=Biscoe"} <= set(data["by_slice"])
    gate = [t for t in data["thresholds"] if t["metric"] == "sparse_categorical_accuracy"]
    assert gate and gate[0]["lower_bound"] == pytest.approx(0.9) and data["gate_bound"] == pytest.approx(0.9)
    assert data["baseline_model_id"] is None  # the first run has no blessed model to compare with
    assert data["model_id"] and data["evaluation_id"]
    page = _ok(dashboard, f"/runs/{_quoted(first_run)}/evaluation")
    assert _svgs_parse(page) == 1 and "threshold 0.9" in page and "blessed" in page
    accuracy = f"{data['by_slice']['Overall']:.4g}"
    assert accuracy in page and "species=Gentoo" in page


def test_training_page_draws_the_curves_of_the_trainer_event_files(dashboard, first_run):
    data = _ok(dashboard, f"/api/runs/{_quoted(first_run)}/training", "application/json")
    assert data["model_run_uri"] and data["trainer_state"] == "complete"
    assert {"train", "validation"} <= set(data["by_metric"]["loss"])
    assert "learning_rate" in data["by_metric"] and "accuracy" in data["by_metric"]  # Keras' names
    epochs = data["by_metric"]["loss"]["train"]
    assert len(epochs) >= 2 and [e for e, _ in epochs] == sorted(e for e, _ in epochs)
    page = _ok(dashboard, f"/runs/{_quoted(first_run)}/training")
    assert _svgs_parse(page) == len(data["by_metric"]) and "validation" in page


def test_models_page_lists_the_pushed_version_and_says_when_no_server_answers(dashboard, runs,
                                                                              first_run):
    data = _ok(dashboard, "/api/models", "application/json")
    pushed = next(m for m in data["models"] if m["run_id"] == first_run)
    assert pushed["pushed"] and pushed["blessed"] and pushed["serving_validation"]["outcome"] == "passed"
    assert data["served_version"] == max((m["version"] for m in data["models"] if m["present"]), key=int)
    # No model server runs here (the run's probe server stopped with the run): the page says so, at once.
    assert data["live"]["answered"] is False and str(runs.rest_port) in data["live"]["url"]
    page = _ok(dashboard, "/models")
    assert "No model server answers" in page and pushed["version"] in page
    assert f'href="/lineage/{pushed["pushed_model_id"]}"' in page


def test_lineage_page_links_every_node_to_its_page(dashboard, first_run):
    data = _ok(dashboard, "/api/lineage/served", "application/json")
    kinds = {n["kind"] for n in data["nodes"]}
    assert kinds == {"artifact", "execution", "source"} and data["summary"]["runs"]
    page = _ok(dashboard, "/lineage/served")
    assert _svgs_parse(page) == 1
    trainer = next(n for n in data["nodes"] if n.get("node_id") == "Trainer")
    assert f'href="/go/e{trainer["id"]}"' in page
    status, _, _, headers = dashboard.get(f"/go/e{trainer['id']}")
    assert status == 302 and headers["Location"] == f"/runs/{trainer['runs'][0]}#node-{trainer['id']}"
    model = next(n for n in data["nodes"] if n["type"] == "Model")
    status, _, _, headers = dashboard.get(f"/go/a{model['id']}")
    assert status == 302 and headers["Location"] == f"/lineage/{model['id']}"
    downstream = _ok(dashboard, f"/api/lineage/{model['id']}?direction=downstream", "application/json")
    assert "PushedModel" in {n["type"] for n in downstream["nodes"]}


def test_compare_page_diffs_configuration_and_metrics(dashboard, first_run):
    data = _ok(dashboard, f"/api/compare?a={_quoted(first_run)}&b={_quoted(first_run)}", "application/json")
    comparison = data["comparison"]
    assert comparison["config"] == [] and comparison["same_settings"] > 10
    accuracy = next(d for d in comparison["metrics"] if d["key"] == "Overall.sparse_categorical_accuracy")
    assert accuracy["a"] == accuracy["b"] >= 0.9 and accuracy["change"] == 0
    page = _ok(dashboard, f"/compare?a={_quoted(first_run)}&b={_quoted(first_run)}")
    assert "the same configuration" in page
    form = _ok(dashboard, "/compare")
    assert f'<option value="{first_run}"' in form


def test_unknown_ids_are_404_pages_and_json(dashboard):
    for path in ("/runs/no-such-run", "/runs/no-such-run/evaluation", "/lineage/999999", "/go/e999999",
                 "/no/such/page"):
        status, kind, text, _ = dashboard.get(path)
        assert status == 404 and kind == "text/html", path
        assert "Not found" in text or "Not Found" in text
    status, kind, text, _ = dashboard.get("/api/runs/no-such-run")
    assert (status, kind) == (404, "application/json") and "No run 'no-such-run'" in json.loads(text)["message"]
    status, _, text, _ = dashboard.get("/api/lineage/served?direction=sideways")
    assert status == 400 and "direction must be" in json.loads(text)["message"]


def _store_state(config):
    """Everything the dashboard could change in the store: each record's id and last update time."""
    store = metadata_store.MetadataStore(config.metadata_connection_config())
    return [sorted((r.id, r.last_update_time_since_epoch) for r in records) for records in (
        store.get_artifacts(), store.get_executions(), store.get_contexts())] + [
        len(store.get_events_by_execution_ids([e.id for e in store.get_executions()]))]


def test_the_dashboard_never_writes_to_the_store(runs, first_run):
    sqlite = not runs.config.metadata_url
    before = _digest(runs.config.metadata_path) if sqlite else _store_state(runs.config)
    served = Dashboard(runs.config)
    try:
        run = _quoted(first_run)
        for path in ("/runs", f"/runs/{run}", f"/runs/{run}/data", f"/runs/{run}/evaluation",
                     f"/runs/{run}/training", "/models", "/lineage/served", f"/compare?a={run}&b={run}"):
            assert served.get(path)[0] == 200, path
            assert served.get("/api" + path)[0] == 200, path
    finally:
        served.close()
    assert (_digest(runs.config.metadata_path) if sqlite else _store_state(runs.config)) == before


def test_no_store_is_a_page_that_says_how_to_make_one(tmp_path):
    config = load_config({"tfx_root": str(tmp_path / "runs")}, environ={})
    served = Dashboard(config)
    try:
        status, _, text, _ = served.get("/runs")
        assert status == 503 and "tfxsp run" in text and config.metadata_path in text
        status, kind, text, _ = served.get("/api/models")
        assert (status, kind) == (503, "application/json") and "does not exist" in json.loads(text)["message"]
    finally:
        served.close()
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_a_corrupt_store_is_a_clear_error_page(tmp_path):
    config = load_config({"tfx_root": str(tmp_path / "runs")}, environ={})
    (tmp_path / "runs" / "pipelines" / config.pipeline_name).mkdir(parents=True)
    with open(config.metadata_path, "wb") as f:
        f.write(b"this is not a database at all" * 100)
    served = Dashboard(config)
    try:
        status, _, text, _ = served.get("/runs")
        assert status == 500 and "is not an ML Metadata store" in text and "Traceback" not in text
    finally:
        served.close()
