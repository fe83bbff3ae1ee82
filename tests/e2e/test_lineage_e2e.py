"""Issue 7's acceptance on the real pipeline: `tfxsp lineage served` after real `tfxsp run`s.

One pipeline root, three real runs (serving validation off: no model server is needed to trace):
1. the penguins CSV, copied to a folder of its own;
2. the same folder after dropping every sixth row: everything upstream runs again;
3. that changed data again with a different Trainer setting: upstream of the Trainer is cached.
After each run the served version is traced back to the CSV folder; the traces must differ where
the inputs changed and share what the cache reused.
"""
import html.parser
import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from pipeline import code_fingerprint
from pipeline.config import load_config
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import run_tfxsp

pytestmark = pytest.mark.timeout(1200)


def _output(result):
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n"
            f"{result.stderr[-5000:]}")


class Pipeline:
    def __init__(self, root):
        self.root = root
        self.data = root / "data"
        shutil.copytree(PENGUINS_DIR, self.data)
        self.args = ["--set", f"data_root={self.data}", "--set", "tfx_root=runs",
                     "--set", "serving_validation=false"]
        self.config = load_config({"data_root": str(self.data),
                                   "tfx_root": str(root / "runs")}, environ={})
        self.runs, self.traces = [], []

    def run(self, *extra):
        result = run_tfxsp(["run", *self.args, *extra], cwd=self.root)
        assert result.returncode == 0, _output(result)
        self.runs.append(result)
        self.traces.append(self.json("lineage", "served"))
        return result

    def tfxsp(self, *args):
        return run_tfxsp([*args, "--set", "tfx_root=runs"], cwd=self.root, timeout=120)

    def json(self, *args):
        result = self.tfxsp(*args, "--format", "json")
        assert result.returncode == 0, _output(result)
        return json.loads(result.stdout)

    def drop_rows(self, every=6):
        csv = self.data / "penguins.csv"
        header, *rows = csv.read_text().splitlines()
        kept = [row for i, row in enumerate(rows) if i % every != every - 1]
        csv.write_text("\n".join([header, *kept]) + "\n")
        return len(rows) - len(kept)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    pipe = Pipeline(tmp_path_factory.mktemp("lineage_e2e"))
    pipe.run()
    assert pipe.drop_rows() > 50
    # A smaller dataset's model may fall a little below the first one's accuracy; it is the
    # lineage, not the blessing, that is under test, so allow it to be pushed.
    pipe.run("--set", "max_accuracy_drop=0.5")
    pipe.run("--set", "max_accuracy_drop=0.5", "--set", "epochs=8")
    return pipe


class Trace:
    def __init__(self, data):
        self.data = data
        self.nodes = {n["key"]: n for n in data["nodes"]}
        self.target = self.nodes[data["target"]]

    def producer(self, key):
        [edge] = [e for e in self.data["edges"] if e["target"] == key]
        return self.nodes[edge["source"]]

    def input(self, key, input_key):
        [edge] = [e for e in self.data["edges"] if e["target"] == key and input_key in e["keys"]
                  and not e["baseline"]]
        return self.nodes[edge["source"]]

    def ids(self):
        return {n["id"] for n in self.nodes.values() if n["kind"] == "artifact"}

    def chain(self):
        """The served version traced back, step by step, to the CSV folder."""
        pushed = self.target
        pusher = self.producer(pushed["key"])
        model, blessing = self.input(pusher["key"], "model"), \
            self.input(pusher["key"], "model_blessing")
        evaluator = self.producer(blessing["key"])
        trainer = self.producer(model["key"])
        graph = self.input(trainer["key"], "transform_graph")
        transform = self.producer(graph["key"])
        examples = self.input(transform["key"], "examples")
        example_gen = self.producer(examples["key"])
        source = self.producer(example_gen["key"])
        return dict(pushed=pushed, pusher=pusher, model=model, blessing=blessing,
                    evaluator=evaluator, trainer=trainer, graph=graph, transform=transform,
                    examples=examples, example_gen=example_gen, source=source)


def test_served_version_traces_back_to_the_csv_folder(pipeline):
    first = Trace(pipeline.traces[0])
    version = first.target["key_properties"]["pushed_version"]
    assert "served: version " + version in first.data["description"]
    assert f"Pushed: version {version}" in pipeline.runs[0].stdout
    assert "tfxsp lineage served" in pipeline.runs[0].stdout  # the summary's hint
    chain = first.chain()
    assert [chain[k]["type"] for k in ("pushed", "blessing", "model", "graph", "examples")] == [
        "PushedModel", "ModelBlessing", "Model", "TransformGraph", "Examples"]
    assert chain["blessing"]["key_properties"]["blessed"] == 1
    assert [chain[k]["node_id"] for k in ("pusher", "evaluator", "trainer", "transform",
                                          "example_gen")] == [
        "Pusher", "Evaluator", "Trainer", "Transform", "CsvExampleGen"]
    assert chain["source"]["kind"] == "source" and chain["source"]["uri"] == str(pipeline.data)
    assert first.data["summary"]["data"][0]["path"] == str(pipeline.data)
    # The Trainer's parameters, as the configuration set them.
    params = chain["trainer"]["parameters"]
    # ... plus the hash of the code the Trainer runs, which puts that code into TFX's cache key.
    assert params["custom_config"] == {**pipeline.config.trainer_hparams(),
                                       "dataset": params["custom_config"]["dataset"],
                                       "code_fingerprint": code_fingerprint.fingerprint(code_fingerprint.TRAINER_CODE)}
    assert params["custom_config"]["dataset"]["label"]["name"] == "species"
    assert params["train_args"] == {"num_steps": pipeline.config.train_steps}
    assert params["module_path"].startswith("trainer@")
    # The people's view of the same trace.
    table = pipeline.tfxsp("lineage", "served")
    assert table.returncode == 0, _output(table)
    for text in ("PushedModel #", "ModelBlessing #", "Model #", "TransformGraph #", "Examples #",
                 f"Data: {pipeline.data}", "Trainer (exec", "custom_config=", '"epochs"'):
        assert text in table.stdout, text


def test_changed_data_gives_new_artifacts(pipeline):
    first, second = Trace(pipeline.traces[0]).chain(), Trace(pipeline.traces[1]).chain()
    assert int(second["pushed"]["key_properties"]["pushed_version"]) > \
        int(first["pushed"]["key_properties"]["pushed_version"])
    for key in ("pushed", "blessing", "model", "graph", "examples"):
        assert second[key]["id"] != first[key]["id"], key
    for key in ("trainer", "transform", "example_gen"):
        assert second[key]["state"] == "complete" and second[key]["id"] != first[key]["id"]
    # Same folder, different files: the fingerprints tell the two datasets apart.
    assert second["source"]["uri"] == first["source"]["uri"]
    assert second["source"]["properties"]["input_fingerprint"] != \
        first["source"]["properties"]["input_fingerprint"]
    # Same settings (and the same code, named by the hash in module_path, unless the module
    # files were edited between the runs). The dataset contract is measured from the data, so its
    # figures (ranges, the majority-class baseline) follow the new rows while its decisions stay.
    def parameters(execution):
        params = {k: v for k, v in execution["parameters"].items() if k != "module_path"}
        return {**params, "custom_config": {k: v for k, v in params["custom_config"].items()
                                            if k != "dataset"}}

    def decisions(execution):
        contract = execution["parameters"]["custom_config"]["dataset"]
        return contract["task"], contract["label"]["name"], [
            (c["name"], c["role"]) for c in contract["columns"]]
    assert parameters(second["trainer"]) == parameters(first["trainer"])
    assert decisions(second["trainer"]) == decisions(first["trainer"])
    assert second["trainer"]["parameters"]["custom_config"]["dataset"]["baseline"] != \
        first["trainer"]["parameters"]["custom_config"]["dataset"]["baseline"]
    # The only artifact the two traces share is the first model, as the second Evaluator's
    # baseline (a boundary: compared with, not derived from).
    shared = Trace(pipeline.traces[0]).ids() & Trace(pipeline.traces[1]).ids()
    assert shared == {first["model"]["id"]}
    baseline = Trace(pipeline.traces[1]).nodes[f"a{first['model']['id']}"]
    assert baseline["boundary"] is True


def _code_changed(pipeline):
    """Whether the module files changed between the second and third run (the wheel that TFX
    builds from pipeline/modules/ is named by its hash): then Transform runs again, rightly."""
    second, third = (Trace(t).data["summary"]["code"] for t in pipeline.traces[1:3])
    return second["Transform"] != third["Transform"]


def test_cached_upstream_is_shared_and_the_new_model_is_not(pipeline):
    second, third = Trace(pipeline.traces[1]), Trace(pipeline.traces[2])
    a, b = second.chain(), third.chain()
    newest_run = pipeline.json("runs", "list")["runs"][0]["run_id"]
    # Upstream of the Trainer the third run reused the second run's outputs from the cache.
    reused = ("examples", "example_gen") if _code_changed(pipeline) else \
        ("examples", "example_gen", "graph", "transform")
    for key in reused:
        assert b[key]["id"] == a[key]["id"], key
        if b[key]["kind"] == "execution":
            assert b[key]["cached_in"] == [newest_run], key
    if _code_changed(pipeline):
        assert b["graph"]["id"] != a["graph"]["id"]
    assert b["source"]["properties"] == a["source"]["properties"]
    # The Trainer ran again, with the changed setting, and made a new model.
    assert b["model"]["id"] != a["model"]["id"] and b["trainer"]["id"] != a["trainer"]["id"]
    assert b["trainer"]["parameters"]["custom_config"]["epochs"] == 8
    assert a["trainer"]["parameters"]["custom_config"]["epochs"] == 16
    shared = second.ids() & third.ids()
    assert {b[key]["id"] for key in reused if b[key]["kind"] == "artifact"} <= shared
    assert b["model"]["id"] not in shared and b["pushed"]["id"] not in shared


def test_runs_and_models_on_the_real_store(pipeline):
    runs = pipeline.json("runs", "list")["runs"]
    assert len(runs) == 3
    states = [{n["node_id"]: n["state"] for n in r["nodes"]} for r in runs]
    assert set(states[2].values()) == {"complete"} and set(states[1].values()) == {"complete"}
    cached = {"CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform"}
    if _code_changed(pipeline):
        cached.remove("Transform")
    assert {k for k, v in states[0].items() if v == "cached"} == cached
    assert states[0]["Trainer"] == "complete"
    assert all(n["seconds"] >= 0 for r in runs for n in r["nodes"])
    assert runs[2]["nodes"][0]["seconds"] > 0.5  # CsvExampleGen really ran
    table = pipeline.tfxsp("runs", "list")
    assert table.returncode == 0 and f"{len(cached)} cached" in table.stdout

    models = pipeline.json("models")
    assert [m["served"] for m in models["models"]] == [True, False, False]
    first = models["models"][-1]
    accuracy = first["metrics"]["Overall"]["sparse_categorical_accuracy"]
    # The metrics read without TensorFlow are the ones `tfxsp run` printed (read with TFMA).
    assert f"Overall {accuracy:.4g}" in pipeline.runs[0].stdout
    assert first["blessed"] is True and first["run_id"] == runs[2]["run_id"]

    shown = pipeline.json("runs", "show", runs[0]["run_id"])
    trainer = next(n for n in shown["nodes"] if n["node_id"] == "Trainer")
    assert trainer["parameters"]["custom_config"]["epochs"] == 8


def test_lineage_picture_of_the_real_store(pipeline, tmp_path):
    svg, page = tmp_path / "served.svg", tmp_path / "served.html"
    for fmt, path in (("svg", svg), ("html", page)):
        result = pipeline.tfxsp("lineage", "served", "--format", fmt, "--output", str(path))
        assert result.returncode == 0, _output(result)
    root = ET.parse(svg).getroot()
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "PushedModel #" in texts and "Trainer" in texts and str(pipeline.data)[-20:] in texts
    parser = html.parser.HTMLParser()
    parser.feed(page.read_text())
    source = page.read_text()
    ET.fromstring(source[source.index("<svg"):source.index("</svg>") + 6])
